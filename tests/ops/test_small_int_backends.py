"""uint8, int8 and int16 through the IR text and the backends: the printer and parser round trip, and the NumPy and
onnxruntime backends give PyTorch 2.13's values and dtypes (onnxruntime computing MatMul, Pow and Trilu in int32,
``backends/onnx/lowering_narrow_int.py``); an exported model keeps uint8 inputs and outputs."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import require, require_torch
import kiln
from kiln.compiler.ir.parser import parse
from kiln.compiler.ir.printer import print_graph
from kiln.compiler.ir.types import DType, TensorType

IMAGES = np.array([[200, 10, 255], [0, 128, 99]], np.uint8)
OFFSETS = np.array([-100, 5, 1], np.int8)

OPS = {  # name: a function of (uint8 images, int8 offsets) in either library
    "add mixed": lambda a, b: a + b,
    "add wraps": lambda a, b: a + 100,
    "mul": lambda a, b: a * a,
    "int16 mul wraps": lambda a, b: b.short() * 300,
    "neg": lambda a, b: -b,
    "true divide": lambda a, b: a / 3,
    "floor divide": lambda a, b: a // 7,
    "remainder": lambda a, b: a % 7,
    "sum": lambda a, b: a.sum(0),
    "prod": lambda a, b: b.prod(),
    "cumsum": lambda a, b: a.cumsum(1),
    "greater": lambda a, b: a > 128,
    "equal": lambda a, b: a == b.byte(),
    "bit and, shift": lambda a, b: (a & 0xF0) >> 4,
    "left shift int8": lambda a, b: b << 1,
    "bitwise not": lambda a, b: ~a,
    "right shift past the width": lambda a, b: a >> (b.byte() % 16),
    "int8 right shift past the width": lambda a, b: b >> (b.abs() + 5),
    "int8 left shift past the width": lambda a, b: b << (b.abs() + 5),
    "max": lambda a, b: a.max(1).values,
    "maximum": lambda a, b: a.maximum(b.byte()),
    "abs int8": lambda a, b: b.abs(),
    "cast from float": lambda a, b: (a.float() * 0.7).byte(),
    "where": lambda a, b: a.where(a > 100, b.byte()),
    "matmul": lambda a, b: a @ a.t(),
    "matmul int8": lambda a, b: b.reshape(3, 1) @ b.reshape(1, 3),
    "pow": lambda a, b: a ** 2,
    "pow int16": lambda a, b: b.short() ** 3,
    "clamp": lambda a, b: a.clamp(10, 200),
    "sort": lambda a, b: a.sort(1).values,
    "argmax": lambda a, b: a.argmax(1),
    "tril": lambda a, b: a.tril(),
    "transpose, slice": lambda a, b: a.t()[1:],
}


def torch_result(fn):
    torch = require_torch()
    return fn(torch.from_numpy(IMAGES), torch.from_numpy(OFFSETS)).numpy()


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
@pytest.mark.parametrize("name", list(OPS))
def test_backend_matches_torch(backend, name):
    if backend == "onnxruntime":
        require("onnxruntime")
    expected = torch_result(OPS[name])
    got = kiln.compile(OPS[name], backend=backend, batch_dim=None)(kiln.from_numpy(IMAGES), kiln.from_numpy(OFFSETS))
    got = np.asarray(got)  # compiled functions return arrays
    assert got.dtype == expected.dtype, f"{name} on {backend}: {got.dtype} vs torch's {expected.dtype}"
    np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=f"{name} on {backend}")


def test_the_ir_text_round_trips_small_int_types_and_constants():
    graph = kiln.trace(lambda a, b: ((a + b) * 3, a // 7, (a & 0xF0) >> 4, b.short() - 2),
                       kiln.TensorSpec(("N", 3), "uint8"), kiln.TensorSpec((3,), "int8"), name="preprocess")
    text = print_graph(graph)
    for fragment in ("tensor<Nx3xu8>", "tensor<3xi8>", "tensor<Nx3xi16>", "{dtype = i16}", "dense<240>"):
        assert fragment in text, fragment
    assert print_graph(parse(text)) == text
    assert parse(text).inputs[0].type == TensorType(("N", 3), DType.u8)


def test_a_uint8_model_exports_to_onnx_with_uint8_inputs_and_runs_in_onnxruntime(tmp_path):
    onnx, ort = require("onnx"), require("onnxruntime")

    def model(images):
        return images @ images.t(), images.float() / 255

    proto = kiln.export_onnx(model, [kiln.TensorSpec(("N", 3), "uint8")], str(tmp_path / "m.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    torch = require_torch()
    for rows in (2, 5):
        images = np.random.default_rng(rows).integers(0, 256, (rows, 3), dtype=np.uint8)
        ours = session.run(None, {session.get_inputs()[0].name: images})
        for got, expected in zip(ours, model(torch.from_numpy(images))):
            assert got.dtype == expected.numpy().dtype
            np.testing.assert_allclose(got, expected.numpy(), rtol=1e-6)
