"""``tensor.argsort`` exported to ONNX: ``TopK(x, k = the sorted axis' size, largest = descending, sorted = 1)``'s Indices.

Every op-table case (ties, NaN and +-inf among the floats, many ties among the ints, symbolic dims off the sorted
axis, an empty sorted axis) runs in onnxruntime and in onnx's reference evaluator and gives the op table's stable,
NaN-largest reference. The ONNX spec breaks TopK's ties by the lower index, in both directions, as a stable sort does;
it says nothing of NaN, so the written-out NaN orders below pin what both runtimes do (NaN the largest, as PyTorch).
The importer does not read TopK.
"""

from __future__ import annotations

import numpy as np
import pytest

from ops.op_table import ROWS, Case, OpRow, cases, op_graph, reference
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir import Builder, Graph, TensorType
from onnx_nodes import assert_op_row_exports, exported_sessions

KEYS = np.array([2.0, np.nan, -0.0, 2.0, -np.inf, 0.0, np.nan, np.inf, -1.0, 2.0, 0.0])
ORDERS = {False: [4, 8, 2, 5, 10, 0, 3, 9, 7, 1, 6], True: [1, 6, 7, 0, 3, 9, 2, 5, 10, 8, 4]}
"""Written out, as in tests/ops3/test_argsort.py: ties and NaNs in their original order both ways."""


def one_op(shape, dtype: str, **attrs) -> Graph:
    graph = Graph("argsort")
    graph.outputs = [Builder(graph).argsort(graph.add_input(TensorType(shape, dtype), "x"), **attrs)]
    return graph


@pytest.mark.parametrize(("row", "case", "dtype"), cases([ROWS["tensor.argsort"]]))
def test_export_matches_the_op_table_reference(row: OpRow, case: Case, dtype: str):
    graph, _, _ = op_graph(row, case, dtype)
    assert graph.outputs[0].type.dtype.numpy == np.int64
    proto = assert_op_row_exports(graph, row, case, dtype, {})  # indices: exactly the reference's
    (top_k,) = [node for node in proto.graph.node if node.op_type == "TopK"]
    attrs = {a.name: a.i for a in top_k.attribute}
    assert attrs["largest"] == int(case.attrs["descending"]) and attrs["sorted"] == 1


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("dtype", ["f32", "f64"])
def test_ties_and_nan_order_as_pytorch_in_both_runtimes(dtype: str, descending: bool):
    graph = one_op(("N", len(KEYS)), dtype, axis=-1, descending=descending)
    _, names, oracles = exported_sessions(graph)
    x = np.stack([KEYS, KEYS, KEYS]).astype(np.float32 if dtype == "f32" else np.float64)
    (kiln_result,) = NumpyBackend().compile(graph)(x)
    np.testing.assert_array_equal(kiln_result, [ORDERS[descending]] * 3)
    for oracle, session in oracles.items():
        np.testing.assert_array_equal(session.run(None, {names[0]: x})[0], [ORDERS[descending]] * 3, err_msg=oracle)


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("axis", [0, 1])
def test_long_lanes_of_ties_sort_stably_in_both_runtimes(axis: int, descending: bool):
    """500 elements a lane, 4 distinct values and NaN: past any small-input path of onnxruntime's TopK."""
    shape = [3, 3]
    shape[axis] = 500
    graph = one_op(tuple(shape), "f32", axis=axis, descending=descending)
    _, names, oracles = exported_sessions(graph)
    x = np.random.default_rng(axis + 2 * descending).choice([np.nan, -1.0, 0.0, 1.0, 3.0], shape).astype(np.float32)
    (expected,) = NumpyBackend().compile(graph)(x)
    np.testing.assert_array_equal(expected, reference(ROWS["tensor.argsort"], Case((tuple(shape),), {"axis": axis, "descending": descending}), [x]))
    for oracle, session in oracles.items():
        np.testing.assert_array_equal(session.run(None, {names[0]: x})[0], expected, err_msg=oracle)
