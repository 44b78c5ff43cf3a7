"""The Tensor methods of ``frontend/tensor_methods.py`` against PyTorch in float64: values (dtype included) and
gradients to rtol 1e-10, with the same function run on kiln and torch tensors; and the errors of what a trace cannot
give (``item``, ``nonzero``...)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import TraceError
from oracles import require
from tensor_parity import _check, assert_fills_a_symbolic_batch

RNG = np.random.default_rng(7)
X = RNG.standard_normal((3, 4, 5))
Y = RNG.standard_normal((3, 4, 5))
SPECIAL = np.array([[0.0, -1.5, math.inf], [-math.inf, math.nan, 2.0]])

VALUE_METHODS = {  # name: (function of x, y), differentiable
    "comparisons": (lambda x, y: (x.gt(y), x.ge(0.1), x.lt(y), x.le(-0.2), x.greater(y), x.less_equal(y)), False),
    "bool_logic": (lambda x, y: ((x > 0) & (y > 0), (x > 0) | (y < 0), (x > 0) ^ (y > 0), ~(x > y), (x > 0).logical_and(y < 1),
                                 x.logical_not(), x.logical_or(y > 0), (x > 0).logical_xor(y > 0)), False),
    "casts": (lambda x, y: ((x * 3).long(), (x * 3).int(), x.bool(), (x > 0).double(), (x > 0).long().double()), False),
    "clone_and_contiguous": (lambda x, y: x.clone() * 2 + x.contiguous() * y, True),
    "new_tensors": (lambda x, y: x + x.new_zeros(3, 4, 5) + x.new_ones((4, 5)) * 2 + x.new_full((5,), 0.5) + x.new_tensor([1.0, 2.0, 3.0, 4.0, 5.0]), True),
    "index_select": (lambda x, y: x.index_select(1, _index(x, [3, 0, 3])) * 2, True),
    "gather_last": (lambda x, y: x.gather(2, _index(x, RNG.integers(0, 5, (3, 4, 2)))), True),
    "gather_middle_smaller_index": (lambda x, y: x.gather(1, _index(x, RNG.integers(0, 4, (2, 6, 3)))), True),
    "gather_first": (lambda x, y: x.gather(0, _index(x, RNG.integers(0, 3, (3, 4, 5)))), True),
    "roll": (lambda x, y: (x.roll(2, 1), x.roll(-1, 2), x.roll((1, 3), (0, 2)), x.roll(7), x.roll(0, 1)), True),
    "repeat_interleave": (lambda x, y: (x.repeat_interleave(2, 1), x.repeat_interleave(3), x.repeat_interleave(2, -1)), True),
    "tile": (lambda x, y: (x.tile(2, 1, 1), x.tile((2,)), x.tile(2, 1, 1, 1)), True),
    "unflatten": (lambda x, y: x.unflatten(1, (2, 2)) * 3, True),
    "transposes": (lambda x, y: (x[0].t() * 2, x.mT, x[0, 0].t()), True),
    "triangles": (lambda x, y: (x.tril(), x.triu(1), x.tril(-1)), True),
    "extrema": (lambda x, y: (x.maximum(y), x.minimum(y * 0.5)), True),
    "products": (lambda x, y: (x[0, 0].outer(y[0, 1]), x[0, 0].dot(y[1, 1])), True),
    "equality": (lambda x, y: (x == y, x != 0.5, (x > 0) == (y > 0), (x * 2).round() == 0, x[0] != y[0]), False),
    "sorting": (lambda x, y: (x.sort(1).values * y, x.sort(-1, descending=True)[1], x.argsort(0), x.topk(2).values,
                              x.topk(3, dim=1, largest=False)[1], x.msort(), x.take_along_dim(x.argsort(2), 2)), True),
    "trigonometry": (lambda x, y: x.sin() * y + x.cos(), True),
    "rounding": (lambda x, y: ((x * 3).frac() * y + (x * 3).floor() + (x * 3).ceil() + (x * 3).round() + (x * 3).trunc(),
                               x.round(decimals=1), (x * 3).long().floor()), True),
    "cumsum": (lambda x, y: (x.cumsum(1) * y, x.cumsum(-1), (x > 0).cumsum(2), (x > 0).int().cumsum(0)), True),
    "float_division": (lambda x, y: (x.remainder(y.detach()) + x.fmod(0.4) * y + x % 0.7, 1.5 % (x.abs() + 0.1), x // 0.3,
                                     x.div(y, rounding_mode="floor"), x.div(y, rounding_mode="trunc"), 2.0 // (x.abs() + 0.1)), True),
    "integer_division": (lambda x, y: ((x * 5).long() // 2, (x * 5).long() % 3, (x * 5).long().div(2, rounding_mode="trunc"),
                                       (x * 5).int() // (y * 5).int().clamp(1, 3), (x * 5).int().fmod(3), -7 // (y * 5).long().clamp(1, 3)), False),
}


def _index(like, indices):
    """An int64 index tensor on kiln or torch, as ``like`` is."""
    if isinstance(like, kiln.frontend.tensor.Tensor):
        return like.new_tensor(np.asarray(indices), dtype="int64")
    import torch

    return torch.tensor(np.asarray(indices), dtype=torch.int64)


@pytest.mark.parametrize("name", VALUE_METHODS)
def test_methods_match_torch(name):
    fn, differentiable = VALUE_METHODS[name]
    state = RNG.bit_generator.state  # the kiln and the torch call draw the same random indices
    kiln_fn = fn

    def torch_fn(x, y):
        RNG.bit_generator.state = state
        return fn(x, y)

    def traced(x, y):
        RNG.bit_generator.state = state
        return kiln_fn(x, y)

    _check(traced, torch_fn, X, Y, grad=differentiable)


def test_special_values_match_torch():
    fn = lambda x: (x.isnan(), x.isinf(), x.isfinite(), (x > 0).long().isinf(), (x > 0).long().isfinite())  # noqa: E731
    _check(fn, fn, SPECIAL, grad=False)


def test_integer_inputs_of_float_functions_compute_in_float32_and_cumsum_takes_a_dtype():
    graph = kiln.trace(lambda x: ((x > 0).long().cos(), x.cumsum(0, dtype=kiln.float64), (x > 0).int().cumsum(0)), kiln.TensorSpec((2, 3)))
    assert [v.type.dtype.value for v in graph.outputs] == ["f32", "f64", "i64"]


def test_new_full_takes_a_symbolic_batch():
    assert_fills_a_symbolic_batch(lambda x: x + x.new_zeros(x.shape[0], 1) + x.new_full((x.shape[0], 3), 2.0), 3, 2.0)


ERRORS = {
    "item": (lambda x: x.sum().item(), "exists only when the compiled function runs"),
    "tolist": (lambda x: x.tolist(), "exist only when the compiled function runs"),
    "numpy": (lambda x: x.numpy(), "compiled functions return NumPy arrays"),
    "nonzero": (lambda x: x.nonzero(), "data-dependent shape"),
    "masked_select": (lambda x: x.masked_select(x > 0), "data-dependent shape"),
    "bitwise_on_floats": (lambda x: x & (x > 0), "not implemented for 'Float'"),
    "t_of_3d": (lambda x: x.t(), "at most 2 dims"),
    "repeat_interleave_tensor": (lambda x: x.repeat_interleave(x.long()), "int count"),
}


@pytest.mark.parametrize("name", ERRORS)
def test_what_a_trace_cannot_give_is_an_error_at_the_users_line(name):
    fn, message = ERRORS[name]
    with pytest.raises(TraceError, match=message) as error:
        kiln.trace(fn, kiln.TensorSpec((3, 4, 5)))
    assert "test_more_tensor_methods_vs_torch.py" in str(error.value)


def test_parameters_compare_elementwise_in_user_code_and_hash_by_identity():
    torch = require("torch")
    layers = (kiln.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    for layer in layers:
        assert layer.weight in [layer.weight, layer.bias] and len({layer.weight, layer.bias, layer.weight}) == 2
        assert bool((layer.weight == layer.weight).all()) and not bool((layer.weight != layer.weight).any())
        with pytest.raises(RuntimeError, match="ambiguous"):
            layer.weight in [layer.bias, layer.weight]  # noqa: B015  (weight == bias first: a 2x2 result)
    ours, theirs = layers
    other = kiln.nn.Parameter(kiln.tensor(np.array(ours.weight.data) + np.eye(2, dtype=np.float32)))
    torch_other = torch.nn.Parameter(torch.from_numpy(np.array(other.data)))
    theirs.weight.data = torch.from_numpy(np.array(ours.weight.data))
    np.testing.assert_array_equal(np.array(ours.weight == other), (theirs.weight == torch_other).numpy())

    def membership(x):
        assert x in [None, "x", x] and x != None and not (x == "x")  # noqa: E711
        return x == 0

    graph = kiln.trace(membership, kiln.TensorSpec((2,)))
    assert graph.outputs[0].type.dtype.value == "bool"


def test_sorting_ties_keep_their_order_as_torch_stable_sort():
    require("torch")
    ties = np.array([[2.0, 1.0, 2.0, np.nan, 1.0, -np.inf], [0.0, -0.0, 3.0, 3.0, 3.0, 0.0]])
    fn = lambda x: (x.sort(dim=-1, stable=True)[1], x.sort(dim=-1, descending=True, stable=True)[1],  # noqa: E731
                    x.argsort(dim=-1, stable=True), x.sort(dim=0, stable=True).values)
    _check(fn, fn, ties, grad=False)


def test_gather_on_a_symbolic_batch_selects_as_numpy():
    graph = kiln.trace(lambda x, i: x.gather(1, i), kiln.TensorSpec(("N", 5)), kiln.TensorSpec(("N", 3), "int64"))
    run = NumpyBackend().compile(graph)
    for batch in (1, 4):
        x, index = RNG.standard_normal((batch, 5)).astype(np.float32), RNG.integers(0, 5, (batch, 3))
        np.testing.assert_array_equal(run(x, index)[0], np.take_along_axis(x, index, 1))


@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_gather_on_a_symbolic_batch_keeps_an_integer_or_bool_source_dtype(dtype):
    graph = kiln.trace(lambda x, i: x.gather(1, i), kiln.TensorSpec(("N", 5), dtype), kiln.TensorSpec(("N", 3), "int64"))
    run = NumpyBackend().compile(graph)
    x, index = RNG.integers(-9, 9, (4, 5)).astype(dtype), RNG.integers(0, 5, (4, 3))
    got = run(x, index)[0]
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, np.take_along_axis(x, index, 1))
