"""``nn.utils.get_total_norm`` and ``nn.utils.clip_grads_with_norm_`` (PyTorch 2.6+: ``clip_grad_norm_`` in two
halves, so a step can log, all-reduce or skip on the norm before clipping): eagerly, and in a ``kiln.compile``d
training step on the traced ``.grad`` (``runtime/step_capture.py``), against the same code in torch 2.13, float64."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch, torch_twins


def _grads(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(3, 4)), rng.normal(size=(4,)), rng.normal(size=(2, 2, 2))]


def _parameters(lib, grads):
    parameters = [lib.nn.Parameter(lib.zeros(g.shape, dtype=lib.float64)) for g in grads]
    for parameter, grad in zip(parameters, grads):
        parameter.grad = lib.tensor(grad.copy()) if lib.__name__ == "torch" else grad.copy()
    return parameters


@pytest.mark.parametrize("norm_type", [2.0, 1, 3.5, "inf"])
def test_the_total_norm_is_torchs_and_clipping_with_it_scales_as_torchs(norm_type):
    torch = require_torch()
    ours, theirs = _parameters(kiln, _grads()), _parameters(torch, _grads())
    norm = kiln.nn.utils.get_total_norm([p.grad for p in ours], norm_type)
    torch_norm = torch.nn.utils.get_total_norm([p.grad for p in theirs], norm_type)
    assert norm.dtype == kiln.float64 and norm.shape == ()
    np.testing.assert_allclose(norm.numpy(), torch_norm.numpy(), rtol=1e-13)
    kiln.nn.utils.clip_grads_with_norm_(ours, 0.7, norm)
    torch.nn.utils.clip_grads_with_norm_(theirs, 0.7, torch_norm)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(np.asarray(p.grad), q.grad.numpy(), rtol=1e-13)


def test_one_tensor_an_empty_list_and_a_nonfinite_norm_as_torchs():
    torch = require_torch()
    grad = _grads()[0]
    np.testing.assert_allclose(kiln.nn.utils.get_total_norm(kiln.tensor(grad)).numpy(),
                               torch.nn.utils.get_total_norm(torch.tensor(grad)).numpy(), rtol=1e-13)
    empty, torch_empty = kiln.nn.utils.get_total_norm([]), torch.nn.utils.get_total_norm([])
    assert empty.dtype == kiln.float32 and float(empty) == torch_empty.item() == 0.0
    bad = [grad, np.array([np.inf])]
    with pytest.raises(RuntimeError, match="non-finite"):
        torch.nn.utils.get_total_norm([torch.tensor(g) for g in bad], error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match="non-finite.*error_if_nonfinite=False"):
        kiln.nn.utils.get_total_norm(bad, error_if_nonfinite=True)
    assert float(kiln.nn.utils.get_total_norm(bad)) == np.inf


def test_a_large_max_norm_leaves_the_gradients_and_a_float_norm_is_refused_as_by_torch():
    torch = require_torch()
    ours, theirs = _parameters(kiln, _grads(1)), _parameters(torch, _grads(1))
    kiln.nn.utils.clip_grads_with_norm_(ours, 1e6, kiln.nn.utils.get_total_norm([p.grad for p in ours]))
    torch.nn.utils.clip_grads_with_norm_(theirs, 1e6, torch.nn.utils.get_total_norm([p.grad for p in theirs]))
    for p, q in zip(ours, theirs):
        np.testing.assert_array_equal(np.asarray(p.grad), q.grad.numpy())
    with pytest.raises(TypeError):
        torch.nn.utils.clip_grads_with_norm_(theirs, 1.0, 2.5)
    with pytest.raises(TypeError, match="total_norm must be a tensor.*get_total_norm"):
        kiln.nn.utils.clip_grads_with_norm_(ours, 1.0, 2.5)


def test_half_gradients_clip_as_torchs_op_by_op():
    torch = require_torch()
    grads = [g.astype(np.float16) * 4 for g in _grads(2)]
    ours = [kiln.nn.Parameter(np.zeros(g.shape, np.float16)) for g in grads]
    theirs = [torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.float16)) for g in grads]
    for p, q, g in zip(ours, theirs, grads):
        p.grad, q.grad = g.copy(), torch.tensor(g)
    norm, torch_norm = kiln.nn.utils.get_total_norm([p.grad for p in ours]), torch.nn.utils.get_total_norm([q.grad for q in theirs])
    assert norm.dtype == kiln.float16 and float(norm) == torch_norm.item()
    kiln.nn.utils.clip_grads_with_norm_(ours, 0.3, norm)
    torch.nn.utils.clip_grads_with_norm_(theirs, 0.3, torch_norm)
    for p, q in zip(ours, theirs):
        np.testing.assert_array_equal(np.asarray(p.grad), q.grad.numpy())


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(6, 16), lib.nn.Tanh(), lib.nn.Linear(16, 3)).double()


def _step(lib, model, optimizer):
    """A step that clips in two halves and returns the norm (as a logger would), written as for PyTorch."""

    def train_step(x, y):
        optimizer.zero_grad()
        loss = lib.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        norm = lib.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None], 1.5)
        lib.nn.utils.clip_grads_with_norm_(model.parameters(), 0.3, norm)
        optimizer.step()
        return loss, norm

    return train_step


def _run(step, lib, batches):
    results = [step(lib.tensor(x), lib.tensor(y)) for x, y in batches]
    return [[float(value.detach()) for value in result] for result in results]


def test_a_compiled_step_that_clips_in_two_halves_trains_as_torch_eager():
    torch, model, twin = torch_twins(_net, seed=3)
    optimizer, twin_optimizer = kiln.optim.Adam(model.parameters(), lr=0.05), torch.optim.Adam(twin.parameters(), lr=0.05)
    compiled = kiln.compile(_step(kiln, model, optimizer))
    rng = np.random.default_rng(5)
    batches = [(rng.standard_normal((8, 6)), rng.integers(0, 3, 8)) for _ in range(4)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # traced, not run eagerly
        losses_and_norms = _run(compiled, kiln, batches)
    torch_losses_and_norms = _run(_step(torch, twin, twin_optimizer), torch, batches)
    np.testing.assert_allclose(losses_and_norms, torch_losses_and_norms, rtol=1e-12)
    assert max(norm for _, norm in torch_losses_and_norms) > 0.3  # the clipping acted
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.asarray(p.grad), q.grad.numpy(), rtol=1e-12, atol=1e-12)
    assert len(compiled.variants) == 1
    graph = next(iter(compiled.variants.values())).graph
    assert "tensor.matmul" in {op.name for op in graph.ops}  # forward, backward, clipping and update in the one graph
