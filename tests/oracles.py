"""Oracle imports for tests: skip when an oracle is missing, fail when KILN_REQUIRE_ORACLES=1 (CI)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import pytest


def require(module_name: str) -> ModuleType:
    """Import ``module_name`` (torch, onnxruntime, ...); skip the test without it, unless oracles are required."""
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        if os.environ.get("KILN_REQUIRE_ORACLES") == "1":
            pytest.fail(f"oracle {module_name!r} is required (KILN_REQUIRE_ORACLES=1) but cannot be imported: {error}")
        pytest.skip(f"oracle {module_name!r} is not installed")


def require_torch() -> ModuleType:
    """``torch``, the CPU oracle for forward values and gradients (``require("torch")``)."""
    return require("torch")


def torch_twins(make: Any, seed: int = 0) -> tuple[ModuleType, Any, Any]:
    """``(torch, model, twin)``: ``make(kiln)`` after ``kiln.manual_seed(seed)``, and ``make(torch)`` holding a copy
    of its parameters, in order (so both start from kiln's initialisation)."""
    import numpy as np

    import kiln

    torch = require_torch()
    kiln.manual_seed(seed)
    model, twin = make(kiln), make(torch)
    for p, q in zip(model.parameters(), twin.parameters()):
        q.data = torch.tensor(np.array(p.data))
    return torch, model, twin


def libraries(name: str) -> tuple[ModuleType, ModuleType, ModuleType]:
    """``(lib, nn, F)`` for ``"kiln"`` or ``"torch"``: a program written once against torch-style names runs on both."""
    if name == "kiln":
        import kiln
        import kiln.nn as nn
        import kiln.nn.functional as F

        return kiln, nn, F
    torch = require_torch()
    return torch, torch.nn, torch.nn.functional
