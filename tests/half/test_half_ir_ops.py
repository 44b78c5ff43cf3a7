"""Every op of the IR op table (``tests/ops/op_table.py``) that takes floats, run in float16 and bfloat16 on the
NumPy backend (which widens each half op to float32 and rounds its result once, ``widen-half``).

Oracle: the row's NumPy reference in float64 on the same half inputs, rounded to the half dtype -- PyTorch's CPU
semantics for one op (compute in float32, round once) differ from it only where float32's own error moves the
rounding: at most 1 ulp of the element, or of the tensor's largest element for a sum that cancels
(``half_compare.py``). Gradients: the autodiff pass's backward graph built in the half dtype against the same graph
in float64 on the same inputs and cotangent weights; a backward is several ops, each rounded, so 4 ulps.
Movement ops (``EXACT_IN_HALF``: never widened, their kernels run on half arrays) must be exact.
Random ops are checked against their own float32 draw rounded (``test_random_draws_are_float32_draws_rounded``).
"""

from __future__ import annotations

import numpy as np
import pytest

from half_compare import HALF, NUMPY_HALF, assert_half_close
from ops.op_table import OP_TABLE, Case, OpRow, gradient_graph, extra_inputs, make_inputs, op_graph, reference, size_bindings
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir.types import is_float_array_dtype
from kiln.compiler.passes.widen_half import EXACT_IN_HALF

RANDOM = {"tensor.random_uniform", "nn.dropout"}
FLOAT_ROWS = [row for row in OP_TABLE if any(d in row.dtypes for d in ("f32", "f64")) and row.name not in RANDOM]
OUTPUT_ULPS, GRAD_ULPS = 1, 4
CANCELLING_BACKWARDS = {"nn.softmax_grad": 8, "linalg.qr_q": 8}
"""Backwards whose half-rounded terms largely cancel (``y (g - sum(y g))`` of two elements, the Q factor's
orthogonality terms): 8 ulps of the gradient's largest element in bfloat16 cases."""


def half_cases(rows: list[OpRow], grad: bool = False) -> list:
    return [pytest.param(row, case, dtype, id=f"{row.name}-{case.id}-{dtype}") for row in rows for case in row.cases
            if not grad or (row.differentiable and case.grad) for dtype in HALF]


def widened(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """The half inputs as float64 (the same values), integers and bools as they are."""
    return [a.astype(np.float64) if is_float_array_dtype(a.dtype) else a for a in arrays]


def numpy_backend(planned: bool) -> NumpyBackend:
    backend = NumpyBackend()
    backend.plan_memory = planned
    return backend


@pytest.mark.parametrize(("row", "case", "dtype"), half_cases([row for row in FLOAT_ROWS if row.name in EXACT_IN_HALF]))
def test_movement_kernels_run_on_half_arrays_in_both_code_generators(row: OpRow, case: Case, dtype: str):
    """Ops ``widen-half`` leaves in half run their kernels on float16/bfloat16 arrays: the memory-planned ``out=``
    emitters and the one-kernel-call-per-op generator must both return the exact elements."""
    graph, _, result = op_graph(row, case, dtype)
    for planned in (True, False):
        executable = numpy_backend(planned).compile(graph)
        for sizes in size_bindings(case):
            arrays = make_inputs(row, case, dtype, sizes)
            (actual,) = executable(*arrays)
            assert np.asarray(actual).dtype == result.type.dtype.numpy
            expected = reference(row, case, widened(arrays), sizes)
            np.testing.assert_array_equal(np.asarray(actual).astype(expected.dtype), expected, err_msg=f"planned={planned}")


@pytest.mark.parametrize(("row", "case", "dtype"), half_cases(FLOAT_ROWS))
def test_forward_is_the_float64_result_rounded(row: OpRow, case: Case, dtype: str):
    graph, _, result = op_graph(row, case, dtype)
    executable = NumpyBackend().compile(graph)
    for sizes in size_bindings(case):
        arrays = make_inputs(row, case, dtype, sizes)
        (actual,) = executable(*arrays)
        actual = np.asarray(actual)
        assert actual.dtype == result.type.dtype.numpy, "the kernel's dtype disagrees with the IR type"
        expected = reference(row, case, widened(arrays), sizes)
        if not np.issubdtype(expected.dtype, np.floating):
            np.testing.assert_array_equal(actual, expected)
            continue
        rounded = expected.astype(actual.dtype).astype(np.float64) if is_float_array_dtype(actual.dtype) else expected
        if row.name in EXACT_IN_HALF:
            np.testing.assert_array_equal(actual.astype(np.float64), rounded)
        elif is_float_array_dtype(actual.dtype) and actual.dtype in NUMPY_HALF.values():
            assert_half_close(actual, rounded, dtype, OUTPUT_ULPS, f"{row.name} {case.id}")
        else:
            np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("row", "case", "dtype"), half_cases(FLOAT_ROWS, grad=True))
def test_gradient_matches_float64_backward(row: OpRow, case: Case, dtype: str):
    sizes = size_bindings(case)[0]
    half_graph, wrt = gradient_graph(row, case, dtype)
    double_graph, _ = gradient_graph(row, case, "f64")
    arrays = make_inputs(row, case, dtype, sizes)
    weights = extra_inputs(half_graph, arrays, sizes, seed=row.name)
    _, *grads = NumpyBackend().compile(half_graph)(*arrays, *weights)
    _, *expected = NumpyBackend().compile(double_graph)(*widened(arrays), *widened(weights))
    for index, grad, want in zip(wrt, grads, expected):
        ulps = CANCELLING_BACKWARDS.get(row.name, GRAD_ULPS)
        assert_half_close(grad, np.asarray(want, dtype=np.float64), dtype, ulps, f"{row.name} {case.id} d/d operand {index}")


@pytest.mark.parametrize("dtype", HALF)
def test_random_draws_are_float32_draws_rounded(dtype: str):
    row = next(row for row in OP_TABLE if row.name == "tensor.random_uniform")
    case = row.cases[0]
    graph, _, _ = op_graph(row, case, "f32")
    arrays = make_inputs(row, case, "f32", size_bindings(case)[0])
    (single,) = NumpyBackend().compile(graph)(*arrays)
    half_case = Case(case.shapes, {**case.attrs, "dtype": dtype}, operand_dtypes=case.operand_dtypes)
    half_graph, _, _ = op_graph(row, half_case, "f32")
    (half,) = NumpyBackend().compile(half_graph)(*arrays)
    assert np.asarray(half).dtype == NUMPY_HALF[dtype]
    np.testing.assert_array_equal(np.asarray(half), np.asarray(single).astype(NUMPY_HALF[dtype]))
