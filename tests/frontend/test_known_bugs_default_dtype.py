"""Python numbers meeting integer and bool tensors promote to the default float dtype, as PyTorch's: after
``kiln.set_default_dtype(kiln.float64)``, ``int_tensor * 1.5``, ``int_tensor / 2``, ``int_tensor.sin()`` and
``int_tensor.clamp(min=0.5)`` are float64 (float32 under the default default), eagerly and in a trace."""

from __future__ import annotations

import operator

import numpy as np
import pytest

import kiln
from oracles import require

_BINARY = {"mul": operator.mul, "add": operator.add, "sub": operator.sub, "truediv": operator.truediv, "pow": operator.pow,
           "rmul": lambda a, b: b * a, "rsub": lambda a, b: b - a, "rtruediv": lambda a, b: b / a, "lt": operator.lt,
           "clamp_min": lambda a, b: a.clamp(min=b), "clamp": lambda a, b: a.clamp(-b, b)}


@pytest.fixture(params=["float32", "float64"])
def default(request):
    """Both libraries' default float dtype set to the parameter, and restored after the test."""
    torch = require("torch")
    kiln.set_default_dtype(getattr(kiln, request.param)), torch.set_default_dtype(getattr(torch, request.param))
    yield request.param
    kiln.set_default_dtype(kiln.float32), torch.set_default_dtype(torch.float32)


def _name(dtype) -> str:
    return str(dtype).removeprefix("torch.") if "torch" in str(dtype) else dtype.numpy.name


def _torch_accepts(source: str, scalar: object, op: str) -> bool:
    """torch rejects subtracting bools (``mask - 1``, ``x - True``) and clamping a bool tensor by a bool."""
    is_sub = op in ("sub", "rsub")
    return not (is_sub and (source == "bool" or scalar is True)) and not (op == "clamp_min" and source == "bool" and scalar is True)


_CASES = [(source, scalar, op) for source in ("bool", "int32", "int64", "float32") for scalar in (3, 1.5, True)
          for op in sorted(_BINARY) if _torch_accepts(source, scalar, op)]


@pytest.mark.parametrize(("source", "scalar", "op"), _CASES)
@pytest.mark.parametrize("rank", [0, 1])
def test_a_python_number_with_a_tensor_promotes_as_torch(default, source, scalar, op, rank):
    torch = require("torch")
    values = [1, 0, 2] if rank else 2
    expected = _BINARY[op](torch.tensor(values, dtype=getattr(torch, source)), scalar)
    got = _BINARY[op](kiln.tensor(values, dtype=getattr(kiln, source)), scalar)
    assert _name(got.dtype) == _name(expected.dtype)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("method", ["sin", "reciprocal", "rsqrt"])
def test_a_float_method_of_an_int_tensor_computes_in_the_default_dtype_as_torch(default, method):
    torch = require("torch")
    expected = getattr(torch.tensor([1, 2, 7]), method)()
    got = getattr(kiln.tensor([1, 2, 7]), method)()
    assert _name(got.dtype) == _name(expected.dtype)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-6)


def test_an_int_tensor_times_a_float_is_float64_after_set_default_dtype_in_a_trace_too():
    kiln.set_default_dtype(kiln.float64)
    try:
        graph = kiln.trace(lambda counts: (counts * 1.5, counts / 4), kiln.TensorSpec(("N",), "int64"))
    finally:
        kiln.set_default_dtype(kiln.float32)
    assert [output.type.dtype for output in graph.outputs] == [kiln.float64, kiln.float64]
    assert (kiln.tensor([1, 2]) * 1.5).dtype is kiln.float32
