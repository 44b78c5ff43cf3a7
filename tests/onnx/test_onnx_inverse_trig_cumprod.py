"""``tensor.atan``/``asin``/``acos`` and ``tensor.cumprod`` through ONNX.

Export: every op-table case becomes Atan, Asin, Acos (in float32; onnxruntime has no float64 kernels for them, so
float64 exports Cephes' atan from arithmetic and Where, with asin and acos through it), or (ONNX has no CumProd) a
``Scan`` whose body multiplies one slice after another, and onnxruntime and onnx's reference evaluator give the op
table's reference, symbolic dims included. The float64 forms stay within 2 ulps of NumPy over magnitudes from 1e-300 to
1e300, +-1, +-inf and NaN. The Scan multiplies in NumPy's order, so cumprod agrees bit for bit, with zeros, negatives, integers,
``reverse``, an empty axis and a symbolic scanned axis (size 0 included); ``exp(cumsum(log x))`` would fail all of
these but the positive floats. cumprod's gradient (zeros in the input) runs in both oracles too. Import: one-node
Atan/Asin/Acos models against both oracles (the conformance suite adds the official cases).
"""

from __future__ import annotations

import numpy as np
import pytest

from ops.op_table import ROWS, Case, OpRow, cases, op_graph
from onnx_nodes import (FLOAT, assert_exported_graph_matches_numpy, assert_matches_oracle, assert_op_row_exports, exported_sessions,
                        one_node_model, scan_gradient_graph)
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir import Builder, Graph, TensorType

OPS = ("tensor.atan", "tensor.asin", "tensor.acos", "tensor.cumprod")
ONNX_TYPES = {"tensor.atan": "Atan", "tensor.asin": "Asin", "tensor.acos": "Acos", "tensor.cumprod": "Scan"}
FLOAT32_ONLY = {"Atan", "Asin", "Acos"}
"""onnxruntime 1.32 runs these in float32 only."""
TOLERANCE = {"float32": {"rtol": 1e-6, "atol": 1e-6}, "float64": {"rtol": 1e-12, "atol": 1e-12}}


@pytest.mark.parametrize(("row", "case", "dtype"), cases([ROWS[name] for name in OPS]))
def test_export_matches_the_op_table_reference(row: OpRow, case: Case, dtype: str):
    graph, _, _ = op_graph(row, case, dtype)
    proto = assert_op_row_exports(graph, row, case, dtype, TOLERANCE)
    native = ONNX_TYPES[row.name] not in FLOAT32_ONLY or dtype == "f32"
    assert (ONNX_TYPES[row.name] in {node.op_type for node in proto.graph.node}) == native


SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 0.66, -0.66, 2.414213562373095, 2.4142135623730954,
                     1e-300, 5e-324, 1e300, -1e-10, 0.5, -0.999999, 1.5, 1 - 2.0**-52, -1 + 2.0**-53])


@pytest.mark.parametrize(("name", "function"), [("atan", np.arctan), ("asin", np.arcsin), ("acos", np.arccos)])
def test_float64_forms_are_within_two_ulps_of_numpy(name: str, function):
    rng = np.random.default_rng(3)
    x = np.concatenate([SPECIALS, rng.standard_normal(3000) * 10.0 ** rng.integers(-12, 12, 3000), rng.uniform(-1, 1, 3000),
                        1 - 10.0 ** -rng.uniform(1, 16, 500), -1 + 10.0 ** -rng.uniform(1, 16, 500)])
    graph = Graph(name)
    graph.outputs = [Builder(graph).op(f"tensor.{name}", graph.add_input(TensorType(("N",), "f64"), "x"))]
    _, names, oracles = exported_sessions(graph)
    with np.errstate(invalid="ignore"):
        expected = function(x)
    for oracle, session in oracles.items():
        with np.errstate(all="ignore"):  # the reference evaluator divides by 0 in Where branches not taken
            (got,) = session.run(None, {names[0]: x})
        numbers = ~np.isnan(expected)
        np.testing.assert_array_equal(np.isnan(got), ~numbers, err_msg=oracle)
        np.testing.assert_array_max_ulp(got[numbers], expected[numbers], maxulp=2)
        if oracle == "reference evaluator":  # onnxruntime's Where turns a selected -0.0 into +0.0
            np.testing.assert_array_equal(np.signbit(got[numbers]), np.signbit(expected[numbers]))


def _cumprod_graph(shape, dtype: str, axis: int, reverse: bool) -> Graph:
    graph = Graph("cumprod")
    graph.outputs = [Builder(graph).cumprod(graph.add_input(TensorType(shape, dtype), "x"), axis=axis, reverse=reverse)]
    return graph


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
def test_cumprod_export_is_exact_with_zeros_negatives_and_integers(dtype: str, reverse: bool):
    """Bit for bit what NumPy computes, along the symbolic axis too, at sizes 0, 1 and 6."""
    graph = _cumprod_graph(("N", 3), dtype, 0, reverse)
    _, names, oracles = exported_sessions(graph)
    run = NumpyBackend().compile(graph)
    for size in (0, 1, 6):
        x = np.random.default_rng(size).integers(-3, 4, (size, 3)).astype(dtype)
        if dtype.startswith("float"):
            x = x * 0.75 + np.where(x == 0, 0.0, 0.125).astype(dtype)  # exact zeros kept, negatives, non-integers
        (expected,) = run(x)
        for oracle, session in oracles.items():
            (got,) = session.run(None, {names[0]: x})
            assert got.dtype == expected.dtype and got.shape == (size, 3), oracle
            np.testing.assert_array_equal(got, expected, err_msg=oracle)


def test_cumprod_of_a_static_empty_axis_exports():
    graph = _cumprod_graph((2, 0, 3), "float32", 1, True)
    _, names, oracles = exported_sessions(graph)
    for oracle, session in oracles.items():
        assert session.run(None, {names[0]: np.ones((2, 0, 3), np.float32)})[0].shape == (2, 0, 3), oracle


def _mixed(b, x):
    """``atan(x) + asin(x / 4) acos(x / 4)``."""
    quarter = b.mul(x, b.scalar_like(0.25, x))
    return b.add(b.atan(x), b.mul(b.asin(quarter), b.acos(quarter)))


def _feeds(batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(batch)
    x, w = rng.uniform(-2, 2, (batch, 4)), rng.standard_normal((batch, 4))
    x[0, 1] = x[batch - 1, 3] = 0.0  # atan(0) + asin(0) acos(0) = 0: zeros inside both cumprods
    return [x, w]


def test_gradient_through_the_new_ops_runs_in_both_oracles():
    graph = scan_gradient_graph("cumprod_gradient", "float64", 4, _mixed, "cumprod")
    assert_exported_graph_matches_numpy(graph, [_feeds(1), _feeds(3)], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op_type", ["Atan", "Asin", "Acos"])
def test_unary_ops_import(op_type: str):
    x = np.concatenate([[-1.0, 1.0, 0.0, -0.0, 0.5, -0.999], np.random.default_rng(0).uniform(-1, 1, 8)]).astype(np.float32)
    if op_type == "Atan":
        x = np.concatenate([x * 30, [np.inf, -np.inf, 1e30]]).astype(np.float32)
    model = one_node_model(op_type, {"x": x}, {"y": FLOAT})
    for oracle in ("reference", "onnxruntime"):
        assert_matches_oracle(model, {"x": x}, oracle=oracle)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_frontend_compositions_export(dtype: str):
    """``atan2`` (signed zeros, axes, infinities), ``asinh``/``acosh``/``atanh`` and ``Tensor.cumprod`` traced over a
    symbolic batch run in both oracles as kiln computes them (the -0.0 of a Where aside: onnxruntime's drops its sign)."""
    import kiln

    def angles(y, x):
        return y.atan2(x), (y * 1e3).asinh() + (x.abs() + 1).acosh() + (y * 0.3).tanh().atanh(), (y * x).cumprod(0)

    graph = kiln.trace(angles, kiln.TensorSpec(("N", 6), dtype), kiln.TensorSpec(("N", 6), dtype))
    _, names, oracles = exported_sessions(graph)
    run = NumpyBackend().compile(graph)
    y = np.array([[0.0, -0.0, 1.0, -2.0, np.inf, -np.inf], [0.5, 0.0, -0.0, np.inf, 3.0, -1e-3]], dtype)
    x = np.array([[-0.0, -0.0, 0.0, -1.0, -np.inf, np.inf], [0.25, -3.0, -3.0, 1.0, -0.0, 0.0]], dtype)
    with np.errstate(all="ignore"):
        expected = run(y, x)
        for oracle, session in oracles.items():
            for got, want in zip(session.run(None, dict(zip(names, [y, x]))), expected):
                np.testing.assert_allclose(got, want, rtol=1e-6 if dtype == "float32" else 1e-14, atol=0, err_msg=oracle)
