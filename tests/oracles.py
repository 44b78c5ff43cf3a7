"""Oracle imports for tests: skip when an oracle is missing, fail when KILN_REQUIRE_ORACLES=1 (CI)."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

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
