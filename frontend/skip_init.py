"""PyTorch's ``torch.nn.utils.skip_init``: a module made without running its initialization, for code that sets every
weight itself afterwards (``skip_init(nn.Linear, 4, 3)`` then ``load_state_dict`` or an init of its own)."""

from __future__ import annotations

import inspect
from typing import Any

from kiln.frontend.module import Module


def skip_init(module_cls: type, *args: Any, **kwargs: Any) -> Module:
    """``module_cls(*args, **kwargs)``. PyTorch builds it on the meta device and leaves its tensors uninitialized
    (arbitrary values); kiln's layers initialize cheaply on the host, so the module comes initialized, which code that
    overwrites every value cannot tell apart. As PyTorch's, the class must be a Module taking ``device``."""
    if not (isinstance(module_cls, type) and issubclass(module_cls, Module)):
        raise RuntimeError(f"Expected a Module; got {module_cls}")
    if "device" not in inspect.signature(module_cls).parameters:
        raise RuntimeError("Module must support a 'device' arg to skip initialization")
    return module_cls(*args, **kwargs)


__all__ = ["skip_init"]
