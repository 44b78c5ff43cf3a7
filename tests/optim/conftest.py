"""Shared fixtures of the optimizer tests."""

from __future__ import annotations

import pytest

from oracles import require


@pytest.fixture(scope="module")
def torch():
    """PyTorch, the oracle, on one thread (the tests compare numbers, not speed)."""
    torch = require("torch")
    torch.set_num_threads(1)
    return torch
