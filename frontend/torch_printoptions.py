"""``kiln.set_printoptions`` / ``kiln.get_printoptions``: how an eager tensor prints, as PyTorch's options.

```python
kiln.set_printoptions(precision=2)                    # tensor([0.17, -2.03, -2.61])
kiln.set_printoptions(threshold=10, edgeitems=2)      # long tensors summarised: tensor([0., 1., ..., 98., 99.])
kiln.set_printoptions(sci_mode=True)                  # tensor([1.6803e-01, ...]) (False: never scientific)
kiln.set_printoptions(profile="default")              # PyTorch's defaults: precision 4, threshold 1000, edgeitems 3, linewidth 80
```

Every tensor, real or complex, prints as PyTorch's, digit for digit, under these options (``text_options``; the rules
are in ``frontend/torch_tensor_text.py``): ``tensor([ 1.5000,  2.2500, -3.0000])``, ``tensor(0.1235)``,
``tensor([1.+2.j, 3.-1.j])``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.frontend.torch_dtypes import get_default_dtype
from kiln.frontend.torch_tensor_text import TextOptions, tensor_text

_PROFILES = {"default": {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80},
             "short": {"precision": 2, "threshold": 1000, "edgeitems": 2, "linewidth": 80},
             "full": {"precision": 4, "threshold": math.inf, "edgeitems": 3, "linewidth": 80}}
"""PyTorch's profiles."""

_options: dict[str, Any] = {}
"""What is set, by PyTorch's names; ``sci_mode`` as ``None`` (the values decide), True or False."""


def set_printoptions(precision: int | None = None, threshold: float | None = None, edgeitems: int | None = None,
                     linewidth: int | None = None, profile: str | None = None, sci_mode: bool | None = None) -> None:
    """Set the options given (a ``profile`` first, then the others over it); ``sci_mode=None`` lets the values choose."""
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(f"set_printoptions: profile must be one of {sorted(_PROFILES)}, got {profile!r}")
        _options.clear()
        _options.update(_PROFILES[profile])
    given = {"precision": precision, "threshold": threshold, "edgeitems": edgeitems, "linewidth": linewidth}
    _options.update({name: value for name, value in given.items() if value is not None})
    _options["sci_mode"] = sci_mode


def get_printoptions() -> dict[str, Any]:
    """The options in force (PyTorch's names and defaults)."""
    options = text_options()
    return {"precision": options.precision, "threshold": options.threshold, "edgeitems": options.edgeitems,
            "linewidth": options.linewidth, "sci_mode": options.sci_mode}


def text_options() -> TextOptions:
    """The options in force for PyTorch's text (``torch_tensor_text.py``), PyTorch's defaults for those not set."""
    given = {name: _options[name] for name in ("precision", "threshold", "edgeitems", "linewidth", "sci_mode") if name in _options}
    return TextOptions(**given)


def printed(array: np.ndarray, requires_grad: bool = False, grad_fn: str | None = None) -> str:
    """An eager tensor of ``array`` as PyTorch prints it under the options and default dtype in force (real or
    complex; ``requires_grad=True`` for a leaf that requires grad, ``grad_fn=<MulBackward0>`` for a result)."""
    return tensor_text(array, text_options(), get_default_dtype().numpy, requires_grad, grad_fn)


__all__ = ["get_printoptions", "set_printoptions"]
