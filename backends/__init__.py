"""Backends: a lowering table plus an executable builder each."""

from __future__ import annotations

from typing import Any

from kiln.compiler.errors import KilnError


def get_backend(name: str) -> Any:
    """The backend called ``name`` (``"numpy"``)."""
    if name == "numpy":
        from kiln.backends.numpy import NumpyBackend

        return NumpyBackend()
    if name == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise KilnError("the onnxruntime backend needs the onnx extra: pip install 'kiln[onnx]'") from None
        from kiln.backends.onnx.runtime import OnnxRuntimeBackend

        return OnnxRuntimeBackend()
    raise KilnError(f"unknown backend {name!r}; available: numpy, onnxruntime")
