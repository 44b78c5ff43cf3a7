"""``kiln.autograd.grad(..., is_grads_batched=True)`` as torch's: the first dim of each ``grad_outputs`` entry is a
batch of cotangents, the result one gradient per row (a whole Jacobian from the identity's rows, as Jacobian code and
torch's own ``autograd.functional.jacobian(vectorize=True)`` write it); kiln raised "not supported". Eagerly, in a
compiled function, with ``create_graph=True`` differentiated again, and with two outputs; float64 against torch 2.13."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import libraries

X = np.random.default_rng(0).standard_normal((3, 2))
W = np.random.default_rng(1).standard_normal((2, 2))


def jacobian_rows(lib, x):
    """The Jacobian of ``sin(x @ W)`` (3 x 2 outputs) with respect to ``x``, row by row of the identity."""
    y = lib.sin(x @ lib.tensor(W))
    return lib.autograd.grad(y, x, lib.eye(6, dtype=x.dtype).view(6, 3, 2), is_grads_batched=True)[0]


def test_batched_cotangents_give_the_jacobian_as_torch(float64_default):
    ours, theirs = [jacobian_rows(lib, lib.tensor(X, requires_grad=True)).detach().numpy()
                    for lib in (kiln, libraries("torch")[0])]
    assert ours.shape == theirs.shape == (6, 3, 2)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    compiled = kiln.compile(lambda x: jacobian_rows(kiln, x.requires_grad_()), fullgraph=True)(kiln.tensor(X))
    np.testing.assert_allclose(compiled.numpy(), theirs, rtol=1e-12, atol=1e-14)


def test_batched_gradients_with_create_graph_differentiate_again_as_torch(float64_default):
    """A Jacobian penalty (the Frobenius norm of the Jacobian, as a contractive or Jacobian-regularized loss writes
    it) backpropagated to the weights."""
    grads = []
    for lib in (kiln, libraries("torch")[0]):
        x, w = lib.tensor(X, requires_grad=True), lib.tensor(W, requires_grad=True)
        y = lib.tanh(x @ w)
        jac = lib.autograd.grad(y, x, lib.eye(6, dtype=x.dtype).view(6, 3, 2), create_graph=True,
                                is_grads_batched=True)[0]
        (jac ** 2).sum().backward()
        grads.append((w.grad.numpy(), x.grad.numpy()))
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_two_outputs_with_batched_cotangents_and_an_unused_input_as_torch(float64_default):
    results = []
    for lib in (kiln, libraries("torch")[0]):
        x, unused = lib.tensor(X, requires_grad=True), lib.tensor(W, requires_grad=True)
        first, second = (x ** 2).sum(-1), x[:, 0] * 3
        seeds = (lib.ones(4, 3, dtype=x.dtype), lib.arange(12, dtype=x.dtype).view(4, 3))
        gx, gu = lib.autograd.grad((first, second), (x, unused), seeds, is_grads_batched=True, allow_unused=True)
        assert gu is None
        results.append(gx.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12)


def test_batched_cotangents_without_a_batch_dim_are_refused_and_say_so():
    x = kiln.tensor(X, requires_grad=True)
    with pytest.raises(TraceError, match="leading batch dim") as raised:
        kiln.autograd.grad(kiln.sin(x).sum(), x, kiln.tensor(1.0), is_grads_batched=True)
    assert "test_autograd_grads_batched_vs_torch.py" in str(raised.value)
