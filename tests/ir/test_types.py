"""DType and TensorType: construction, text form, symbolic dims, broadcasting and axes."""

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from oracles import require

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir import DType, TensorType, parse
from kiln.compiler.ir.types import broadcast_shapes, format_shape, normalize_axes, normalize_axis

SYMBOLS = st.from_regex(r"[A-Za-wyz_][A-Za-wyz0-9_]{0,3}", fullmatch=True)
DIMS = st.one_of(st.integers(0, 2**40), SYMBOLS)


@pytest.mark.parametrize(
    ("shape", "dtype", "text"),
    [
        (("N", 784), "f32", "tensor<Nx784xf32>"),
        ((), "i64", "tensor<i64>"),
        ((0, 3), "bool", "tensor<0x3xbool>"),
        (("batch", "seq", 16), "bf16", "tensor<batchxseqx16xbf16>"),
    ],
)
def test_tensor_type_text(shape, dtype, text):
    assert str(TensorType(shape, dtype)) == text


@given(st.lists(DIMS, max_size=4), st.sampled_from([d for d in DType if not d.is_complex]))  # complex: frontend only
def test_tensor_type_text_parses_back(shape, dtype):
    tensor_type = TensorType(tuple(shape), dtype)
    graph = parse(f"func @f(%x: {tensor_type}) {{\n  return\n}}\n")
    assert graph.inputs[0].type == tensor_type


def test_tensor_type_is_frozen_and_hashable():
    a = TensorType(["N", 3], DType.f32)
    assert a.shape == ("N", 3)
    assert a == TensorType(("N", 3), "float32") and hash(a) == hash(TensorType(("N", 3), np.float32))
    with pytest.raises(AttributeError):
        a.dtype = DType.f64  # type: ignore[misc]


def test_tensor_type_properties():
    t = TensorType(("N", 3, "M"), DType.f64)
    assert (t.rank, t.is_static, t.symbols) == (3, False, ("N", "M"))
    assert TensorType((2, 3), DType.f32).is_static
    assert t.with_shape((4,)) == TensorType((4,), DType.f64)
    assert t.with_dtype(DType.i32) == TensorType(("N", 3, "M"), DType.i32)


@pytest.mark.parametrize("dim", [-1, 2.0, True, "x", "Nx", "1N", "", None])
def test_tensor_type_rejects_bad_dims(dim):
    with pytest.raises(ShapeError, match="bad dim"):
        TensorType((dim,), DType.f32)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [(DType.f32, DType.f32), ("f64", DType.f64), ("float32", DType.f32), (np.int64, DType.i64), (np.dtype("bool"), DType.bool)],
)
def test_dtype_of(spec, expected):
    assert DType.of(spec) is expected


@pytest.mark.parametrize(("spec", "message"), [("float99", "unknown dtype"), (np.float128, "not supported")])
def test_dtype_of_rejects(spec, message):
    with pytest.raises(ShapeError, match=message):
        DType.of(spec)


def test_dtype_kinds_and_numpy():
    assert [d.name for d in DType if d.is_float] == ["f16", "bf16", "f32", "f64"]
    assert [d.name for d in DType if d.is_int] == ["u8", "i8", "i16", "i32", "i64"]
    assert DType.f16.numpy == np.float16 and DType.bool.numpy == np.bool_
    assert DType.bf16.numpy == ml_dtypes.bfloat16 and DType.of(np.dtype(ml_dtypes.bfloat16)) is DType.bf16
    assert [d.name for d in DType if d.is_half] == ["f16", "bf16"]


@pytest.mark.parametrize(
    ("shapes", "expected"),
    [
        (((3, 1), (1, 4)), (3, 4)),
        ((("N", 1), (4,)), ("N", 4)),
        ((("N", 4), ("N", 1), ()), ("N", 4)),
        (((), ()), ()),
        ((("N",), (1,)), ("N",)),
    ],
)
def test_broadcast_shapes(shapes, expected):
    assert broadcast_shapes(*shapes) == expected


@pytest.mark.parametrize("shapes", [((3,), (4,)), (("N",), ("M",)), (("N",), (3,))])
def test_broadcast_shapes_rejects(shapes):
    with pytest.raises(ShapeError, match=r"The size of tensor a \(\w+\) must match the size of tensor b"):
        broadcast_shapes(*shapes)


def test_normalize_axes():
    assert normalize_axes(None, 3) == (0, 1, 2)
    assert normalize_axes(-1, 3) == (2,)
    assert normalize_axes([2, -3], 3) == (0, 2)
    assert normalize_axis(0, 0) == 0
    with pytest.raises(ShapeError, match="repeated axis"):
        normalize_axes((1, -2), 3)
    with pytest.raises(ShapeError, match="out of range"):
        normalize_axes((3,), 3)


def test_format_shape():
    assert format_shape(("N",)) == "(N,)"
    assert format_shape((2, 3)) == "(2, 3)"
    assert format_shape(()) == "()"


def test_dtypes_answer_torch_dtype_queries():
    torch = require("torch")
    for dtype in DType:
        twin = {"f16": torch.float16, "bf16": torch.bfloat16, "f32": torch.float32, "f64": torch.float64, "i32": torch.int32,
                "i64": torch.int64, "bool": torch.bool, "u8": torch.uint8, "i8": torch.int8, "i16": torch.int16, "c64": torch.complex64,
                "c128": torch.complex128}[dtype.name]
        assert (dtype.itemsize, dtype.is_floating_point, dtype.is_signed, dtype.is_complex) == \
            (twin.itemsize, twin.is_floating_point, twin.is_signed, twin.is_complex), dtype
