"""``kiln.set_printoptions`` / ``kiln.get_printoptions``: how an eager tensor prints, as PyTorch's options.

```python
kiln.set_printoptions(precision=2)                    # tensor([0.17, -2.03, -2.61])
kiln.set_printoptions(threshold=10, edgeitems=2)      # long tensors summarised: tensor([0., 1., ..., 98., 99.])
kiln.set_printoptions(sci_mode=True)                  # tensor([1.6803e-01, ...]) (False: never scientific)
kiln.set_printoptions(profile="default")              # PyTorch's defaults: precision 4, threshold 1000, edgeitems 3, linewidth 80
```

float32, float64, integer and bool tensors take their digits from NumPy's ``array2string``, so they print as NumPy
prints the array (not always PyTorch's text); until an option is set they keep kiln's default printing (NumPy's
precision 8, linewidth 75). float16 and bfloat16 tensors print as PyTorch's, digit for digit, under these options at
PyTorch's defaults (``text_options``; the rules are in ``frontend/torch_tensor_text.py``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.compiler.ir.types import is_float_array_dtype
from kiln.frontend.torch_tensor_text import TextOptions

_PROFILES = {"default": {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80},
             "short": {"precision": 2, "threshold": 1000, "edgeitems": 2, "linewidth": 80},
             "full": {"precision": 4, "threshold": math.inf, "edgeitems": 3, "linewidth": 80}}
"""PyTorch's profiles."""

_options: dict[str, Any] = {"threshold": 1000}
"""What is set (``array2string``'s names); ``sci_mode`` apart, as ``None`` (NumPy decides), True or False."""


def set_printoptions(precision: int | None = None, threshold: float | None = None, edgeitems: int | None = None,
                     linewidth: int | None = None, profile: str | None = None, sci_mode: bool | None = None) -> None:
    """Set the options given (a ``profile`` first, then the others over it); ``sci_mode=None`` lets NumPy choose."""
    if profile is not None:
        if profile not in _PROFILES:
            raise ValueError(f"set_printoptions: profile must be one of {sorted(_PROFILES)}, got {profile!r}")
        _options.clear()
        _options.update(_PROFILES[profile])
    given = {"precision": precision, "threshold": threshold, "edgeitems": edgeitems, "linewidth": linewidth}
    _options.update({name: value for name, value in given.items() if value is not None})
    _options["sci_mode"] = sci_mode


def get_printoptions() -> dict[str, Any]:
    """The options in force (PyTorch's names), kiln's NumPy defaults filled in."""
    numpy_defaults = np.get_printoptions()
    return {"precision": _options.get("precision", numpy_defaults["precision"]), "threshold": _options["threshold"],
            "edgeitems": _options.get("edgeitems", numpy_defaults["edgeitems"]),
            "linewidth": _options.get("linewidth", numpy_defaults["linewidth"]), "sci_mode": _options.get("sci_mode")}


def array2string_options(array: np.ndarray) -> dict[str, Any]:
    """The keywords ``Tensor.__repr__`` passes to ``np.array2string`` for ``array``."""
    names = {"precision": "precision", "threshold": "threshold", "edgeitems": "edgeitems", "linewidth": "max_line_width"}
    options = {names[name]: value for name, value in _options.items() if name in names}
    if "precision" in options:
        options["floatmode"] = "maxprec_equal"  # as PyTorch: one count of digits (up to precision) for every element
    if options.get("threshold") == math.inf:
        options["threshold"] = np.iinfo(np.int64).max
    sci_mode = _options.get("sci_mode")
    if sci_mode is False:
        options["suppress_small"] = True  # NumPy: always fixed point
    elif sci_mode and is_float_array_dtype(array.dtype):
        options["formatter"] = {"float_kind": _scientific(array, options.get("precision", np.get_printoptions()["precision"]))}
    return options


def text_options() -> TextOptions:
    """The options in force for PyTorch's text (``torch_tensor_text.py``), PyTorch's defaults for those not set."""
    given = {name: _options[name] for name in ("precision", "threshold", "edgeitems", "linewidth", "sci_mode") if name in _options}
    return TextOptions(**given)


def _scientific(array: np.ndarray, digits: int) -> Any:
    """Every float as ``d.ddde+xx``, right-aligned to the widest."""
    width = max((len(f"{value:.{digits}e}") for value in array.ravel()[:1000]), default=0)
    return lambda value: f"{value:.{digits}e}".rjust(width)


__all__ = ["get_printoptions", "set_printoptions"]
