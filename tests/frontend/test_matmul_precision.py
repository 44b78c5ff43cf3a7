"""``kiln.set_float32_matmul_precision`` / ``get_float32_matmul_precision`` as PyTorch's: the names, the default, the
value read back; unknown names refused (PyTorch only warns). On the NumPy and ONNX Runtime backends the setting
changes no result: float32 matmuls are float32 there whatever it says."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from oracles import require, require_torch


@pytest.fixture(autouse=True)
def default_precision():
    yield
    kiln.set_float32_matmul_precision("highest")


def test_set_and_get_answer_as_torchs():
    torch = require_torch()
    before = torch.get_float32_matmul_precision()
    try:
        assert kiln.get_float32_matmul_precision() == torch.get_float32_matmul_precision() == "highest"
        for precision in ("high", "medium", "highest", "medium"):
            assert kiln.set_float32_matmul_precision(precision) is torch.set_float32_matmul_precision(precision) is None
            assert kiln.get_float32_matmul_precision() == torch.get_float32_matmul_precision() == precision
    finally:
        torch.set_float32_matmul_precision(before)


def test_unknown_precisions_are_refused_saying_which_exist():
    kiln.set_float32_matmul_precision("high")
    with pytest.raises(ValueError, match="'highest', 'high', 'medium'"):
        kiln.set_float32_matmul_precision("low")
    with pytest.raises(TypeError, match="expects a str"):
        kiln.set_float32_matmul_precision(32)
    assert kiln.get_float32_matmul_precision() == "high"  # a refused call changes nothing


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_cpu_backends_compute_the_same_floats_at_every_precision(backend):
    if backend == "onnxruntime":
        require("onnxruntime")
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.Tanh(), nn.Linear(48, 8))
    x = np.random.default_rng(0).normal(size=(16, 64)).astype(np.float32)
    results = {}
    for precision in ("highest", "high", "medium"):
        kiln.set_float32_matmul_precision(precision)
        results[precision] = kiln.compile(model, backend=backend)(x)
    assert results["highest"].dtype == np.float32
    np.testing.assert_array_equal(results["high"], results["highest"])
    np.testing.assert_array_equal(results["medium"], results["highest"])
