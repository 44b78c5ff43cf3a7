"""``kiln.set_default_device`` / ``get_default_device``, as the neural-style tutorial's ``torch.set_default_device(device)``
calls them: a device (or its name) is checked and remembered, ``None`` goes back to ``cpu``; compared with torch 2.13."""

from __future__ import annotations

import pytest

import kiln
from oracles import require_torch


@pytest.fixture
def restore_default_device():
    yield
    kiln.set_default_device(None)


def test_default_device_is_remembered_as_torchs(restore_default_device):
    torch = require_torch()
    assert str(kiln.get_default_device()) == str(torch.get_default_device()) == "cpu"
    device = kiln.device("cuda" if kiln.cuda.is_available() else "cpu")
    kiln.set_default_device(device)
    assert kiln.get_default_device() == device and kiln.zeros(2).device == "cpu"
    kiln.set_default_device("cuda:1")
    assert kiln.get_default_device() == kiln.device("cuda", 1)
    kiln.set_default_device(None)
    assert kiln.get_default_device() == "cpu"


def test_an_unknown_device_is_refused_and_the_default_kept(restore_default_device):
    with pytest.raises(ValueError, match="unknown device type 'gpu'"):
        kiln.set_default_device("gpu")
    assert kiln.get_default_device() == "cpu"
