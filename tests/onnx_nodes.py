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
