"""kiln.complex64/complex128 as dtypes: names, queries and promotion as torch 2.13's; the IR refuses them."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, TensorType
from oracles import require_torch


def test_complex_dtypes_have_torchs_names_and_aliases():
    assert kiln.complex64 is kiln.cfloat is DType.c64 and kiln.complex128 is kiln.cdouble is DType.c128
    assert (str(kiln.complex64), repr(kiln.complex128)) == ("kiln.complex64", "kiln.complex128")
    assert DType.of("torch.cfloat") is DType.c64 and DType.of("kiln.complex128") is DType.c128
    assert DType.of(np.complex64) is DType.c64 and DType.of(np.dtype("complex128")) is DType.c128
    assert DType.c64.numpy == np.complex64 and (DType.c64.abbr, DType.c128.abbr) == ("c64", "c128")


def test_complex_dtype_queries_match_torch():
    torch = require_torch()
    for ours, theirs in ((DType.c64, torch.complex64), (DType.c128, torch.complex128)):
        assert (ours.is_complex, ours.is_floating_point, ours.is_signed, ours.itemsize) == \
            (theirs.is_complex, theirs.is_floating_point, theirs.is_signed, theirs.itemsize)
        assert str(ours.to_real()).split(".")[1] == str(theirs.to_real()).split(".")[1]
        assert ours.to_complex() is ours
    assert DType.f32.to_complex() is DType.c64 and DType.f64.to_complex() is DType.c128
    assert not any(dtype.is_complex for dtype in DType if dtype not in (DType.c64, DType.c128))


def test_to_complex_of_a_dtype_without_a_counterpart_says_which_have_one():
    with pytest.raises(ShapeError, match="only float32 and float64 have a complex counterpart"):
        DType.i32.to_complex()
    with pytest.raises(ShapeError, match="only float32 and float64"):
        DType.f16.to_complex()  # torch's complex32: kiln has none


PAIRS = [("float64", "complex64"), ("float32", "complex64"), ("float16", "complex64"), ("int64", "complex64"),
         ("bool", "complex128"), ("complex64", "complex128"), ("float64", "complex128"), ("bfloat16", "complex64")]


@pytest.mark.parametrize(("a", "b"), PAIRS)
def test_promote_types_with_complex_matches_torch(a, b):
    torch = require_torch()
    ours = kiln.promote_types(getattr(kiln, a), getattr(kiln, b))
    assert str(ours).split(".")[1] == str(torch.promote_types(getattr(torch, a), getattr(torch, b))).split(".")[1]
    assert kiln.promote_types(getattr(kiln, b), getattr(kiln, a)) is ours


def _operand(lib, kind):
    """The same operand in kiln or torch: a tensor with dims, a 0-d tensor or a Python number."""
    dtype, shape = kind
    if dtype == "number":
        return shape
    return lib.ones(shape, dtype=getattr(lib, dtype))


RESULT_CASES = [
    (("float64", (2,)), ("number", 1j)), (("float32", (2,)), ("number", 1j)), (("int64", (2,)), ("number", 1j)),
    (("complex64", (2,)), ("float64", ())), (("float64", (2,)), ("complex64", ())),
    (("complex64", (2,)), ("number", 2.5)), (("complex128", (2,)), ("float32", (2,))),
    (("complex64", ()), ("float64", (2,))),
]


@pytest.mark.parametrize(("left", "right"), RESULT_CASES)
def test_result_type_with_complex_matches_torch(left, right):
    torch = require_torch()
    ours = kiln.result_type(_operand(kiln, left), _operand(kiln, right))
    theirs = torch.result_type(_operand(torch, left), _operand(torch, right))
    assert str(ours).split(".")[1] == str(theirs).split(".")[1], (left, right)


def test_can_cast_between_real_and_complex_as_torch():
    torch = require_torch()
    for a, b in (("complex64", "float64"), ("float64", "complex64"), ("complex128", "complex64"), ("int64", "complex64")):
        assert kiln.can_cast(getattr(kiln, a), getattr(kiln, b)) == torch.can_cast(getattr(torch, a), getattr(torch, b))


def test_the_ir_refuses_a_complex_tensor_type_and_says_how_complex_values_are_carried():
    with pytest.raises(ShapeError, match=r"shape \(2, 3\) and dtype kiln.complex64: the IR holds no complex values.*"
                                         r"view_as_real"):
        TensorType((2, 3), DType.c64)


def test_onnx_export_of_a_function_returning_a_complex_tensor_refuses_clearly(tmp_path):
    """A complex tensor is two real ones: a function returning one has no single graph output to export."""
    def spectrum(x):
        return kiln.fft.rfft(x)

    with pytest.raises(Exception, match="complex") as error:
        kiln.export_onnx(spectrum, [kiln.TensorSpec((4, 8), "f32")], str(tmp_path / "f.onnx"))
    assert "view_as_real" in str(error.value) or "real" in str(error.value)


def test_a_real_tensor_meets_a_python_complex_and_casts_to_complex_as_torch():
    """``x * 1j``, ``1j - x``, ``x / (1 - 1j)``, ``x.to(kiln.cfloat)``: the tensor becomes complex (integers in the
    default float's complex dtype), values, dtypes and the real leaf's gradient as torch 2.13's (NaN too)."""
    torch = require_torch()
    cases = [lambda lib, t: t * 1j, lambda lib, t: 1j * t, lambda lib, t: 2.0 - (1 + 2j) * t, lambda lib, t: 1j - t,
             lambda lib, t: t / (1 - 1j), lambda lib, t: t + np.complex128(0.5j), lambda lib, t: t.to(lib.cfloat),
             lambda lib, t: t.to(dtype=lib.complex128)]
    for values in (np.array([1.5, -2.0, np.nan, 0.25]), np.array([1.5, -2.0], np.float32), np.arange(4)):
        for case in cases:
            ours, theirs = case(kiln, kiln.tensor(values)), case(torch, torch.tensor(values))
            assert str(ours.dtype) == str(theirs.dtype).replace("torch", "kiln")
            np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
    grads = []
    for lib in (kiln, torch):
        leaf = lib.tensor(np.array([1.5, -2.0]), requires_grad=True)
        z = leaf * (2 + 3j) + leaf.to(lib.cdouble) * 1j
        (z.real * 2.0 + z.imag * 0.5).sum().backward()
        grads.append(np.array(leaf.grad.numpy()))
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)
    with pytest.raises(TypeError, match=r"maximum\(\): argument 'other' \(position 2\) must be Tensor, not complex"):
        kiln.maximum(kiln.ones(2), 1j)  # torch.maximum takes no number (tests/frontend/test_tensor_only_operands_vs_torch.py)
