"""``tensor.sin``/``cos``/``floor``/``ceil``/``round`` and ``tensor.cumsum`` through ONNX, both ways.

Export: every op-table case of the six ops becomes Sin, Cos, Floor, Ceil, Round and CumSum (axis a constant int64
input, ``reverse`` an attribute), and onnxruntime and onnx's reference evaluator give the op table's reference, symbolic
dims included; a gradient through all of them (cumsum's VJP is the reverse cumsum) runs in onnxruntime too. Import:
one-node models, CumSum's ``exclusive`` included, against both oracles. Round is half to even everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from ops.op_table import ROWS, Case, OpRow, cases, op_graph
from onnx_nodes import (FLOAT, INT32, assert_exported_graph_matches_numpy, assert_matches_oracle, assert_op_row_exports, exported_sessions,
                        one_node_model, scan_gradient_graph)
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir import Builder, Graph, TensorType

OPS = ("tensor.sin", "tensor.cos", "tensor.floor", "tensor.ceil", "tensor.round", "tensor.cumsum")
ONNX_TYPES = {"tensor.sin": "Sin", "tensor.cos": "Cos", "tensor.floor": "Floor", "tensor.ceil": "Ceil", "tensor.round": "Round",
              "tensor.cumsum": "CumSum"}
TOLERANCE = {"float32": {"rtol": 1e-6, "atol": 1e-6}, "float64": {"rtol": 1e-12, "atol": 1e-12}}
HALVES = np.array([-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, -0.49, 0.51, 2.0, -7.0])
HALF_TO_EVEN = np.array([-4.0, -2.0, -2.0, -0.0, 0.0, 2.0, 2.0, 4.0, -0.0, 1.0, 2.0, -7.0])


@pytest.mark.parametrize(("row", "case", "dtype"), cases([ROWS[name] for name in OPS]))
def test_export_matches_the_op_table_reference(row: OpRow, case: Case, dtype: str):
    graph, _, _ = op_graph(row, case, dtype)
    proto = assert_op_row_exports(graph, row, case, dtype, TOLERANCE)
    assert ONNX_TYPES[row.name] in {node.op_type for node in proto.graph.node}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_exports_half_to_even(dtype: str):
    graph = Graph("round")
    graph.outputs = [Builder(graph).round(graph.add_input(TensorType(("N",), dtype), "x"))]
    _, names, oracles = exported_sessions(graph)
    x = HALVES.astype(dtype)
    (kiln_result,) = NumpyBackend().compile(graph)(x)
    np.testing.assert_array_equal(kiln_result, HALF_TO_EVEN.astype(dtype))
    for oracle, session in oracles.items():
        np.testing.assert_array_equal(session.run(None, {names[0]: x})[0], HALF_TO_EVEN.astype(dtype), err_msg=oracle)


def _mixed(b, x):
    """``sin(x) round(x) + cos(x) (floor(x) - ceil(x))``: cos and sin in the backward, the step functions' zeros."""
    return b.add(b.mul(b.sin(x), b.round(x)), b.mul(b.cos(x), b.sub(b.floor(x), b.ceil(x))))


def _feeds(batch: int) -> list[np.ndarray]:
    rng = np.random.default_rng(batch)
    x = (rng.integers(-3, 3, (batch, 3)) + rng.uniform(0.1, 0.4, (batch, 3))).astype(np.float32)
    return [x, rng.standard_normal((batch, 3)).astype(np.float32)]


def test_gradient_through_the_new_ops_runs_in_onnxruntime():
    graph = scan_gradient_graph("scan_gradient", "float32", 3, _mixed, "cumsum")
    assert_exported_graph_matches_numpy(graph, [_feeds(1), _feeds(5)], rtol=1e-5, atol=1e-5)


def _with_constant(model, name: str, value: np.ndarray):
    """``name`` turned from a graph input into an initializer (a constant, as the importer needs CumSum's axis)."""
    from onnx import numpy_helper

    model.graph.initializer.append(numpy_helper.from_array(value, name))
    inputs = [i for i in model.graph.input if i.name != name]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    return model


@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, -1, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_cumsum_imports_with_every_attribute(axis, reverse, exclusive, dtype):
    x = np.random.default_rng(axis + 3).integers(-9, 10, (3, 4, 2)).astype(dtype)
    model = one_node_model("CumSum", {"x": x, "axis": np.array(axis, np.int64)}, {"y": FLOAT if dtype == np.float32 else INT32},
                           rank=3, exclusive=exclusive, reverse=reverse)
    model = _with_constant(model, "axis", np.array(axis, np.int64))
    for oracle in ("reference", "onnxruntime"):
        assert_matches_oracle(model, {"x": x}, rtol=0, atol=0, oracle=oracle)


@pytest.mark.parametrize("op_type", ["Sin", "Cos", "Floor", "Ceil", "Round"])
def test_unary_ops_import(op_type: str):
    x = np.concatenate([HALVES, np.random.default_rng(0).standard_normal(8) * 4]).astype(np.float32)
    model = one_node_model(op_type, {"x": x}, {"y": FLOAT})
    for oracle in ("reference", "onnxruntime"):
        assert_matches_oracle(model, {"x": x}, oracle=oracle)


def test_exclusive_cumsum_along_a_symbolic_dim_is_refused_by_name():
    from onnx import TensorProto, helper

    from kiln.backends.onnx.importer import OnnxImportError
    from kiln.backends.onnx.backend import KilnBackend

    node = helper.make_node("CumSum", ["x", "axis"], ["y"], exclusive=1)
    graph = helper.make_graph([node], "cumsum", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
                              [helper.make_tensor("axis", TensorProto.INT64, [], [0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    with pytest.raises(OnnxImportError, match="CumSum with exclusive=1 along the symbolic dim N is not supported"):
        KilnBackend.prepare(model).run([np.ones((2, 3), np.float32)])
