"""``kiln.onnx.export`` hard-codes a Python bool, number or None among ``args`` into the model, as torch 2.13's
default exporter does (``dynamo=True``: ``torch.export`` specializes non-tensor arguments); kiln made each one an
input, so a flag that picks a path (HF Longformer's ``is_global_attn``) became a traced tensor and ``if flag:``
refused to trace. The exported model computes torch's eager result for those arguments."""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
from oracles import libraries, require


def flagged(nn):
    class Flagged(nn.Module):
        def forward(self, x, flag, scale=None, shift=0.5):
            return x * 2 if flag else x - (scale or 0) + shift

    return Flagged()


@pytest.mark.parametrize("args", [(True,), (False, None), (False, 3.0, 1)], ids=["bool", "bool and None", "numbers"])
def test_python_arguments_are_hard_coded(args):
    onnx, onnxruntime = require("onnx"), require("onnxruntime")
    x = np.array([1.0, -2.0, 3.0], np.float32)
    exported = io.BytesIO()
    kiln.onnx.export(flagged(kiln.nn), (kiln.tensor(x), *args), exported)
    assert [i.name for i in onnx.load_from_string(exported.getvalue()).graph.input] == ["x"]
    torch, nn, F = libraries("torch")
    expected = flagged(nn)(torch.tensor(x), *args).numpy()
    ours = onnxruntime.InferenceSession(exported.getvalue()).run(None, {"x": x})[0]
    np.testing.assert_allclose(ours, expected, rtol=1e-6)


def test_input_names_name_the_tensor_inputs_only():
    onnx = require("onnx")
    exported = io.BytesIO()
    kiln.onnx.export(flagged(kiln.nn), (kiln.ones(3), False, 2.0), exported, input_names=["values"])
    assert [i.name for i in onnx.load_from_string(exported.getvalue()).graph.input] == ["values"]
