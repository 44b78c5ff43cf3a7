"""A trained parameter read, then written in place outside autograd, then read again inside one ``kiln.compile``'d
training step: ``backward()`` gives ``.grad`` the gradients of both reads, as PyTorch's (the parameter is one tensor
whose values changed). kiln differentiated by the written value alone and dropped the reads before the write, silently
(TransE with ``nn.Embedding(max_norm=1)``: four lookups a step, each renormalizing the table first;
``frontend/parameter_versions.py``). Checked against torch 2.13's eager step: losses, ``.grad`` and the parameters
after SGD, for writes under ``no_grad``, through ``.data`` and through an indexed ``.data`` view; and a second
``backward()`` after ``optimizer.step()`` of a loss read before the update (the update is such a write too)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

START = np.array([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]])


def write(lib, w, how):
    if how == "no_grad":
        with lib.no_grad():
            w.mul_(0.5)
    elif how == "data":
        w.data.mul_(0.5)
    else:  # TransE's entities_emb.weight.data[:-1, :].div_(norms)
        w.data[:1, :].div_(w.data[:1, :].norm(p=2, dim=1, keepdim=True))


def run(lib, how, compiled, steps=2, backwards=1):
    w = lib.nn.Parameter(lib.tensor(START))
    optimizer = lib.optim.SGD([w], lr=0.1)

    def step(x):
        optimizer.zero_grad()
        before = (w * x).pow(2).sum()
        write(lib, w, how)
        loss = before + (w * x).sin().sum()
        loss.backward(retain_graph=backwards == 2)
        grad = w.grad.clone()
        optimizer.step()
        if backwards == 2:  # after the update: a read of the updated value and the loss from before it
            (loss + (w * x).sum()).backward()
        return loss, grad

    run_step = kiln.compile(step, fullgraph=True) if compiled else step
    x = lib.tensor(np.array([[0.5, 1.0, -1.5], [2.0, 0.0, 1.0]]))
    records = [[np.array(t.detach().numpy()) for t in run_step(x)] for _ in range(steps)]
    return records, np.array(w.detach().numpy()), np.array(w.grad.detach().numpy())


@pytest.mark.parametrize("backwards", [1, 2], ids=["one backward", "a second backward after the update"])
@pytest.mark.parametrize("how", ["no_grad", "data", "indexed data"])
def test_reads_before_a_no_grad_write_give_their_gradient_as_torch(float64_default, how, backwards):
    torch = require_torch()
    theirs = run(torch, how, compiled=False, backwards=backwards)
    for ours in (run(kiln, how, compiled=False, backwards=backwards), run(kiln, how, compiled=True, backwards=backwards)):
        for (loss, grad), (their_loss, their_grad) in zip(ours[0], theirs[0]):
            np.testing.assert_allclose(loss, their_loss, rtol=1e-12)
            np.testing.assert_allclose(grad, their_grad, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-12, atol=1e-14)
