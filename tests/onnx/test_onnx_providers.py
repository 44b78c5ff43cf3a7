"""The onnxruntime backend's execution provider: CUDA first when ``onnxruntime-gpu`` offers it, and it says which ran.

No GPU here: the CUDA case checks kiln's choice against a provider list as ``onnxruntime-gpu`` reports it.
"""

from __future__ import annotations

import logging

import numpy as np

from oracles import require
import kiln
import kiln.nn as nn


def test_cuda_comes_first_when_onnxruntime_gpu_offers_it(monkeypatch):
    onnxruntime = require("onnxruntime")
    from kiln.backends.onnx.runtime import providers

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    assert providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert providers() == ["CPUExecutionProvider"]


def test_the_backend_logs_the_provider_that_runs_the_step(caplog):
    require("onnxruntime")
    kiln.manual_seed(0)
    model = nn.Sequential([nn.Linear(3, 2)])
    step = kiln.compile_train_step(model, kiln.nn.functional.mse_loss, kiln.optim.SGD(model.parameters(), lr=0.1), backend="onnxruntime")
    with caplog.at_level(logging.INFO, logger="kiln"):
        step(np.ones((4, 3), np.float32), np.zeros((4, 2), np.float32))
    assert any("runs on CPUExecutionProvider" in record.getMessage() for record in caplog.records)
    assert list(step.compiled.values())[-1].executable.device == "cpu"
