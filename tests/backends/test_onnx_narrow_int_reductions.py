"""Reductions of uint8, int8 and int16 tensors exported to ONNX run in onnxruntime, as torch computes them: ONNX's
``ReduceSum`` and ``ReduceProd`` have no 8- or 16-bit integer types and ``ReduceMax``/``ReduceMin`` no int16, so
onnxruntime refused the model ("Type 'tensor(int16)' of input parameter ... of operator (ReduceSum) ... is invalid");
they now compute in int32 and cast back (``backends/onnx/lowering_narrow_int.py``), wrapping around as torch's do.
SAM's ``SamOnnxModel(use_stability_score=True)`` sums masks with ``sum(-1, dtype=torch.int16)``."""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
from oracles import require, require_torch

CASES = {
    "int16 sum": lambda lib, t: t.sum(-1, dtype=lib.int16),
    "int16 sum of everything": lambda lib, t: t.sum(dtype=lib.int16),
    "stability score counts": lambda lib, t: (t > 0).sum(-1, dtype=lib.int16).sum(-1, dtype=lib.int32),
    "int16 max": lambda lib, t: t.amax(-1),
    "int16 min": lambda lib, t: t.amin(1),
    "int16 prod": lambda lib, t: t.prod(-1, dtype=lib.int16),
    "uint8 sum wrapping around": lambda lib, t: (t.abs() * 60).to(lib.uint8).sum(-1, dtype=lib.uint8),
    "int8 max": lambda lib, t: t.to(lib.int8).amax(1),
}


@pytest.mark.parametrize("case", CASES)
def test_narrow_integer_reduction_through_onnxruntime_as_torch(case):
    torch = require_torch()
    onnxruntime = require("onnxruntime")
    x = np.random.default_rng(0).integers(-5, 6, (3, 4, 5)).astype(np.int16)
    expected = CASES[case](torch, torch.tensor(x)).numpy()

    class Reduction(kiln.nn.Module):
        def forward(self, t):
            return CASES[case](kiln, t)

    buffer = io.BytesIO()
    kiln.onnx.export(Reduction(), (kiln.tensor(x),), buffer, input_names=["x"])
    (ours,) = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert ours.dtype == expected.dtype
    np.testing.assert_array_equal(ours, expected)
