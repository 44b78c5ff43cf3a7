"""``kiln.onnx.export`` of a model whose output nests ``None`` among its tensors (torchscale's ``RetNetDecoder``
returns ``x, {"inner_states": [...], "l_aux": [None, ...], "attn": None}``): the ``None`` leaves are dropped and the
tensors exported in their flattened order, as ``torch.onnx.export`` does; kiln refused the whole output. Checked
against torch 2.13's TorchScript exporter, both files run by onnxruntime."""

from __future__ import annotations

import io
import warnings

import numpy as np

import kiln
from oracles import libraries, require

INPUTS = np.random.default_rng(0).standard_normal((2, 3))


def _model(nn):
    class WithNones(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 4)

        def forward(self, x):
            y = self.linear(x)
            return y, {"states": [y * 2, None], "aux": None, "last": (None, x - 1)}

    return WithNones().double()


def _run(model_bytes):
    onnxruntime = require("onnxruntime")
    session = onnxruntime.InferenceSession(model_bytes)
    return [output.name for output in session.get_outputs()], session.run(None, {session.get_inputs()[0].name: INPUTS})


def test_none_outputs_are_dropped_as_torch_onnx_export_drops_them():
    torch = require("torch")
    kiln.manual_seed(0)
    model, twin = _model(kiln.nn), _model(libraries("torch")[1])
    twin.load_state_dict({key: torch.tensor(np.array(value)) for key, value in model.state_dict().items()})
    ours, theirs = io.BytesIO(), io.BytesIO()
    kiln.onnx.export(model, (kiln.tensor(INPUTS),), ours)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation
        torch.onnx.export(twin, (torch.tensor(INPUTS),), theirs, dynamo=False)
    (our_names, our_values), (their_names, their_values) = _run(ours.getvalue()), _run(theirs.getvalue())
    assert len(our_names) == len(their_names) == 3
    eager = model(kiln.tensor(INPUTS))
    for ours_value, theirs_value, expected in zip(our_values, their_values, (eager[0], *eager[1]["states"][:1],
                                                                             eager[1]["last"][1])):
        np.testing.assert_allclose(ours_value, theirs_value, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ours_value, expected.numpy(), rtol=1e-12, atol=1e-12)
