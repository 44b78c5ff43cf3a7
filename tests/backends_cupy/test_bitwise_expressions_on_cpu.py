"""The CUDA expressions of the integer bit ops (expressions.py) run as C on the CPU, against the NumPy kernels and
PyTorch: every pair of values with both signs and each dtype's extremes, and shift counts around 0 and the bit width
(C leaves ``<<``/``>>`` undefined there, and a left shift of a negative number; the rules must not reach either)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cuda_compiler import cuda_compiler, translation_unit
from cupy_models import kernel_sources
from oracles import require_torch
from test_expressions_on_cpu import numpy_kernel, run_expression
import kiln
from kiln.backends.cupy import CupyBackend
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir.types import DType

VALUES = {DType.i32: [0, 1, -1, 5, -5, 0x5555, -100, 2**31 - 1, -2**31],
          DType.i64: [0, 1, -1, 5, -5, 0x5555, -100, 2**40 + 3, 2**63 - 1, -2**63]}
COUNTS = {DType.i32: [-70, -1, 0, 1, 5, 31, 32, 33, 100], DType.i64: [-70, -1, 0, 1, 5, 31, 32, 63, 64, 65, 100]}
BINARY = ["tensor.bitwise_and", "tensor.bitwise_or", "tensor.bitwise_xor", "tensor.left_shift", "tensor.right_shift"]
TORCH = {"tensor.bitwise_and": lambda a, b: a & b, "tensor.bitwise_or": lambda a, b: a | b,
         "tensor.bitwise_xor": lambda a, b: a ^ b, "tensor.left_shift": lambda a, b: a << b,
         "tensor.right_shift": lambda a, b: a >> b}


def pairs(op_name: str, dtype: DType) -> list[np.ndarray]:
    right = COUNTS[dtype] if "shift" in op_name else VALUES[dtype]
    columns = zip(*itertools.product(VALUES[dtype], right))
    return [np.array(column, dtype.numpy) for column in columns]


@pytest.mark.parametrize("dtype", [DType.i32, DType.i64])
@pytest.mark.parametrize("op_name", BINARY)
def test_bit_rule_means_what_numpy_and_torch_mean(op_name: str, dtype: DType):
    torch = require_torch()
    a, b = pairs(op_name, dtype)
    actual = run_expression(op_name, [a, b], dtype)
    np.testing.assert_array_equal(actual, numpy_kernel(op_name, a, b), err_msg=f"{op_name} {dtype} vs NumPy")
    np.testing.assert_array_equal(actual, TORCH[op_name](torch.from_numpy(a), torch.from_numpy(b)).numpy(),
                                  err_msg=f"{op_name} {dtype} vs torch")


@pytest.mark.parametrize("dtype", [DType.i32, DType.i64])
def test_bitwise_not_rule(dtype: DType):
    a = np.array(VALUES[dtype], dtype.numpy)
    np.testing.assert_array_equal(run_expression("tensor.bitwise_not", [a], dtype), ~a)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_fused_bit_ops_on_the_cupy_backend_match_numpy(fake, dtype):
    # one fused kernel (the fake CuPy evaluates its body) over a hash whose shift counts cross the width
    graph = kiln.trace(lambda ids, counts: ((ids ^ (ids >> counts)) << (counts - 1)) | ~(ids & 0x7F) + 1,
                       kiln.TensorSpec((4, 6), dtype), kiln.TensorSpec((6,), dtype))
    ids = np.array(VALUES[DType.of(dtype)][:4] * 6, dtype).reshape(6, 4).T.copy()
    counts = np.array([-1, 0, 3, 31, 32, 65], dtype)
    executable = CupyBackend().compile(graph)
    assert sum(op.name == "fused.elementwise" for op in executable.graph.ops) == 1
    np.testing.assert_array_equal(executable(ids, counts)[0], NumpyBackend().compile(graph)(ids, counts)[0])


def test_the_fused_bit_kernels_compile_as_cuda():
    # NVRTC (or nvcc) accepts the unsigned casts and ULL counts of the shift rules in a generated kernel
    compile_cuda = cuda_compiler()
    for dtype in ("int32", "int64"):
        graph = kiln.trace(lambda ids, counts: ((ids ^ (ids >> counts)) << counts) | ~(ids & 7),
                           kiln.TensorSpec(("N", 6), dtype), kiln.TensorSpec((6,), dtype))
        sources = kernel_sources(graph)
        assert len(sources) == 1, sorted(sources)
        for source in sources.values():
            compile_cuda(translation_unit(source), source.name)
