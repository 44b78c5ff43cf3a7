"""``kiln.cuda.is_bf16_supported`` as ``torch.cuda.is_bf16_supported`` (nanoGPT's train.py asks it to choose its
dtype): False without a GPU; on one, True from compute capability 8.0, else only with ``including_emulation``."""

from __future__ import annotations

import sys
import types

import pytest

import kiln
from oracles import require_torch


def test_without_a_gpu_as_torch(monkeypatch):
    torch = require_torch()
    monkeypatch.setattr(kiln.cuda, "is_available", lambda: False)
    assert kiln.cuda.is_bf16_supported() is False and kiln.cuda.is_bf16_supported(including_emulation=False) is False
    assert torch.cuda.is_available() or torch.cuda.is_bf16_supported() is False  # torch's CPU wheel answers the same


@pytest.mark.parametrize("capability, emulated, expected", [("90", False, True), ("75", False, False), ("75", True, True)])
def test_on_a_gpu_by_its_compute_capability(monkeypatch, capability, emulated, expected):
    fake_cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(Device=lambda: types.SimpleNamespace(compute_capability=capability)))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setattr(kiln.cuda, "is_available", lambda: True)
    assert kiln.cuda.is_bf16_supported(including_emulation=emulated) is expected
