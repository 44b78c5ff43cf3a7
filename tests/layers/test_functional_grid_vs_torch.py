"""``F.conv2d`` and the pools over a grid of stride, padding, dilation and groups; indexing and movement functions; all vs PyTorch, gradients by ``kiln.grad``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from oracles import require

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 4, 7, 6))


def _torch_value_and_grads(torch, fn, *arrays):
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    value = fn(*tensors)
    weights = torch.tensor(np.random.default_rng(5).standard_normal(tuple(value.shape)))
    (value * weights).sum().backward()
    return value.detach().numpy(), weights.numpy(), [t.grad.numpy() for t in tensors]


def _assert_kiln_matches(fn, arrays, expected, weights, grads):
    graph = kiln.trace(fn, *[kiln.TensorSpec(a.shape, "float64") for a in arrays])
    (value,) = NumpyBackend().compile(graph)(*arrays)
    np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-12)
    ours = kiln.grad(lambda *xs: (fn(*xs) * weights).sum(), argnums=tuple(range(len(arrays))))(*arrays)
    for got, want in zip(ours if isinstance(ours, tuple) else (ours,), grads):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups"), list(itertools.product((1, 2), (0, 1), (1, 2), (1, 2))))
def test_conv2d_grid(stride, padding, dilation, groups):
    torch = require("torch")
    weight = RNG.standard_normal((6, 4 // groups, 3, 2))
    options = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    expected, weights, grads = _torch_value_and_grads(torch, lambda x, w: torch.nn.functional.conv2d(x, w, **options), X, weight)
    _assert_kiln_matches(lambda x, w: F.conv2d(x, w, **options), [X, weight], expected, weights, grads)


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1)), (3, 1, 0)])
@pytest.mark.parametrize("kind", ["max_pool2d", "avg_pool2d"])
def test_pool_grid(kind, kernel, stride, padding):
    torch = require("torch")
    x = RNG.permutation(X.size).reshape(X.shape) * 0.1  # distinct: one max per window
    expected, weights, grads = _torch_value_and_grads(torch, lambda t: getattr(torch.nn.functional, kind)(t, kernel, stride, padding), x)
    _assert_kiln_matches(lambda t: getattr(F, kind)(t, kernel, stride, padding), [x], expected, weights, grads)


@pytest.mark.parametrize(("kernel", "stride", "padding"), [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), (1, 1)), (3, 1, 0)])
def test_max_pool_ties_go_to_the_first_largest_as_in_torch(kernel, stride, padding):
    """Values from {-1, 0, 1}: most windows hold their maximum more than once, and the first (row-major) takes the
    gradient, in overlapping and tiling windows alike."""
    torch = require("torch")
    x = RNG.integers(-1, 2, X.shape).astype(np.float64)
    expected, weights, grads = _torch_value_and_grads(torch, lambda t: torch.nn.functional.max_pool2d(t, kernel, stride, padding), x)
    _assert_kiln_matches(lambda t: F.max_pool2d(t, kernel, stride, padding), [x], expected, weights, grads)



@pytest.mark.parametrize(("kernel", "stride", "padding"), [(2, None, 0), (3, 1, 1)])
def test_max_pool_gradient_passes_inf_and_nan_only_to_the_winners_as_in_torch(kernel, stride, padding):
    """A window's cotangent goes to its winner alone: an inf or NaN one leaves the other elements exactly 0, not
    0 * inf = NaN (the kernel keeps the cotangent's bits by a mask instead of multiplying)."""
    torch = require("torch")
    x = RNG.permutation(X.size).reshape(X.shape) * 0.1
    pooled = torch.nn.functional.max_pool2d(torch.tensor(x), kernel, stride, padding)
    weights = RNG.standard_normal(tuple(pooled.shape))
    weights.flat[::3], weights.flat[1::7] = np.inf, np.nan
    t = torch.tensor(x, requires_grad=True)
    (torch.nn.functional.max_pool2d(t, kernel, stride, padding) * torch.tensor(weights)).sum().backward()
    ours = kiln.grad(lambda v: (F.max_pool2d(v, kernel, stride, padding) * weights).sum())(x)
    np.testing.assert_allclose(ours, t.grad.numpy(), rtol=1e-12, atol=0)  # overlapping windows: sums, in another order
    assert np.isinf(ours).any() and np.isnan(ours).any() and (ours == 0).sum() == (t.grad.numpy() == 0).sum()


def test_max_pool_select_reads_the_winners_bit_for_bit():
    """The second-order kernel (``c`` at each window's winner) returns -0.0, inf and NaN untouched."""
    from kiln.backends.numpy.lowering_conv import max_pool2d_select

    x = RNG.permutation(X.size).reshape(X.shape).astype(np.float32)
    c = RNG.standard_normal(X.shape).astype(np.float32)
    c.flat[::5], c.flat[1::5], c.flat[2::5] = -0.0, np.inf, np.nan
    got = max_pool2d_select(x, c, kernel_size=(2, 2), stride=(2, 2), padding=(0, 0))
    windows = x[:, :, :6, :6].reshape(2, 4, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 4, 3, 3, 4)
    winner = windows.argmax(-1)
    values = c[:, :, :6, :6].reshape(2, 4, 3, 2, 3, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 4, 3, 3, 4)
    want = np.take_along_axis(values, winner[..., None], -1)[..., 0]
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))

MOVEMENT = {
    "getitem": (lambda x: x[:, 1:4:2, ..., None, -1], lambda x: x[:, 1:4:2, ..., None, -1]),
    "cat_split": (lambda x: F.cat(list(x.split([1, 3], dim=1))[::-1], dim=1), lambda x: __import__("torch").cat(list(x.split([1, 3], dim=1))[::-1], dim=1)),
    "stack": (lambda x: F.stack([x[:, 0], x[:, 2] * 2, x[:, 1]], dim=-2), lambda x: __import__("torch").stack([x[:, 0], x[:, 2] * 2, x[:, 1]], dim=-2)),
    "chunk": (lambda x: x.chunk(3, dim=2)[1], lambda x: x.chunk(3, dim=2)[1]),
    "pad": (lambda x: F.pad(x, (1, 2, 0, 3), value=0.5), lambda x: __import__("torch").nn.functional.pad(x, (1, 2, 0, 3), value=0.5)),
    "squeeze": (lambda x: x[:, :1].squeeze(1).unsqueeze(-1), lambda x: x[:, :1].squeeze(1).unsqueeze(-1)),
    "triu": (lambda x: F.triu(x, 1) + F.tril(x, -2), lambda x: __import__("torch").triu(x, 1) + __import__("torch").tril(x, -2)),
    "abs_clamp_erf": (lambda x: F.erf(x.abs().clamp(0.2, 1.5)) * x.amin(-1, keepdim=True), lambda x: __import__("torch").erf(x.abs().clamp(0.2, 1.5)) * x.amin(-1, keepdim=True)),
    "flatten": (lambda x: x.flatten(1), lambda x: x.flatten(1)),
}


@pytest.mark.parametrize("name", sorted(MOVEMENT))
def test_movement_and_elementwise_functions(name):
    torch = require("torch")
    ours, theirs = MOVEMENT[name]
    expected, weights, grads = _torch_value_and_grads(torch, theirs, X)
    _assert_kiln_matches(ours, [X], expected, weights, grads)


def test_argmax_and_embedding():
    torch = require("torch")
    ids = np.array([[3, 0], [1, 3]])
    table = RNG.standard_normal((5, 3))
    np.testing.assert_array_equal(kiln.compile(lambda x: x.argmax(1))(X[0]), torch.tensor(X[0]).argmax(1).numpy())
    expected, weights, grads = _torch_value_and_grads(torch, lambda w: torch.nn.functional.embedding(torch.tensor(ids), w), table)
    got = kiln.grad(lambda w: (F.embedding(kiln_constant(ids), w) * weights).sum())(table)
    np.testing.assert_allclose(got, grads[0], rtol=1e-12)


def kiln_constant(array):
    from kiln.frontend.tensor import apply

    return apply("tensor.constant", value=np.asarray(array))
