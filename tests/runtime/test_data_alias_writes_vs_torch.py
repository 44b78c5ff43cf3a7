"""A write through ``x.data`` of a tensor that is not a parameter, as PyTorch 2.13 does it: ``x.data`` shares ``x``'s
storage but has a version counter of its own, so the write is never refused at ``backward()`` and the backward of an op
that saved ``x`` (or a view kiln made of it, as ``conv1d``'s ``x.unsqueeze(2)``) reads the new values
(``frontend/version_counter.py``; traced, ``frontend/traced_data_writes.py``). NVIDIA's Tacotron 2 masks its outputs so
(``outputs[0].data.masked_fill_(mask, 0.0)`` after the postnet read them). Each case runs once on each library, values
and gradients to 1e-12."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.frontend.version_counter import version_of
from oracles import require_torch

RNG = np.random.default_rng(5)
X, W = RNG.standard_normal((3, 4, 6)), RNG.standard_normal((4, 4, 3))


def saved_by_a_product(lib, x, w):
    m = x * 2
    y = (m * w[0, 0, 0]).sum()
    m.data.masked_fill_(m > 0, 0.0)
    return y + ((m - 1) ** 2).sum()


def saved_by_conv1d(lib, x, w):
    m = x * 2
    y = lib.nn.functional.conv1d(m, w, padding=1)
    m.data.masked_fill_(m > 0, 0.0)
    return (y ** 2).sum() + ((m - 1) ** 2).sum()


def indexed_through_data(lib, x, w):
    m = x * 2
    y = lib.nn.functional.conv1d(m, w, padding=1)
    m.data[:, :, 4:] = 0.0
    return (y ** 2).sum()


def postnet_then_masked_outputs(lib, x, w):
    """Tacotron 2's parse_output: the postnet read the decoder's outputs, then both are masked through ``.data``."""
    mel = x.transpose(1, 2).contiguous().transpose(1, 2)
    post = mel + lib.tanh(lib.nn.functional.conv1d(mel, w, padding=1))
    mask = (lib.arange(0, 6) >= lib.tensor([6, 4, 3]).unsqueeze(1)).unsqueeze(1).expand(3, 4, 6)
    mel.data.masked_fill_(mask, 0.0)
    post.data.masked_fill_(mask, 0.0)
    return ((mel - 0.5) ** 2).mean() + ((post - 0.5) ** 2).mean()


CASES = [saved_by_a_product, saved_by_conv1d, indexed_through_data, postnet_then_masked_outputs]


def _gradients(lib, case):
    x, w = lib.tensor(X, requires_grad=True), lib.tensor(W, requires_grad=True)
    loss = case(lib, x, w)
    loss.backward()
    return [loss.item(), np.array(x.grad.numpy()), np.array(w.grad.numpy())]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.__name__)
def test_backward_reads_the_values_written_through_data_as_torch(case):
    torch = require_torch()
    for ours, theirs in zip(_gradients(kiln, case), _gradients(torch, case)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_a_write_through_detach_is_still_refused_as_torch():
    """``x.detach()`` shares ``x``'s counter (``.data`` does not): the conv's saved input was overwritten."""
    torch = require_torch()
    for lib in (kiln, torch):
        x, w = lib.tensor(X, requires_grad=True), lib.tensor(W, requires_grad=True)
        m = x * 2
        y = lib.nn.functional.conv1d(m, w, padding=1)
        m.detach().masked_fill_(m > 0, 0.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            (y ** 2).sum().backward()


def test_a_write_to_the_tensor_does_not_count_on_its_data():
    """PyTorch's ``x.data`` keeps its own counter: a write to ``x`` leaves ``x.data._version`` at 0 and its values
    follow."""
    torch = require_torch()
    for lib in (kiln, torch):
        m = lib.tensor(X, requires_grad=True) * 2
        alias = m.data
        m.mul_(0.5)
        version = version_of if lib is kiln else (lambda tensor: tensor._version)
        assert (version(alias), version(m)) == (0, 1)
        np.testing.assert_allclose(np.array(alias.numpy()), X, rtol=1e-15)


def test_kiln_autograd_grad_in_a_compiled_function_reads_the_values_written_through_data_as_torch():
    """Traced, the write rebinds the tensor and the conv keeps its old input for the forward; the backward's ops read
    the new values (``frontend/traced_data_writes.py``): the conv's weight gradient sees the masked outputs."""
    torch = require_torch()
    ours = kiln.compile(lambda x, w: _compiled_gradients(kiln, x, w), fullgraph=True)(kiln.tensor(X), kiln.tensor(W))
    theirs = _compiled_gradients(torch, torch.tensor(X), torch.tensor(W))
    for got, expected in zip(ours, theirs):
        np.testing.assert_allclose(np.array(got.numpy()), expected.numpy(), rtol=1e-12, atol=1e-12)


def _compiled_gradients(lib, x, w):
    x, w = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    loss = postnet_then_masked_outputs(lib, x, w)
    x_grad, w_grad = lib.autograd.grad(loss, (x, w))
    return loss.detach(), x_grad, w_grad


def test_a_compiled_training_step_reads_the_values_written_through_data_as_torch(float64_default):
    """Tacotron 2's ``parse_output`` (``mask_padding=True``) in a ``kiln.compile``d step (zero_grad, forward, the
    ``.data`` masking, backward, SGD): the weights after two steps as torch's eager loop."""
    results = []
    for lib in (kiln, float64_default):
        x, w = lib.tensor(X), lib.nn.Parameter(lib.tensor(W))
        optimizer = lib.optim.SGD([w], lr=0.1)

        def step(x):
            optimizer.zero_grad()
            loss = postnet_then_masked_outputs(lib, x, w)
            loss.backward()
            optimizer.step()
            return loss.detach()

        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        results.append(([run(x).item() for _ in range(2)], np.array(w.detach().numpy())))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-12)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-14)
