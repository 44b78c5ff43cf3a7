"""Forward values of every op on the NumPy backend against the op table's NumPy references."""

from __future__ import annotations

import numpy as np
import pytest

from ops.op_table import OP_TABLE, ROWS, OpRow, Case, cases, concrete, make_inputs, op_graph, reference, size_bindings
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import ShapeError
from kiln.compiler.ir import Builder, DType, Graph, TensorType, verify
from kiln.compiler.ir.core import clone_graph
from kiln.compiler.ops import OPS, has_trait
from kiln.compiler.passes.decompose import Decompose

TOLERANCES = {np.dtype("float32"): {"rtol": 1e-6, "atol": 1e-6}, np.dtype("float64"): {"rtol": 1e-12, "atol": 1e-12}}
COMPOSITES = [row for row in OP_TABLE if OPS[row.name].is_composite]


def assert_matches(actual, expected, dtype: np.dtype) -> None:
    """Floats within the dtype's tolerance, integers and bools exactly; the shape always exactly."""
    actual = np.asarray(actual)
    assert actual.shape == np.shape(expected)
    if dtype in TOLERANCES:
        np.testing.assert_allclose(actual, expected, **TOLERANCES[dtype])
    else:
        np.testing.assert_array_equal(actual, expected)


def test_table_covers_every_op():
    # comm.* ops need ranks to talk to: tests/distributed covers them; the attention's backward (three results)
    # has tests/ops/test_attention_grad.py, layer norm's tests/ops/test_layer_norm_grad.py
    own_tests = {"tensor.constant", "nn.scaled_dot_product_attention_grad", "nn.layer_norm_grad"}
    own_tests |= {"linalg.eigh", "linalg.svd"}  # several results, vectors up to sign: tests/ops3/test_linalg_spectral_ops.py
    own_tests |= {"custom.vjp"}  # holds a backward sub-graph traced from a Function: tests/autodiff/test_custom_function.py
    own_tests |= {"fft.c2c", "fft.r2c", "fft.c2r"}  # (real, imaginary) pairs: tests/ops3/test_fft_ops.py
    expected = {name for name in OPS if name not in own_tests and not name.startswith(("optim.", "fused.", "comm."))}
    assert not expected - set(ROWS), f"ops without a row in tests/ops/op_table.py: {sorted(expected - set(ROWS))}"
    assert not set(ROWS) - expected, f"rows of ops that are not registered: {sorted(set(ROWS) - expected)}"


@pytest.mark.parametrize("row", OP_TABLE, ids=lambda row: row.name)
def test_table_agrees_with_traits(row: OpRow):
    assert row.differentiable == (not has_trait(row.name, "non_differentiable"))
    assert any(case.symbolic for case in row.cases), "every op needs a case with the symbolic batch dim N"


def numpy_backend(planned: bool) -> NumpyBackend:
    backend = NumpyBackend()
    backend.plan_memory = planned
    return backend


@pytest.mark.parametrize("planned", [True, False], ids=["planned", "kernels"])
@pytest.mark.parametrize(("row", "case", "dtype"), cases())
def test_forward_matches_reference(row: OpRow, case: Case, dtype: str, planned: bool):
    """Both code generators: over the memory plan (``out=`` emitters) and one lowering-table kernel call per op."""
    graph, _, result = op_graph(row, case, dtype)
    verify(graph)
    executable = numpy_backend(planned).compile(graph)
    for sizes in size_bindings(case):  # one executable for every batch size
        arrays = make_inputs(row, case, dtype, sizes)
        expected = reference(row, case, arrays, sizes)
        (actual,) = executable(*arrays)
        assert concrete(result.type.shape, sizes) == expected.shape, "the shape rule disagrees with the reference"
        assert np.asarray(actual).dtype == result.type.dtype.numpy, "the kernel's dtype disagrees with the IR type"
        assert_matches(actual, expected, result.type.dtype.numpy)


@pytest.mark.parametrize(("row", "case", "dtype"), cases(COMPOSITES))
def test_decomposition_matches_direct_kernel(row: OpRow, case: Case, dtype: str):
    direct, _, _ = op_graph(row, case, dtype)
    expanded = clone_graph(direct)
    assert Decompose().run(expanded)
    verify(expanded)
    assert not any(OPS[op.name].is_composite for op in expanded.ops)
    direct_executable, expanded_executable = NumpyBackend().compile(direct), NumpyBackend().compile(expanded)
    for sizes in size_bindings(case):
        arrays = make_inputs(row, case, dtype, sizes)
        (want,), (got,) = direct_executable(*arrays), expanded_executable(*arrays)
        assert np.asarray(got).dtype == np.asarray(want).dtype
        np.testing.assert_allclose(got, want, rtol=4 * TOLERANCES[np.dtype(DType.of(dtype).numpy)]["rtol"], atol=1e-6 if dtype == "f32" else 1e-12)


@pytest.mark.parametrize("value", [np.arange(6, dtype=np.float32).reshape(2, 3), np.array(2.5), np.array([True, False]), np.arange(4, dtype=np.int32)])
def test_constant(value: np.ndarray):
    graph = Graph("constant")
    x = graph.add_input(TensorType(value.shape, DType.of(value.dtype)), "x")
    b = Builder(graph)
    c = b.constant(value)
    assert c.type == TensorType(value.shape, DType.of(value.dtype))
    graph.outputs = [c, b.equal(x, c)]
    verify(graph)
    constant, same = NumpyBackend().compile(graph)(value.copy())
    np.testing.assert_array_equal(constant, value)
    assert np.asarray(constant).dtype == value.dtype and np.all(same)


@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_sgd_update(dtype: str):
    rng = np.random.default_rng(0)
    numpy_dtype = DType.of(dtype).numpy
    param, grad = (rng.standard_normal((3, 4)).astype(numpy_dtype) for _ in range(2))
    lr = np.asarray(0.1, dtype=numpy_dtype)
    graph = Graph("sgd")
    inputs = [graph.add_input(TensorType(a.shape, dtype), n) for a, n in ((param, "p"), (grad, "g"), (lr, "lr"))]
    graph.outputs = [Builder(graph).sgd_update(*inputs)]
    expanded = clone_graph(graph)
    Decompose().run(expanded)
    for compiled in (graph, expanded):
        (new_param,) = NumpyBackend().compile(compiled)(param, grad, lr)
        assert np.asarray(new_param).dtype == numpy_dtype
        np.testing.assert_allclose(new_param, param - lr * grad, **TOLERANCES[np.dtype(numpy_dtype)])
    assert has_trait("optim.sgd_update", "non_differentiable")


@pytest.mark.parametrize("name", ["tensor.div", "tensor.reduce_mean"])
def test_integer_division_and_mean_are_rejected(name: str):
    # NumPy would return float64 for int operands, against the IR's integer result type
    graph = Graph("ints")
    operands = [graph.add_input(TensorType((3,), "i32")) for _ in range(2 if name == "tensor.div" else 1)]
    with pytest.raises(ShapeError, match=f"{name} needs a floating-point operand"):
        Builder(graph).op(name, *operands)
