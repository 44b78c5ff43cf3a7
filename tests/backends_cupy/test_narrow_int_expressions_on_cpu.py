"""uint8, int8 and int16 in the CUDA expressions (expressions.py), run as C on the CPU against PyTorch: C computes
them in int, so each sub-expression is cast back to its width and wraps where torch's does (uint8 200 + 100 = 44),
also inside one fused kernel, where a wrapped sum then compares (``(a + b) > 100``)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cpu_cuda import run_raw_kernel
from cuda_compiler import cuda_compiler, translation_unit
from cupy_models import kernel_sources
from oracles import require_torch
from test_expressions_on_cpu import run_expression
import kiln
from kiln.backends.cupy import CupyBackend
from kiln.backends.cupy.codegen import ElementwiseSource, standalone_source
from kiln.backends.cupy.expressions import C_TYPES, CUPY_TYPES, c_expression
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir.types import DType

NARROW = (DType.u8, DType.i8, DType.i16)
VALUES = {DType.u8: [0, 1, 2, 7, 100, 128, 200, 255], DType.i8: [-128, -100, -1, 0, 1, 7, 100, 127],
          DType.i16: [-32768, -300, -1, 0, 1, 7, 30000, 32767]}
COUNTS = [0, 1, 3, 7, 8, 15, 16, 20]
TORCH = {"tensor.add": lambda a, b: a + b, "tensor.sub": lambda a, b: a - b, "tensor.mul": lambda a, b: a * b,
         "tensor.maximum": lambda a, b: a.maximum(b), "tensor.minimum": lambda a, b: a.minimum(b),
         "tensor.bitwise_and": lambda a, b: a & b, "tensor.bitwise_xor": lambda a, b: a ^ b,
         "tensor.left_shift": lambda a, b: a << b, "tensor.right_shift": lambda a, b: a >> b}


def pairs(op_name: str, dtype: DType) -> list[np.ndarray]:
    right = COUNTS if "shift" in op_name else VALUES[dtype]
    return [np.array(column, dtype.numpy) for column in zip(*itertools.product(VALUES[dtype], right))]


def test_each_narrow_dtype_has_its_c_and_cupy_type_names():
    assert [C_TYPES[d] for d in NARROW] == ["unsigned char", "signed char", "short"]
    assert [CUPY_TYPES[d] for d in NARROW] == ["uint8", "int8", "int16"]


@pytest.mark.parametrize("dtype", NARROW, ids=str)
@pytest.mark.parametrize("op_name", list(TORCH))
def test_binary_rule_wraps_as_torch(op_name: str, dtype: DType):
    torch = require_torch()
    a, b = pairs(op_name, dtype)
    expected = TORCH[op_name](torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_array_equal(run_expression(op_name, [a, b], dtype), expected, err_msg=f"{op_name} {dtype}")


@pytest.mark.parametrize("dtype", NARROW, ids=str)
def test_unary_rules_and_casts_wrap_as_torch(dtype: DType):
    torch = require_torch()
    a = np.array(VALUES[dtype], dtype.numpy)
    if dtype is not DType.u8:  # torch refuses negating a uint8 tensor's... no: it wraps; abs of uint8 is itself
        np.testing.assert_array_equal(run_expression("tensor.neg", [a], dtype), (-torch.from_numpy(a)).numpy())
        np.testing.assert_array_equal(run_expression("tensor.abs", [a], dtype), torch.from_numpy(a).abs().numpy())
    np.testing.assert_array_equal(run_expression("tensor.bitwise_not", [a], dtype), (~torch.from_numpy(a)).numpy())
    wide = np.array([0, 255, 256, 300, -1, -129, 40000, -40000], np.int32)
    np.testing.assert_array_equal(run_expression("tensor.cast", [wide], dtype, {"dtype": dtype}),
                                  torch.from_numpy(wide).to(getattr(torch, np.dtype(dtype.numpy).name)).numpy())


def run_nested(body: str, a: np.ndarray, b: np.ndarray, result: DType) -> np.ndarray:
    """``y0 = body`` over inputs ``x0``, ``x1`` as C on the CPU, as a fused kernel nests its sub-expressions."""
    params = ", ".join(f"{CUPY_TYPES[DType.of(x.dtype)]} x{i}" for i, x in enumerate((a, b)))
    source = ElementwiseSource(f"kiln_nested_{result.value}", params, f"{CUPY_TYPES[result]} y0", f"y0 = {body};")
    out = np.empty(len(a), result.numpy)
    run_raw_kernel(standalone_source(source), source.name, (-(-len(out) // 32),), (32,), (a, b, out, np.int64(len(out))))
    return out


@pytest.mark.parametrize("dtype", NARROW, ids=str)
def test_nested_expressions_wrap_each_step_as_torch(dtype: DType):
    # C computes a + b in int: without the cast back, (200 + 100) > 100 would be true where torch's uint8 44 is not
    torch = require_torch()
    a, b = pairs("tensor.add", dtype)
    total = c_expression("tensor.add", ["x0", "x1"], {}, dtype)
    product = c_expression("tensor.mul", ["x0", "x1"], {}, dtype)
    limit, one = f"(({C_TYPES[dtype]})100)", f"(({C_TYPES[dtype]})1)"
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    cases = [(c_expression("tensor.greater", [total, limit], {}, DType.bool), DType.bool, (ta + tb) > 100),
             (c_expression("tensor.right_shift", [product, one], {}, dtype), dtype, (ta * tb) >> 1),
             (c_expression("tensor.maximum", [total, "x1"], {}, dtype), dtype, (ta + tb).maximum(tb))]
    for body, result, expected in cases:
        np.testing.assert_array_equal(run_nested(body, a, b, result), expected.numpy(), err_msg=f"{body} {dtype}")


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16"])
def test_a_fused_kernel_wraps_each_step_as_the_numpy_backend(fake, dtype):
    graph = kiln.trace(lambda a, b: ((a + b) > 100, (a * b - 3) >> 1, (a + b).maximum(b)),
                       kiln.TensorSpec((4, 8), dtype), kiln.TensorSpec((8,), dtype))
    values = VALUES[DType.of(dtype)]
    a = np.array(values * 4, dtype).reshape(4, 8)
    b = np.array(values[::-1], dtype)
    executable = CupyBackend().compile(graph)
    names = [op.name for op in executable.graph.ops]
    assert "fused.elementwise" in names and "tensor.add" not in names and "tensor.greater" not in names, names  # fused
    for got, expected in zip(executable(a, b), NumpyBackend().compile(graph)(a, b)):
        assert np.asarray(got).dtype == expected.dtype
        np.testing.assert_array_equal(np.asarray(got), expected)


def test_the_narrow_kernels_compile_as_cuda():
    compile_cuda = cuda_compiler()
    for dtype in ("uint8", "int8", "int16"):
        graph = kiln.trace(lambda a, b: (((a + b) * 3) << 1, ~a ^ b, (a - b).abs()),
                           kiln.TensorSpec(("N", 6), dtype), kiln.TensorSpec((6,), dtype))
        for source in kernel_sources(graph).values():
            compile_cuda(translation_unit(source), source.name)
