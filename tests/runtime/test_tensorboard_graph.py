"""``SummaryWriter.add_graph``: the traced kiln graph as a ``GraphDef`` that TensorBoard reads back
(``EventAccumulator.Graph``) and its Graphs plugin prepares for display, node for node and edge for edge."""

from __future__ import annotations

import kiln
import kiln.nn as nn
from kiln.compiler.ir.printer import print_graph
from kiln.frontend.trace import TensorSpec, trace
from kiln.runtime.tensorboard_graph import graph_def
from kiln.utils.tensorboard import SummaryWriter
from oracles import require


def _read_graph(log_dir):
    event_accumulator = require("tensorboard.backend.event_processing.event_accumulator")
    graph = event_accumulator.EventAccumulator(str(log_dir)).Reload().Graph()
    process_graph = require("tensorboard.backend.process_graph")
    process_graph.prepare_graph_for_ui(graph, limit_attr_size=1024, large_attrs_key="_too_large_attrs")  # as served
    return graph


def _shapes(node):
    return [[dim.size for dim in shape.dim] for shape in node.attr["_output_shapes"].list.shape]


def test_a_sequential_model_graph(tmp_path, capsys):
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with SummaryWriter(tmp_path) as writer:
        writer.add_graph(model, kiln.randn(5, 4), verbose=True)
    assert 'tensor.matmul' in capsys.readouterr().out  # verbose prints kiln's IR
    nodes = {node.name: node for node in _read_graph(tmp_path).node}
    kiln_graph = trace(model, TensorSpec((5, 4)))
    assert len(nodes) == len(kiln_graph.inputs) + len(kiln_graph.ops) + 1
    assert [nodes[name].op for name in ("input", "0/weight", "0/bias", "2/weight", "2/bias", "output0")] == [
        "Input", "Parameter", "Parameter", "Parameter", "Parameter", "Output"
    ]  # fmt: skip
    assert [node.op for node in nodes.values() if node.op.startswith("tensor.")] == [op.name for op in kiln_graph.ops]
    assert list(nodes["matmul_1"].input) == ["input", "transpose_0"]
    assert list(nodes["transpose_0"].input) == ["0/weight"] and nodes["transpose_0"].attr["perm"].s == b"[1, 0]"
    assert list(nodes["output0"].input) == ["add_6"]
    assert _shapes(nodes["matmul_1"]) == [[5, 3]] and _shapes(nodes["0/bias"]) == [[3]]
    assert nodes["input"].attr["dtype"].type == 1  # DT_FLOAT


def test_symbolic_dims_and_multiple_results():
    graph_pb2 = require("tensorboard.compat.proto.graph_pb2")

    def decompose(x):
        eigenvalues, eigenvectors = kiln.linalg.eigh(x @ x.transpose(-1, -2))
        return eigenvalues.sum() + eigenvectors.sum()

    kiln_graph = trace(decompose, TensorSpec(("N", 3, 3), "float64"))
    nodes = {node.name: node for node in graph_pb2.GraphDef.FromString(graph_def(kiln_graph, 1)).node}
    (input_shape,) = nodes["x"].attr["_output_shapes"].list.shape
    assert [(dim.size, dim.name) for dim in input_shape.dim] == [(-1, "N"), (3, ""), (3, "")]
    assert nodes["x"].attr["dtype"].type == 2  # DT_DOUBLE
    (eigh,) = [node for node in nodes.values() if node.op == "linalg.eigh"]
    assert len(_shapes(eigh)) == 2, print_graph(kiln_graph)
    consumers = [name for node in nodes.values() for name in node.input if name.startswith(eigh.name)]
    assert sorted(consumers) == [eigh.name, eigh.name + ":1"]  # the second result is named ``node:1``
