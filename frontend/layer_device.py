"""The ``device=`` keyword on every layer, as PyTorch's factory keywords.

```python
conv = nn.Conv2d(3, 16, 3, device=device)                 # or **factory_kwargs = {"device": ..., "dtype": ...}
norm = nn.LayerNorm(16, device="cuda", dtype=torch.float64)
```

A layer's parameters live where its backend runs them (``Linear`` already takes and ignores ``device``), so the
keyword is checked as ``kiln.device`` checks a name and not otherwise used. ``Module.__init_subclass__`` wraps the
``__init__`` of each kiln layer that takes ``dtype`` but not ``device``; a user's subclass passes ``device`` on to it.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

from kiln.frontend.tensor_device import device as checked_device


def accept_device_keyword(layer: type) -> None:
    """Let ``layer(..., device=...)`` construct, if ``layer`` is a kiln layer whose ``__init__`` takes ``dtype`` and
    no ``device``."""
    init = layer.__dict__.get("__init__")
    if init is None or not layer.__module__.startswith("kiln.") or not _takes_dtype_only(init):
        return

    @functools.wraps(init)
    def init_taking_device(self: Any, *args: Any, device: Any = None, **kwargs: Any) -> None:
        if device is not None:
            checked_device(device)  # a bad name fails here, as torch's does
        init(self, *args, **kwargs)

    init_taking_device.__signature__ = _with_device(inspect.signature(init))  # type: ignore[attr-defined]
    layer.__init__ = init_taking_device


def _takes_dtype_only(init: Any) -> bool:
    parameters = inspect.signature(init).parameters
    takes_any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return "dtype" in parameters and "device" not in parameters and not takes_any_keyword


def _with_device(signature: inspect.Signature) -> inspect.Signature:
    """``signature`` with a keyword-only ``device=None`` (first among the keyword-only parameters)."""
    device = inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, default=None)
    parameters = list(signature.parameters.values())
    keyword_only = [p for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY]
    others = [p for p in parameters if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    return signature.replace(parameters=others + [device] + keyword_only)
