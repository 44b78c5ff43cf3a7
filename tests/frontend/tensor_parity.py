"""The harness of the Tensor-method tests: a kiln function and its PyTorch twin in float64, their outputs and the
gradients of a weighted sum of the first output (``kiln.grad`` against ``backward``), to rtol 1e-10."""

from __future__ import annotations

import numpy as np

import kiln
from kiln.backends.numpy import NumpyBackend
from oracles import require


def _outputs(value):
    return tuple(value) if isinstance(value, tuple) else (value,)


def _torch_value_and_grads(torch, fn, *arrays):
    """PyTorch's outputs (every one of a tuple: values and indices) and the gradient of ``sum(first output * w)``."""
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    outputs = _outputs(fn(*tensors))
    weights = np.random.default_rng(5).standard_normal(tuple(outputs[0].shape))
    if outputs[0].requires_grad:
        (outputs[0] * torch.tensor(weights)).sum().backward()
    grads = [t.grad.numpy() if t.grad is not None else np.zeros_like(a) for t, a in zip(tensors, arrays)]
    return [o.detach().numpy() for o in outputs], weights, grads


def _check(fn, torch_fn, *arrays, grad=True, grad_rtol=1e-10):
    torch = require("torch")
    expected, weights, grads = _torch_value_and_grads(torch, torch_fn, *arrays)
    graph = kiln.trace(fn, *[kiln.TensorSpec(a.shape, "float64") for a in arrays])
    values = NumpyBackend().compile(graph)(*arrays)
    assert len(values) == len(expected)
    for got, want in zip(values, expected):
        assert got.shape == want.shape
        assert got.dtype == want.dtype, (got.dtype, want.dtype)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    if grad:
        ours = kiln.grad(lambda *xs: (_outputs(fn(*xs))[0] * weights).sum(), argnums=tuple(range(len(arrays))))(*arrays)
        for got, want in zip(_outputs(ours), grads):
            np.testing.assert_allclose(got, want, rtol=grad_rtol, atol=1e-12)


def assert_fills_a_symbolic_batch(fn, width: int, added: float) -> None:
    """``fn`` traced on ``(N, width)`` float32 gives ``x + added`` at two batch sizes from one graph."""
    graph = kiln.trace(fn, kiln.TensorSpec(("N", width)))
    run = NumpyBackend().compile(graph)
    for batch in (1, 4):
        x = np.random.default_rng(batch).standard_normal((batch, width)).astype(np.float32)
        np.testing.assert_array_equal(run(x)[0], x + added)
