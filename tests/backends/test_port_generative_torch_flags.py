"""dcgan/main.py's preamble with kiln's imports: ``import kiln.backends.cudnn as cudnn``, ``cudnn.benchmark = True``,
``kiln.backends.mps.is_available()`` and the device it picks; the flags answer as torch's CPU build and change nothing."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from oracles import require_torch


@pytest.mark.parametrize("library", ["torch", "kiln"])
def test_dcgan_preamble_runs_and_picks_the_cpu(library):
    lib = require_torch() if library == "torch" else kiln
    cudnn = importlib.import_module(f"{library}.backends.cudnn")
    lib.manual_seed(999)
    lib.cuda.manual_seed_all(999)
    cudnn.benchmark = True
    use_mps = lib.backends.mps.is_available()
    device = lib.device("cuda:0") if lib.cuda.is_available() else lib.device("mps") if use_mps else lib.device("cpu")
    assert str(device) == "cpu"
    cudnn.benchmark = False


def test_flags_default_and_answer_as_torchs_cpu_build():
    torch = require_torch()
    import kiln.backends.cudnn as cudnn

    for name in ("benchmark", "deterministic", "enabled", "allow_tf32"):
        assert getattr(cudnn, name) == getattr(torch.backends.cudnn, name), name
    assert cudnn.is_available() is torch.backends.cudnn.is_available() is False
    assert cudnn.version() is torch.backends.cudnn.version() is None
    assert kiln.backends.mps.is_available() is torch.backends.mps.is_available() is False
    assert kiln.backends.mps.is_built() is False


def test_the_flags_change_no_result():
    import kiln.backends.cudnn as cudnn

    kiln.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    x = np.random.default_rng(0).normal(size=(2, 1, 5, 5)).astype(np.float32)
    before = kiln.compile(model)(x)
    try:
        cudnn.benchmark = cudnn.deterministic = True
        np.testing.assert_array_equal(kiln.compile(model)(x), before)
    finally:
        cudnn.benchmark = cudnn.deterministic = False
