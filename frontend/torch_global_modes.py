"""torch's process-wide switches that training scripts set for reproducibility and old code sets for defaults:
``use_deterministic_algorithms``, the deterministic debug mode, ``set_warn_always``, ``set_flush_denormal`` and the
legacy ``set_default_tensor_type``.

```python
kiln.use_deterministic_algorithms(True)          # a seed_everything() helper's line: recorded, as torch's
kiln.are_deterministic_algorithms_enabled()      # True
kiln.set_default_tensor_type(kiln.DoubleTensor)  # old code's float64 default: set_default_dtype(float64)
```

kiln's NumPy backend computes each op the same way on every run (no atomics, no autotuned algorithm choice), so the
deterministic switches change no result there; they are kept, with torch's values and errors, for code that reads
them back. ``set_flush_denormal`` returns False, torch's answer where flushing is not supported: NumPy has no switch
for the CPU's flush-to-zero mode.
"""

from __future__ import annotations

import warnings
from typing import Any

from kiln.compiler.ir.types import DType

_DEBUG_MODES = {"default": 0, "warn": 1, "error": 2}
_state = {"deterministic": False, "warn_only": False, "warn_always": False}


def use_deterministic_algorithms(mode: bool, *, warn_only: bool = False) -> None:
    if not isinstance(mode, bool):
        raise TypeError(f"_set_deterministic_algorithms(): argument 'mode' (position 1) must be bool, not "
                        f"{type(mode).__name__}")
    _state.update(deterministic=mode, warn_only=bool(warn_only))


def are_deterministic_algorithms_enabled() -> bool:
    return _state["deterministic"]


def is_deterministic_algorithms_warn_only_enabled() -> bool:
    return _state["warn_only"]


def set_deterministic_debug_mode(debug_mode: str | int) -> None:
    """``"default"``/0 (off), ``"warn"``/1 (deterministic, warn only) or ``"error"``/2 (deterministic)."""
    if isinstance(debug_mode, str):
        if debug_mode not in _DEBUG_MODES:
            raise RuntimeError("invalid value of debug_mode, expected one of `default`, `warn`, `error`, but got "
                               f"{debug_mode}")
        debug_mode = _DEBUG_MODES[debug_mode]
    if debug_mode not in (0, 1, 2):
        raise RuntimeError(f"invalid value of debug_mode, expected 0, 1, or 2, but got {debug_mode}")
    use_deterministic_algorithms(debug_mode > 0, warn_only=debug_mode == 1)


def get_deterministic_debug_mode() -> int:
    if not _state["deterministic"]:
        return 0
    return 1 if _state["warn_only"] else 2


def set_warn_always(b: bool) -> None:
    _state["warn_always"] = bool(b)


def is_warn_always_enabled() -> bool:
    return _state["warn_always"]


def set_flush_denormal(mode: bool) -> bool:
    """False: not supported (see the module docstring); denormals stay as NumPy computes them."""
    return False


def set_default_tensor_type(t: Any) -> None:
    """The legacy default: a float tensor type (``kiln.DoubleTensor``, ``"torch.FloatTensor"``, their cuda names)
    sets the default float dtype; kiln places data by backend, so the device part is ignored. Deprecated, as torch's."""
    warnings.warn("kiln.set_default_tensor_type() is deprecated, as torch's since PyTorch 2.1: use "
                  "kiln.set_default_dtype() (and kiln.set_default_device())", UserWarning, stacklevel=2)
    name = t if isinstance(t, str) else getattr(t, "__name__", repr(t))
    kind = name.rsplit(".", 1)[-1]
    dtypes = {"FloatTensor": DType.f32, "DoubleTensor": DType.f64, "HalfTensor": DType.f16, "BFloat16Tensor": DType.bf16}
    if kind not in dtypes:
        raise TypeError(f"only floating-point types are supported as the default type (got {name}): pass "
                        "kiln.FloatTensor, kiln.DoubleTensor, kiln.HalfTensor or kiln.BFloat16Tensor")
    from kiln.frontend.torch_dtypes import set_default_dtype

    set_default_dtype(dtypes[kind])


__all__ = ["are_deterministic_algorithms_enabled", "get_deterministic_debug_mode",
           "is_deterministic_algorithms_warn_only_enabled", "is_warn_always_enabled", "set_default_tensor_type",
           "set_deterministic_debug_mode", "set_flush_denormal", "set_warn_always", "use_deterministic_algorithms"]
