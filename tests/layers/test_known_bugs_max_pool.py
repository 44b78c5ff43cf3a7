"""Max pooling picks the element PyTorch's kernels pick, for values, ``return_indices`` and the gradient: the first
largest in window order, but the last NaN of a window holding NaN, and for a window of -inf only (padding around
it) its first element inside the input, never the padding. Checked against torch in float64 over max_pool1d/2d/3d
(padding, dilation, ceil_mode) and adaptive_max_pool1d/2d/3d, with inputs full of ties, NaN and -inf."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from oracles import require

_WINDOWS = [  # kernel, stride, padding, dilation, ceil_mode
    (2, 2, 0, 1, False), (3, 1, 1, 1, False), (3, 2, 1, 1, True), (2, 1, 1, 2, False), (3, 3, 1, 1, True)]


def _input(dims: int, kind: str) -> np.ndarray:
    """``(2, 2) + (6,) * dims`` of 0, 1 and 2 (ties everywhere), with NaN and -inf as ``kind`` says."""
    rng = np.random.default_rng(dims)
    shape = (2, 2) + (6,) * dims
    x = rng.integers(0, 3, size=shape).astype(np.float64)
    if kind.startswith("ninf"):
        x[:] = -np.inf
    if kind.endswith("nan"):
        x[rng.random(shape) < (0.2 if kind == "ninf_nan" else 0.3)] = np.nan
    return x


def _assert_picks_as_torch(torch, ours, theirs, x: np.ndarray) -> None:
    expected_input = torch.tensor(x, requires_grad=True)
    expected = theirs(expected_input)
    expected_values = expected[0] if isinstance(expected, tuple) else expected
    cotangent = np.random.default_rng(7).standard_normal(tuple(expected_values.shape))
    (expected_values * torch.tensor(cotangent)).sum().backward()

    def loss(t):
        got = ours(t)
        return ((got[0] if isinstance(got, tuple) else got) * kiln.tensor(cotangent)).sum()

    np.testing.assert_allclose(kiln.grad(loss)(x), expected_input.grad.numpy(), rtol=1e-12, atol=0)
    got = ours(kiln.tensor(x))
    if isinstance(expected, tuple):
        np.testing.assert_array_equal(got[1].numpy(), expected[1].numpy())
        got, expected_values = got[0], expected[0]
    np.testing.assert_array_equal(got.numpy(), expected_values.detach().numpy())  # NaN where torch has NaN


@pytest.mark.parametrize("return_indices", [False, True])
@pytest.mark.parametrize("kind", ["ties", "nan", "ninf", "ninf_nan"])
@pytest.mark.parametrize("window", _WINDOWS, ids=lambda w: "k{}s{}p{}d{}{}".format(*w[:4], "c" if w[4] else ""))
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_max_pool_picks_as_torch(dims, window, kind, return_indices):
    torch = require("torch")
    name = f"max_pool{dims}d"
    _assert_picks_as_torch(torch, lambda t: getattr(F, name)(t, *window, return_indices),
                           lambda t: getattr(torch.nn.functional, name)(t, *window, return_indices), _input(dims, kind))


@pytest.mark.parametrize("return_indices", [False, True])
@pytest.mark.parametrize("kind", ["ties", "nan", "ninf_nan"])
@pytest.mark.parametrize("size", [1, 3, 4])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_adaptive_max_pool_picks_as_torch(dims, size, kind, return_indices):
    torch = require("torch")
    name = f"adaptive_max_pool{dims}d"
    _assert_picks_as_torch(torch, lambda t: getattr(F, name)(t, size, return_indices),
                           lambda t: getattr(torch.nn.functional, name)(t, size, return_indices), _input(dims, kind))


def test_a_window_of_padding_and_minus_infinity_sends_its_gradient_into_the_input():
    """The case that lost the gradient: padding 1 around -inf, each border window's first slot in the padding."""
    torch = require("torch")
    x = np.full((1, 1, 3, 3), -np.inf)
    _assert_picks_as_torch(torch, lambda t: F.max_pool2d(t, 3, 1, 1), lambda t: torch.nn.functional.max_pool2d(t, 3, 1, 1), x)
    graph = kiln.trace(lambda t: F.max_pool2d(t, 3, 1, 1), kiln.TensorSpec((1, 1, 3, 3), "float64"))
    assert [op.name for op in graph.ops] == ["tensor.max_pool2d"]  # the plain pool op, whose gradient kernel was wrong
