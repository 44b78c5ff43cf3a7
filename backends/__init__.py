"""Backends: a lowering table plus an executable builder each."""

from __future__ import annotations

from typing import Any

from kiln.compiler.errors import KilnError


def get_backend(name: str) -> Any:
    """The backend called ``name`` (``"numpy"``)."""
    if name == "numpy":
        from kiln.backends.numpy import NumpyBackend

        return NumpyBackend()
    raise KilnError(f"unknown backend {name!r}; available: numpy")
