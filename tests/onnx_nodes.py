"""One-node ONNX models for importer tests, and the oracles they are checked against."""

from __future__ import annotations

import numpy as np

from oracles import require

OPSET = 22
FLOAT, INT32, INT64 = 1, 6, 7
"""ONNX element types (``onnx.TensorProto``) of declared outputs."""


def one_node_model(op_type: str, inputs: dict[str, np.ndarray], outputs: dict[str, int], opset: int = OPSET, rank: int | None = None, **attrs):
    """A one-node model over ``inputs`` (name -> example array) with ``outputs`` (name -> ONNX element type).

    Outputs are declared with unnamed dims (the importer infers shapes), ``rank`` of them (default: the first input's).
    """
    onnx = require("onnx")
    from onnx import helper

    declared = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape) for name, a in inputs.items()]
    rank = next(iter(inputs.values())).ndim if rank is None else rank
    results = [helper.make_tensor_value_info(name, element, [f"{name}{axis}" for axis in range(rank)]) for name, element in outputs.items()]
    node = helper.make_node(op_type, list(inputs), list(outputs), **attrs)
    graph = helper.make_graph([node], op_type.lower(), declared, results)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=onnx.IR_VERSION)


def oracle_outputs(model, inputs: dict[str, np.ndarray], oracle: str = "reference") -> list[np.ndarray]:
    """The model's outputs from ONNX's reference evaluator, or from onnxruntime."""
    if oracle == "onnxruntime":
        session = require("onnxruntime").InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, inputs)
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, inputs)


def assert_matches_oracle(model, inputs: dict[str, np.ndarray], rtol: float = 1e-5, atol: float = 1e-6, oracle: str = "reference") -> None:
    """kiln's outputs (importer and NumPy backend) equal the oracle's: dtypes, shapes and values."""
    from kiln.backends.onnx.backend import KilnBackend

    expected = oracle_outputs(model, inputs, oracle)
    got = KilnBackend.run_model(model, list(inputs.values()))
    assert len(got) == len(expected)
    for actual, wanted in zip(got, expected):
        assert actual.dtype == wanted.dtype and actual.shape == wanted.shape
        np.testing.assert_allclose(actual, wanted, rtol=rtol, atol=atol)


def exported_sessions(graph):
    """A kiln graph exported to ONNX, checked as standard ONNX (no custom domains), with onnxruntime and the reference
    evaluator on it: ``(proto, input names, {oracle name: session})``."""
    from kiln.backends.onnx.export import graph_to_onnx

    onnx, ort = require("onnx"), require("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    proto = graph_to_onnx(graph)
    onnx.checker.check_model(proto, full_check=True)
    assert {node.domain for node in proto.graph.node} <= {""}
    names = [i.name for i in proto.graph.input]
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return proto, names, {"onnxruntime": session, "reference evaluator": ReferenceEvaluator(proto)}


def scan_gradient_graph(name: str, dtype: str, width: int, mixed, scan: str):
    """``(loss, d loss/dx)`` of ``loss = sum(w * scan(scan(mixed(b, x), axis=1), axis=0, reverse=True))`` over
    ``x, w`` of shape ``(N, width)``: the backward of ``mixed``'s ops and of ``scan`` (``"cumsum"``, ``"cumprod"``)
    both ways, along the symbolic axis and a static one."""
    from kiln.compiler.autodiff import differentiate
    from kiln.compiler.ir import Graph, TensorType
    from kiln.compiler.ir.builder import Builder

    graph = Graph(name)
    x = graph.add_input(TensorType(("N", width), dtype), "x")
    weights = graph.add_input(TensorType(("N", width), dtype), "w")
    b = Builder(graph)
    scanned = getattr(b, scan)(getattr(b, scan)(mixed(b, x), axis=1), axis=0, reverse=True)
    loss = b.reduce_sum(b.mul(scanned, weights), axes=None)
    graph.outputs = [loss, *differentiate(graph, loss, [x])]
    return graph


def assert_exported_graph_matches_numpy(graph, feeds, rtol: float, atol: float) -> None:
    """``graph`` exported and run by onnxruntime and the reference evaluator on each list of ``feeds``, against the
    NumPy backend's outputs for them (which the op-table tests check against torch)."""
    from kiln.backends.numpy import NumpyBackend

    _, names, oracles = exported_sessions(graph)
    run = NumpyBackend().compile(graph)
    for arrays in feeds:
        expected = run(*arrays)
        for oracle, session in oracles.items():
            for got, want in zip(session.run(None, dict(zip(names, arrays))), expected):
                np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=oracle)


def assert_op_row_exports(graph, row, case, dtype: str, tolerance: dict[str, dict[str, float]]):
    """An op-table row's graph exported and run by both oracles at one and four rows of a symbolic batch (or once),
    against the row's reference with ``tolerance`` per result dtype (exact for others); returns the ONNX model."""
    from ops.op_table import concrete, make_inputs, reference

    proto, names, oracles = exported_sessions(graph)
    for sizes in ({"N": 1}, {"N": 4}) if case.symbolic else ({},):
        arrays = make_inputs(row, case, dtype, sizes)
        expected = reference(row, case, arrays, sizes)
        for oracle, session in oracles.items():
            (got,) = session.run(None, dict(zip(names, arrays)))
            assert got.dtype == expected.dtype and got.shape == expected.shape == concrete(graph.outputs[0].type.shape, sizes)
            np.testing.assert_allclose(got, expected, err_msg=oracle, **tolerance.get(str(expected.dtype), {"rtol": 0, "atol": 0}))
    return proto
