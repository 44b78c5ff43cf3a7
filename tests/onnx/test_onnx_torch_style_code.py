"""PyTorch-style tensor code exports to ONNX: index assignment with a step, an in-place ``masked_fill_``, ``einsum``,
``topk`` over a symbolic batch (a one-hot gather: bool ``OneHot``, which onnxruntime lacks, is an int64 one and a
``Cast``), ``cumsum``, ``floor``, ``%`` and ``sin``: onnxruntime and ``onnx.reference`` give what kiln computes, at
two batch sizes."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
from oracles import require


class TorchStyle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(6, 6)

    def forward(self, x):
        y = self.linear(x)
        y[:, ::2] = y[:, ::2].sin()
        y.masked_fill_(y > 1.0, 1.0)
        z = kiln.einsum("ni,nj->nij", y, x).sum(-1)
        values, indices = z.topk(3, dim=-1)
        return values.cumsum(-1) + z.floor().sum(-1, keepdim=True) + indices.double().float() + (x % 0.5).mean(-1, keepdim=True)


def test_torch_style_code_exports_and_runs_in_onnxruntime(tmp_path):
    onnx, ort = require("onnx"), require("onnxruntime")
    from onnx.reference import ReferenceEvaluator

    kiln.manual_seed(0)
    model = TorchStyle()
    path = str(tmp_path / "torch_style.onnx")
    proto = kiln.export_onnx(model, [kiln.TensorSpec(("N", 6))], path)
    onnx.checker.check_model(proto, full_check=True)
    assert {"OneHot", "TopK", "CumSum", "Sin", "Floor"} <= {node.op_type for node in proto.graph.node}
    session, reference, predict = ort.InferenceSession(path), ReferenceEvaluator(proto), kiln.compile(model)
    name = session.get_inputs()[0].name
    for batch in (1, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 6)).astype(np.float32)
        expected = predict(x)
        np.testing.assert_allclose(session.run(None, {name: x})[0], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(reference.run(None, {name: x})[0], expected, rtol=1e-5, atol=1e-5)
