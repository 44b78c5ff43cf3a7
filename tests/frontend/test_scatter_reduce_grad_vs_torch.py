"""Gradients of ``scatter_reduce`` (every reduce, ``include_self`` or not), ``index_reduce`` and ``scatter(reduce=)``
against torch 2.13 and float64 central differences, eager and under ``kiln.compile``. ``amax``/``amin`` split a place's
gradient evenly between the values that tie for it, ``self``'s counted even without ``include_self`` (whose share is
then 0), as torch's ``scatter_reduce_backward``; ties are what a ReLU's zeros give a GNN's max pooling
(``frontend/tensor_scatter_writes.py``). torch has no derivative for ``scatter(reduce=)``; kiln's matches differences."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np
import pytest

import kiln
from oracles import require_torch

SELF = np.array([[1.0, 2.0, 3.0], [0.0, 5.0, 1.0]])
SOURCE = np.array([[1.0, 2.0, 3.0], [1.0, 5.0, 3.0], [1.0, 0.0, 3.0]])
INDEX = np.array([[0, 0, 0], [0, 1, 0], [0, 1, 1]])  # ties of the source with itself and with SELF
RNG = np.random.default_rng(0)
RANDOM_SELF, RANDOM_SOURCE = RNG.standard_normal((4, 5)), RNG.standard_normal((3, 5))
RANDOM_INDEX = np.array([[0, 1, 0, 3, 3], [1, 1, 0, 2, 3], [0, 2, 2, 3, 1]])


def _weights(shape: tuple[int, ...]) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) / 7 + 0.3


def _grads(lib: Any, op: Callable, self_array: np.ndarray, source: np.ndarray, index: np.ndarray, compiled: bool = False) -> list[np.ndarray]:
    """The output and the gradients of ``sum(op(...) * weights)`` (infinite outputs left out) for self and source."""
    x, src = lib.tensor(self_array, requires_grad=True), lib.tensor(source, requires_grad=True)

    def loss(x, src):
        out = op(lib, x, lib.tensor(index), src)
        finite = lib.where(out.isfinite(), out, lib.zeros_like(out))
        return out, (finite * lib.tensor(_weights(tuple(out.shape)))).sum()

    out, value = (kiln.compile(loss) if compiled else loss)(x, src)
    value.backward()
    return [out.detach().numpy(), x.grad.numpy(), src.grad.numpy()]


def _assert_as_torch(op: Callable, self_array: np.ndarray, source: np.ndarray, index: np.ndarray, compiled: bool = False) -> None:
    theirs = _grads(require_torch(), op, self_array, source, index)
    ours = _grads(kiln, op, self_array, source, index, compiled)
    for name, mine, reference in zip(("output", "self grad", "source grad"), ours, theirs):
        np.testing.assert_allclose(mine, reference, rtol=1e-12, atol=1e-14, err_msg=name)


def _scatter_reduce(reduce: str, include_self: bool) -> Callable:
    return lambda lib, x, index, src: x.scatter_reduce(0, index, src, reduce, include_self=include_self)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", ["amax", "amin", "sum", "mean", "prod"])
def test_scatter_reduce_with_ties_as_torch(reduce, include_self, compiled):
    _assert_as_torch(_scatter_reduce(reduce, include_self), SELF, SOURCE, INDEX, compiled)


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", ["amax", "amin", "prod", "mean"])
def test_index_reduce_with_ties_as_torch(reduce, include_self):
    op = lambda lib, x, index, src: x.index_reduce(0, index, src, reduce, include_self=include_self)  # noqa: E731
    _assert_as_torch(op, SELF, SOURCE, np.array([0, 1, 0]), compiled=False)


@pytest.mark.parametrize("reduce", ["amax", "amin"])
def test_the_function_form_shares_ties_too(reduce):
    _assert_as_torch(lambda lib, x, index, src: lib.scatter_reduce(x, 0, index, src, reduce=reduce), SELF, SOURCE, INDEX)


@pytest.mark.parametrize("alias", ["max", "min"])
def test_the_max_min_aliases_have_the_amax_amin_gradient_torch_refuses(alias):
    """torch 2.13 takes ``reduce="max"`` forward but its backward raises; kiln's is ``amax``'s."""
    with pytest.raises(RuntimeError, match=f"Expected 'reduce' to be one of .* but got {alias}"):
        _grads(require_torch(), _scatter_reduce(alias, True), SELF, SOURCE, INDEX)
    for mine, reference in zip(_grads(kiln, _scatter_reduce(alias, True), SELF, SOURCE, INDEX),
                               _grads(require_torch(), _scatter_reduce("a" + alias, True), SELF, SOURCE, INDEX)):
        np.testing.assert_allclose(mine, reference, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("include_self", [True, False])
def test_gnn_max_pooling_of_relu_features_from_minus_infinity_as_torch(include_self):
    """``x.new_full((nodes, d), -inf).scatter_reduce(0, edges, relu(h), "amax")``: ReLU's zeros tie; an empty node
    stays -inf (its gradient, as torch's, the loss's)."""
    features = np.maximum(np.random.default_rng(1).standard_normal((6, 4)), 0.0)
    features[1] = features[0]  # two edges bringing the same message
    targets = np.repeat(np.array([0, 0, 2, 2, 2, 0]), 4).reshape(6, 4)
    start = np.full((4, 4), -math.inf)
    _assert_as_torch(_scatter_reduce("amax", include_self), start, features, targets)
    _assert_as_torch(_scatter_reduce("amax", include_self), start, features, targets, compiled=True)


def _finite_differences(function: Callable[[np.ndarray], float], array: np.ndarray, step: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(array)
    for position in np.ndindex(array.shape):
        up, down = array.copy(), array.copy()
        up[position] += step
        down[position] -= step
        grad[position] = (function(up) - function(down)) / (2 * step)
    return grad


def _assert_finite_differences(op: Callable, self_array: np.ndarray, source: np.ndarray, index: np.ndarray) -> None:
    def value(x: np.ndarray, src: np.ndarray) -> float:
        with kiln.no_grad():
            out = op(kiln, kiln.tensor(x), kiln.tensor(index), kiln.tensor(src))
            return float((out * kiln.tensor(_weights(tuple(out.shape)))).sum())

    _, self_grad, source_grad = _grads(kiln, op, self_array, source, index)
    np.testing.assert_allclose(self_grad, _finite_differences(lambda x: value(x, source), self_array), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(source_grad, _finite_differences(lambda s: value(self_array, s), source), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("reduce", ["amax", "amin", "sum", "mean", "prod"])
def test_scatter_reduce_without_ties_matches_finite_differences(reduce, include_self):
    _assert_finite_differences(_scatter_reduce(reduce, include_self), RANDOM_SELF, RANDOM_SOURCE, RANDOM_INDEX)


@pytest.mark.parametrize("reduce", ["add", "multiply"])
def test_scatter_with_reduce_has_the_finite_differences_gradient_torch_lacks(reduce):
    torch = require_torch()
    with warnings.catch_warnings(), pytest.raises(RuntimeError, match="derivative for aten::scatter is not implemented"):
        warnings.simplefilter("ignore")  # torch's deprecation of scatter(reduce=)
        _grads(torch, lambda lib, x, index, src: x.scatter(0, index, src, reduce=reduce), RANDOM_SELF, RANDOM_SOURCE, RANDOM_INDEX)
    op = lambda lib, x, index, src: x.scatter(0, index, src, reduce=reduce)  # noqa: E731
    _assert_finite_differences(op, RANDOM_SELF, RANDOM_SOURCE, RANDOM_INDEX)
