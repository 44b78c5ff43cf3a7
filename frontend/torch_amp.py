"""``kiln.autocast`` / ``kiln.amp`` / ``kiln.cuda.amp``: PyTorch's automatic mixed precision, honestly.

kiln computes in float32 or float64: ``float16``/``bfloat16`` are reserved IR dtypes that no backend computes in.
So ``autocast`` cannot run a region in half precision, and says so, except where PyTorch itself would not either:

```python
with kiln.autocast("cuda", dtype=kiln.float16, enabled=use_amp):   # enabled=False: a no-op (how scripts toggle AMP)
    loss = model(x)
with kiln.autocast("cuda"):          # no GPU here: PyTorch's warning, then a no-op, as torch on a CPU-only machine
    ...
with kiln.autocast("cpu", dtype=kiln.bfloat16):  # an error: kiln cannot compute in bfloat16; run in float32 instead
    ...
scaler = kiln.amp.GradScaler("cuda")  # no GPU: PyTorch's warning, then disabled (a pass-through), as torch here
scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()
```

``GradScaler`` is PyTorch's: disabled, ``scale`` returns its argument, ``step`` calls ``optimizer.step()``, ``update``
does nothing, ``get_scale()`` is 1.0 and ``state_dict()`` is empty; enabled (``GradScaler("cpu")``, or ``"cuda"`` with
a GPU) it scales the loss, unscales the eager ``.grad`` in place, skips a step whose gradients hold inf/NaN and grows
or backs off the scale, all in float32 where scaling changes nothing but the skipped steps.
"""

from __future__ import annotations

import functools
import sys
import types
import warnings
from typing import Any, Callable

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.types import DType

_DEVICE_TYPES = ("cpu", "cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip", "ve", "fpga", "maia", "xla", "lazy",
                 "vulkan", "mps", "meta", "hpu", "mtia", "privateuseone")
"""PyTorch's device types (its error lists them)."""

_HALF = {DType.f16: "float16", DType.bf16: "bfloat16"}


def _gpu_available() -> bool:
    from kiln.cuda import is_available

    return is_available()


def _dtype_name(dtype: Any) -> str:
    return f"kiln.{_HALF.get(dtype, dtype)}" if isinstance(dtype, DType) else repr(dtype)


class autocast:  # noqa: N801  (torch.autocast)
    """A context manager (and decorator) that is a no-op where PyTorch's would be one on this machine, and an error
    where PyTorch's would compute in half precision (see the module docstring)."""

    def __init__(self, device_type: str, dtype: Any = None, enabled: bool = True, cache_enabled: bool | None = None) -> None:
        if not isinstance(device_type, str):
            raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
        if device_type not in _DEVICE_TYPES:
            raise RuntimeError(f"Expected one of {', '.join(_DEVICE_TYPES)} device type at start of device string: {device_type}")
        self.device = device_type
        self.fast_dtype = dtype if dtype is not None else DType.bf16 if device_type == "cpu" else DType.f16
        self._enabled = bool(enabled) and self._can_enable(device_type, dtype)

    def _can_enable(self, device_type: str, dtype: Any) -> bool:
        """False after PyTorch's warning where it disables itself; an error where it would compute in half precision."""
        if device_type == "cuda" and not _gpu_available():
            warnings.warn("CUDA is not available or torch_xla is imported. Disabling autocast.", UserWarning, stacklevel=3)
            return False
        if device_type not in ("cpu", "cuda"):
            warnings.warn(f"kiln has no {device_type} device. Disabling autocast.", UserWarning, stacklevel=3)
            return False
        if device_type == "cpu" and dtype is not None and dtype not in _HALF:
            warnings.warn("In CPU autocast, but the target dtype is not supported. Disabling autocast.\n"
                          "CPU Autocast only supports dtypes of kiln.bfloat16, kiln.float16 currently.", UserWarning, stacklevel=3)
            return False
        name = _dtype_name(self.fast_dtype)
        raise KilnError(f"autocast({device_type!r}, dtype={name}) would compute in {name}, which kiln cannot: float16 and "
                        "bfloat16 are reserved IR dtypes that no backend computes in. kiln computes in the tensors' own "
                        "dtype (float32 or float64) instead; run the region that way by passing enabled=False (as torch "
                        "runs with AMP off) or by removing the autocast context")

    def __enter__(self) -> "autocast":
        return self

    def __exit__(self, *exc_info: Any) -> bool:
        return False

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def decorated(*args: Any, **kwargs: Any) -> Any:
            with self:
                return function(*args, **kwargs)

        return decorated


def is_autocast_available(device_type: str) -> bool:
    """False: kiln has no half-precision arithmetic for autocast to switch to, whatever the device."""
    return False


def is_autocast_enabled(device_type: str | None = None) -> bool:
    """False: no region ever runs under autocast in kiln."""
    return False


# GradScaler -----------------------------------------------------------------------------------------------------------

class GradScaler:
    """PyTorch's ``torch.amp.GradScaler`` (see the module docstring)."""

    def __init__(self, device: str = "cuda", init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, enabled: bool = True, *, _name: str = "kiln.cuda.amp.GradScaler") -> None:
        self._device = device
        if enabled and device == "cuda" and not _gpu_available():
            warnings.warn(f"{_name} is enabled, but CUDA is not available.  Disabling.", UserWarning, stacklevel=2)
            enabled = False
        self._enabled = bool(enabled)
        if self._enabled:
            if growth_factor <= 1.0:
                raise ValueError("The growth factor must be > 1.0.")
            if backoff_factor >= 1.0:
                raise ValueError("The backoff factor must be < 1.0.")
            self._scale, self._growth_factor, self._backoff_factor = float(init_scale), float(growth_factor), float(backoff_factor)
            self._growth_interval, self._growth_tracker = int(growth_interval), 0
        self._found_inf: dict[int, bool] = {}

    def is_enabled(self) -> bool:
        return self._enabled

    def scale(self, outputs: Any) -> Any:
        """``outputs`` (a tensor, or nested lists/tuples of them) times the scale; unchanged when disabled."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(output) for output in outputs)
        return outputs * self._scale

    def unscale_(self, optimizer: Any) -> None:
        """Divide ``optimizer``'s gradients by the scale in place, once per step, noting whether any is inf/NaN."""
        if not self._enabled:
            return
        if id(optimizer) in self._found_inf:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        inverse, found = 1.0 / self._scale, False
        for group in optimizer.param_groups:
            for param in group["params"]:
                grad = getattr(param, "grad", None)
                if grad is not None:
                    np.multiply(grad, np.asarray(inverse, dtype=grad.dtype), out=grad)
                    found = found or not bool(np.isfinite(grad).all())
        self._found_inf[id(optimizer)] = found

    def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        """``optimizer.step()`` unless the unscaled gradients hold inf/NaN (then skipped, returning None)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if id(optimizer) not in self._found_inf:
            self.unscale_(optimizer)
        return None if self._found_inf[id(optimizer)] else optimizer.step(*args, **kwargs)

    def update(self, new_scale: float | None = None) -> None:
        """Back off the scale after a skipped step; grow it after ``growth_interval`` clean ones (or set ``new_scale``)."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = float(new_scale.item() if hasattr(new_scale, "item") else new_scale)
        elif any(self._found_inf.values()):
            self._scale, self._growth_tracker = self._scale * self._backoff_factor, 0
        else:
            self._growth_tracker += 1
            if self._growth_tracker == self._growth_interval:
                self._scale, self._growth_tracker = self._scale * self._growth_factor, 0
        self._found_inf = {}

    def get_scale(self) -> float:
        return self._scale if self._enabled else 1.0

    def get_growth_factor(self) -> float:
        return self._growth_factor

    def set_growth_factor(self, new_factor: float) -> None:
        self._growth_factor = float(new_factor)

    def get_backoff_factor(self) -> float:
        return self._backoff_factor

    def set_backoff_factor(self, new_factor: float) -> None:
        self._backoff_factor = float(new_factor)

    def get_growth_interval(self) -> int:
        return self._growth_interval

    def set_growth_interval(self, new_interval: int) -> None:
        self._growth_interval = int(new_interval)

    def state_dict(self) -> dict[str, Any]:
        """PyTorch's keys when enabled; empty when disabled."""
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self._growth_factor, "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler.")
        self._scale, self._growth_factor = float(state_dict["scale"]), float(state_dict["growth_factor"])
        self._backoff_factor, self._growth_interval = float(state_dict["backoff_factor"]), int(state_dict["growth_interval"])
        self._growth_tracker = int(state_dict["_growth_tracker"])


# torch.cuda.amp: the deprecated spellings -----------------------------------------------------------------------------

def cuda_autocast(enabled: bool = True, dtype: Any = DType.f16, cache_enabled: bool = True) -> autocast:
    warnings.warn("`kiln.cuda.amp.autocast(args...)` is deprecated. Please use `kiln.amp.autocast('cuda', args...)` instead.",
                  FutureWarning, stacklevel=2)
    return autocast("cuda", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


def cuda_grad_scaler(init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                     growth_interval: int = 2000, enabled: bool = True) -> GradScaler:
    warnings.warn("`kiln.cuda.amp.GradScaler(args...)` is deprecated. Please use `kiln.amp.GradScaler('cuda', args...)` instead.",
                  FutureWarning, stacklevel=2)
    return GradScaler("cuda", init_scale, growth_factor, backoff_factor, growth_interval, enabled)


def cuda_amp_module() -> types.ModuleType:
    """``kiln.cuda.amp``, importable as ``from kiln.cuda.amp import GradScaler, autocast`` (``kiln.cuda`` is a module)."""
    module = types.ModuleType("kiln.cuda.amp", "torch.cuda.amp's deprecated spellings of kiln.amp (frontend/torch_amp.py).")
    module.autocast, module.GradScaler = cuda_autocast, cuda_grad_scaler
    sys.modules["kiln.cuda.amp"] = module
    return module


__all__ = ["GradScaler", "autocast", "is_autocast_available", "is_autocast_enabled"]
