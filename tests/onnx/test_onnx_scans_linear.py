"""``tensor.logcumsumexp``, ``tensor.decayed_cumsum`` and ``tensor.cumargmax``/``cumargmin`` through ONNX: each a
``Scan`` (``backends/onnx/lowering_scan.py``), run by onnxruntime and onnx's reference evaluator on every op-table case
(symbolic dims, the scanned one too, an empty axis, reverse, ints), against the table's reference."""

from __future__ import annotations

import numpy as np
import pytest

from ops.op_table import ROWS, Case, OpRow, cases, op_graph
from onnx_nodes import assert_op_row_exports

OPS = ("tensor.logcumsumexp", "tensor.decayed_cumsum", "tensor.cumargmax", "tensor.cumargmin")
TOLERANCE = {"float32": {"rtol": 1e-5, "atol": 1e-6}, "float64": {"rtol": 1e-12, "atol": 1e-12}}


@pytest.mark.parametrize(("row", "case", "dtype"), cases([ROWS[name] for name in OPS]))
def test_export_matches_the_op_table_reference(row: OpRow, case: Case, dtype: str):
    graph, _, _ = op_graph(row, case, dtype)
    proto = assert_op_row_exports(graph, row, case, dtype, TOLERANCE)
    assert "Scan" in {node.op_type for node in proto.graph.node}
