"""The ``linalg`` dialect (``compiler/ops/linalg.py``) beyond the op table's forward and finite-difference checks.

PyTorch's ``torch.linalg`` in float64 as the oracle for every row and case (values, and gradients of a weighted sum,
batch broadcasting included); shape-rule errors (non-square, mismatched right-hand sides, ints, a symbolic n);
singular and indefinite matrices; print/parse; ONNX export (Det in onnxruntime, the refusals naming the op). The CuPy
table's calls into ``cupy.linalg``: ``tests/backends_cupy/test_linalg_on_fake_cupy.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

from ops.op_table import ROWS, Case, OpRow, cases, make_inputs, op_graph, size_bindings, weighted_sum
from oracles import require
from kiln.backends.numpy import NumpyBackend
from kiln.backends.numpy.lowering_linalg import LinAlgError
from kiln.compiler.autodiff import differentiate
from kiln.compiler.errors import LoweringError, ShapeError
from kiln.compiler.ir import Builder, DType, Graph, TensorType
from kiln.compiler.ir.parser import parse
from kiln.compiler.ir.printer import print_graph

NAMES = ("linalg.inv", "linalg.solve", "linalg.det", "linalg.logabsdet", "linalg.det_sign", "linalg.cholesky", "linalg.solve_triangular")


def torch_function(torch, name: str):
    """The op as PyTorch computes it (``cholesky`` on the symmetric part, which is what the kernel factors)."""
    triangular = lambda a, b, *, upper, unitriangular: torch.linalg.solve_triangular(a, b, upper=upper, unitriangular=unitriangular)
    return {
        "linalg.inv": torch.linalg.inv,
        "linalg.solve": torch.linalg.solve,
        "linalg.det": torch.linalg.det,
        "linalg.logabsdet": lambda a: torch.linalg.slogdet(a).logabsdet,
        "linalg.det_sign": lambda a: torch.linalg.slogdet(a).sign,
        "linalg.cholesky": lambda a: torch.linalg.cholesky((a + a.mT) / 2),
        "linalg.solve_triangular": triangular,
    }[name]


@pytest.mark.parametrize(("row", "case", "dtype"), cases([ROWS[name] for name in NAMES], dtypes=("f64",)))
def test_values_and_gradients_match_torch(row: OpRow, case: Case, dtype: str):
    torch = require("torch")
    graph, inputs, result = op_graph(row, case, dtype)
    differentiable = row.differentiable
    if differentiable:
        graph.outputs = [result, *differentiate(graph, weighted_sum(graph, result, "w"), inputs)]
    executable = NumpyBackend().compile(graph)
    for sizes in size_bindings(case):
        arrays = make_inputs(row, case, dtype, sizes)
        tensors = [torch.tensor(a, requires_grad=differentiable) for a in arrays]
        expected = torch_function(torch, row.name)(*tensors, **case.attrs)
        weights = np.random.default_rng(1).standard_normal(tuple(expected.shape))
        got = executable(*arrays, weights) if differentiable else executable(*arrays)
        np.testing.assert_allclose(got[0], expected.detach().numpy(), rtol=1e-10, atol=1e-12)
        if differentiable:
            grads = torch.autograd.grad((expected * torch.tensor(weights)).sum(), tensors)
            for ours, theirs in zip(got[1:], grads):
                np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-9, atol=1e-11)


def _build(name: str, *types_: TensorType, **attrs):
    graph = Graph("g")
    return Builder(graph).op(name, *[graph.add_input(t, f"x{i}") for i, t in enumerate(types_)], **attrs)


@pytest.mark.parametrize(("name", "operands", "message"), [
    ("linalg.inv", [TensorType((3, 4), DType.f32)], "square matrices"),
    ("linalg.det", [TensorType((3,), DType.f32)], "square matrices"),
    ("linalg.cholesky", [TensorType((2, 3, 3), DType.i64)], "cast it to float32"),
    ("linalg.inv", [TensorType(("N", "M", "M"), DType.f32)], "static matrix size"),
    ("linalg.inv", [TensorType(("N", 2), DType.f64)], "pass batch_dim=None for a single matrix"),
    ("linalg.solve", [TensorType((3, 3), DType.f32), TensorType((4, 2), DType.f32)], r"must be \(\.\.\., 3, k\)"),
    ("linalg.solve", [TensorType((3, 3), DType.f32), TensorType((3,), DType.f32)], r"must be \(\.\.\., 3, k\)"),
    ("linalg.solve", [TensorType((3, 3), DType.f32), TensorType((3, 2), DType.f64)], "one dtype"),
    ("linalg.solve_triangular", [TensorType((2, 3, 3), DType.f32), TensorType((4, 3, 1), DType.f32)], "must match the size of tensor b"),
])
def test_shape_rules_refuse_with_a_message(name, operands, message):
    with pytest.raises(ShapeError, match=message):
        _build(name, *operands)


@pytest.mark.parametrize(("name", "matrix", "message"), [
    ("linalg.inv", np.array([[1.0, 2.0], [2.0, 4.0]]), "linalg.inv: a matrix is singular"),
    ("linalg.cholesky", np.array([[1.0, 2.0], [2.0, 1.0]]), "linalg.cholesky: a matrix is not positive definite"),
])
def test_singular_and_indefinite_matrices_raise_one_kiln_error(name, matrix, message):
    graph = Graph("g")
    graph.outputs = [Builder(graph).op(name, graph.add_input(TensorType(("N", 2, 2), DType.f64), "a"))]
    with pytest.raises(LinAlgError, match=message):
        NumpyBackend().compile(graph)(np.stack([np.eye(2), matrix]))


def test_singular_matrices_have_zero_determinant_and_minus_infinite_logabsdet():
    graph = Graph("g")
    a = graph.add_input(TensorType((2, 2), DType.f64), "a")
    b = Builder(graph)
    graph.outputs = [b.op("linalg.det", a), b.op("linalg.det_sign", a), b.op("linalg.logabsdet", a)]
    det, sign, logabsdet = NumpyBackend().compile(graph)(np.array([[1.0, 2.0], [2.0, 4.0]]))
    assert det == 0 and sign == 0 and logabsdet == -np.inf


def test_print_parse_round_trip():
    graph = Graph("g")
    a, rhs = graph.add_input(TensorType(("N", 3, 3), DType.f64), "a"), graph.add_input(TensorType((3, 2), DType.f64), "b")
    b = Builder(graph)
    graph.outputs = [b.op("linalg.solve_triangular", a, rhs, upper=True, unitriangular=True), b.op("linalg.det_sign", a)]
    text = print_graph(graph)
    assert "\"linalg.solve_triangular\"(%a, %b)" in text and "upper = true" in text and "unitriangular = true" in text
    assert print_graph(parse(text)) == text


def _det_graph(dtype: DType, name: str = "linalg.det") -> Graph:
    graph = Graph("det")
    graph.outputs = [Builder(graph).op(name, graph.add_input(TensorType(("N", 3, 3), dtype), "a"))]
    return graph


@pytest.mark.parametrize("name", ["linalg.det", "linalg.det_sign", "linalg.logabsdet"])
def test_float32_determinants_export_as_onnx_det(name):
    from onnx_nodes import exported_sessions

    graph = _det_graph(DType.f32, name)
    proto, names, oracles = exported_sessions(graph)
    assert "Det" in {node.op_type for node in proto.graph.node}
    a = np.random.default_rng(0).standard_normal((4, 3, 3)).astype(np.float32) + 2 * np.eye(3, dtype=np.float32)
    (expected,) = NumpyBackend().compile(graph)(a)
    (got,) = oracles["onnxruntime"].run(None, {names[0]: a})
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["linalg.inv", "linalg.cholesky"])
def test_ops_without_an_onnx_operator_refuse_naming_the_op(name):
    from kiln.backends.onnx.export import graph_to_onnx

    graph = Graph("g")
    graph.outputs = [Builder(graph).op(name, graph.add_input(TensorType((3, 3), DType.f32), "a"))]
    with pytest.raises(LoweringError, match=f"{name}.*has no ONNX operator"):
        graph_to_onnx(graph)


def test_float64_determinant_export_refuses():
    from kiln.backends.onnx.export import graph_to_onnx

    with pytest.raises(LoweringError, match="linalg.det.*float32 only"):
        graph_to_onnx(_det_graph(DType.f64))
