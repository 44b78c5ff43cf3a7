"""``kiln.accelerator`` (``torch.accelerator``): the device choice of current pytorch/examples (vae, mnist) runs with
kiln's imports and answers as torch's CPU build here; with a GPU for CuPy it names the CUDA device."""

from __future__ import annotations

import pytest

import kiln
from oracles import require_torch


@pytest.mark.parametrize("library", ["torch", "kiln"])
def test_vae_device_choice_runs_and_picks_the_cpu(library):
    lib = require_torch() if library == "torch" else kiln
    no_accel = False
    use_accel = not no_accel and lib.accelerator.is_available()
    device = lib.accelerator.current_accelerator() if use_accel else lib.device("cpu")
    assert str(device) == "cpu" and lib.zeros(2).to(device).shape[0] == 2


def test_answers_as_torchs_cpu_build():
    torch = require_torch()
    assert kiln.accelerator.is_available() is torch.accelerator.is_available() is False
    assert kiln.accelerator.current_accelerator() is torch.accelerator.current_accelerator() is None
    assert kiln.accelerator.current_accelerator(check_available=True) is None
    assert kiln.accelerator.device_count() == torch.accelerator.device_count() == 0
    kiln.accelerator.synchronize()
    with pytest.raises(RuntimeError):
        torch.accelerator.current_device_index()
    with pytest.raises(kiln.KilnError, match="no accelerator is available"):
        kiln.accelerator.current_device_index()


def test_with_a_gpu_for_cupy_the_accelerator_is_cuda(monkeypatch):
    monkeypatch.setattr(kiln.cuda, "is_available", lambda: True)
    accelerator = kiln.accelerator.current_accelerator()
    assert kiln.accelerator.is_available() and accelerator.type == "cuda" and str(accelerator) == "cuda"
    assert kiln.accelerator.current_device_index() == 0
