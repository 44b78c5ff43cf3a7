"""``Tensor.type`` as PyTorch's method: ``t.type()`` is the type string, ``t.type(dtype)`` and
``t.type('torch.DoubleTensor')`` cast, eagerly and in a trace; ``t.type`` stays kiln's IR ``TensorType``."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType, TensorType
from oracles import require

_DTYPES = ["float32", "float64", "int32", "int64", "bool"]


@pytest.mark.parametrize("dtype", _DTYPES)
def test_type_without_an_argument_is_torchs_type_string(dtype):
    torch = require("torch")
    values = [0, 1, 3]
    assert kiln.tensor(values, dtype=getattr(kiln, dtype)).type() == torch.tensor(values, dtype=getattr(torch, dtype)).type()


@pytest.mark.parametrize("source", _DTYPES)
@pytest.mark.parametrize("target", _DTYPES)
def test_type_casts_by_dtype_and_by_type_string_as_torch(source, target):
    torch = require("torch")
    values = [-1.75, 0.0, 2.5, 3.0]
    ours = kiln.tensor(values, dtype=getattr(kiln, "float64")).to(getattr(kiln, source))
    theirs = torch.tensor(values, dtype=torch.float64).to(getattr(torch, source))
    name = theirs.to(getattr(torch, target)).type()
    for got, expected in ((ours.type(getattr(kiln, target)), theirs.type(getattr(torch, target))), (ours.type(name), theirs.type(name))):
        assert got.type() == expected.type()
        np.testing.assert_array_equal(got.numpy(), expected.numpy())


def test_type_of_the_same_dtype_is_the_tensor_itself_as_torch():
    torch = require("torch")
    ours, theirs = kiln.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0])
    assert (ours.type(kiln.float32) is ours) == (theirs.type(torch.float32) is theirs) == True  # noqa: E712
    assert ours.type("torch.FloatTensor") is ours


def test_type_strings_for_the_gpu_and_kilns_prefix_name_the_same_dtype():
    x = kiln.tensor([1, 2])
    assert x.type("torch.cuda.DoubleTensor").dtype is DType.f64  # kiln places data by backend, not by tensor
    assert x.type("kiln.FloatTensor").dtype is DType.f32
    assert x.type("float64").dtype is DType.f64


def test_a_traced_cast_by_type_differentiates_as_torch():
    torch = require("torch")
    x = np.random.default_rng(0).standard_normal(5)

    def ours(t):
        return (t.type(kiln.float32).type("torch.DoubleTensor") ** 2 * t).sum()

    expected = torch.tensor(x, requires_grad=True)
    (expected.type(torch.float32).type("torch.DoubleTensor") ** 2 * expected).sum().backward()
    np.testing.assert_allclose(kiln.grad(ours)(x), expected.grad.numpy(), rtol=1e-12)
    graph = kiln.trace(ours, kiln.TensorSpec((5,), "float64"))
    assert [op.result.type.dtype for op in graph.ops if op.name == "tensor.cast"] == [DType.f32, DType.f64]


def test_the_type_string_is_known_in_a_trace():
    seen = []

    def fn(t):
        seen.append(t.type())
        return t.type(kiln.int32)

    graph = kiln.trace(fn, kiln.TensorSpec(("N", 3), "float64"))
    assert seen == ["torch.DoubleTensor"] and graph.outputs[0].type == TensorType(("N", 3), DType.i32)


def test_type_is_still_the_ir_type_equal_and_hashing_as_a_plain_one():
    x = kiln.tensor([[1.0, 2.0]])
    plain = TensorType((1, 2), DType.f32)
    assert x.type == plain and plain == x.type and {plain: "found"}[x.type] == "found"
    assert x.type.shape == (1, 2) and str(x.type) == "tensor<1x2xf32>" and repr(x.type) == repr(plain)
    assert type(pickle.loads(pickle.dumps(x.type))) is TensorType


def test_an_unknown_type_string_names_the_known_ones():
    with pytest.raises(TraceError, match=r"(?s)test_known_bugs_tensor_type.py:\d+.*type\('torch.ComplexFloatTensor'\).*'torch.ByteTensor'"):
        kiln.tensor([1.0]).type("torch.ComplexFloatTensor")
