"""Backends: a lowering table plus an executable builder each, imported lazily.

``get_backend("numpy")`` returns a backend; ``available()`` says which
backends work on this machine and, for the others, why not.
"""

from __future__ import annotations

import importlib
from typing import Any

from kiln.compiler.errors import KilnError

BACKENDS = {
    "numpy": ("kiln.backends.numpy", "NumpyBackend", (), ""),
    "onnxruntime": ("kiln.backends.onnx.runtime", "OnnxRuntimeBackend", ("onnx", "onnxruntime"), "pip install 'kiln[onnx]'"),
    "cupy": ("kiln.backends.cupy", "CupyBackend", (), "pip install 'kiln[cuda12]' (or 'kiln[cuda13]')"),
}
"""name -> (module, class, packages it needs, how to install them)."""

PROBES = {"cupy": ("kiln.backends.cupy", "device_problem")}
"""name -> (module, function): a check beyond imports (a GPU present); it returns the problem or ``None``."""


def get_backend(name: str) -> Any:
    """The backend called ``name``; a clear error when it is unknown or cannot run here."""
    if name not in BACKENDS:
        raise KilnError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
    problem = why_unavailable(name)
    if problem:
        raise KilnError(f"the {name} backend cannot run here: {problem}")
    module, cls, _, _ = BACKENDS[name]
    return getattr(importlib.import_module(module), cls)()


def why_unavailable(name: str) -> str | None:
    """``None`` when backend ``name`` works here, else the reason and the fix."""
    _, _, packages, install = BACKENDS[name]
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError as error:
            return f"{package} is not importable ({error}); {install}"
    if name in PROBES:
        module, function = PROBES[name]
        return getattr(importlib.import_module(module), function)()
    return None


def available() -> dict[str, str | None]:
    """Every backend -> ``None`` if it works on this machine, else why not."""
    return {name: why_unavailable(name) for name in BACKENDS}


def available_backends() -> list[str]:
    return [name for name, problem in available().items() if problem is None]


from kiln.backends import cuda, cudnn, mps  # noqa: E402,F401  (torch.backends' flags: kiln.backends.mps.is_available())
