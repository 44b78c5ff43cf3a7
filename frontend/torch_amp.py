"""``kiln.autocast`` / ``kiln.amp`` / ``kiln.cpu.amp`` / ``kiln.cuda.amp``: PyTorch's automatic mixed precision.

Inside an enabled region, the ops on torch's CPU autocast lists (``frontend/autocast_policy.py``) cast their floating
inputs first: linear, matmul, convolutions, ``prelu`` and attention compute in the region's half dtype, the losses,
``prod``, ``trace``, ``cdist``, the 3-d pools, linalg and FFT in float32, ``cat``/``stack`` in their widest input
dtype; every other op runs in its inputs' dtype, as in PyTorch 2.13 on CPU:

```python
with kiln.autocast("cpu", dtype=kiln.bfloat16):   # torch's CPU default dtype is bfloat16
    logits = model(x)                              # Linear/Conv outputs bfloat16; softmax of them bfloat16
    loss = F.cross_entropy(logits, y)              # float32: on the float32 list
loss.backward()                                    # float32 gradients for float32 parameters, through the casts

@kiln.autocast("cpu")                              # a decorator too; regions nest, enabled=False turns one off
def loss_fn(model, x, y): ...
step = kiln.compile_train_step(model, loss_fn, optimizer)   # traced in the region: the casts are in the IR

scaler = kiln.amp.GradScaler("cpu")                # float16 training: scale the loss so small gradients survive
with kiln.autocast("cpu", dtype=kiln.float16):
    loss = loss_fn(model, x, y)
scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()
```

The casts are ``tensor.cast`` ops, eagerly and in traces; each half op computes in float32 and rounds once (the
``widen-half`` pass), as PyTorch's CPU kernels do: a Linear or Conv1d/Conv2d adds its bias in float32 before its one
rounding, and 4-d attention computes as torch's CPU flash kernel (``frontend/functional_attention_paths.py``), so a
transformer's forward is torch's bit for bit (a transposed or 3-d convolution's bias is still a second rounding).
Compiled functions and steps trace once per region dtype (their caches key on it, as torch.compile guards on autocast). ``kiln.is_autocast_enabled(device)``,
``kiln.get_autocast_dtype(device)``, ``kiln.amp.custom_fwd``/``custom_bwd`` are torch's. ``"cuda"`` without a GPU
warns and is a no-op, as torch on a CPU-only machine; with one (CuPy) it casts by the same CPU lists, float16 by
default (torch's CUDA lists also put softmax, layer_norm, exp, sum... in float32: kiln does not). Other devices warn
and are no-ops.

``GradScaler`` is PyTorch's, step by step: disabled (``enabled=False``, or ``"cuda"`` without a GPU, after torch's
warning) it is a pass-through; enabled it multiplies the loss by a float32 scale, unscales the eager ``.grad`` in
place (float16 gradients are refused, as torch's), skips the step whose gradients hold inf/NaN and backs the scale
off, and grows it after ``growth_interval`` clean steps, with torch's float32 arithmetic and its errors.
"""

from __future__ import annotations

import functools
import sys
import types
import warnings
from typing import Any, Callable

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.module import grad_array
from kiln.frontend.trace import refuse_in_step
from kiln.frontend.autocast import Region, cache_enabled, cast_floating, enter_region, excluded, exit_region, region_dtype, region_enabled

_DEVICE_TYPES = ("cpu", "cuda", "ipu", "xpu", "mkldnn", "opengl", "opencl", "ideep", "hip", "ve", "fpga", "maia", "xla", "lazy",
                 "vulkan", "mps", "meta", "hpu", "mtia", "privateuseone")
"""PyTorch's device types (its error lists them)."""

_HALF = {DType.f16: "float16", DType.bf16: "bfloat16"}


def _gpu_available() -> bool:
    from kiln.cuda import is_available

    return is_available()


def _check_device(device_type: Any) -> str:
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    if device_type not in _DEVICE_TYPES:
        raise RuntimeError(f"Expected one of {', '.join(_DEVICE_TYPES)} device type at start of device string: {device_type}")
    return device_type


class autocast:  # noqa: N801  (torch.autocast)
    """A region (context manager or decorator) in which torch's autocast lists pick each op's dtype (see the module
    docstring); a no-op, after PyTorch's warning, where PyTorch's would be one on this machine."""

    def __init__(self, device_type: str, dtype: Any = None, enabled: bool = True, cache_enabled: bool | None = None) -> None:
        self.device = _check_device(device_type)
        self.fast_dtype = dtype if dtype is not None else region_dtype(device_type)
        self._cache_enabled = is_autocast_cache_enabled() if cache_enabled is None else bool(cache_enabled)
        self._enabled = bool(enabled) and self._can_enable(device_type, dtype)

    def _can_enable(self, device_type: str, dtype: Any) -> bool:
        """False after PyTorch's warning where it disables itself."""
        if device_type == "cuda" and not _gpu_available():
            warnings.warn("CUDA is not available or torch_xla is imported. Disabling autocast.", UserWarning, stacklevel=3)
            return False
        if device_type not in ("cpu", "cuda"):
            warnings.warn(f"kiln has no {device_type} device. Disabling autocast.", UserWarning, stacklevel=3)
            return False
        if dtype is not None and dtype not in _HALF:
            device = "CPU" if device_type == "cpu" else "CUDA"
            warnings.warn(f"In {device} autocast, but the target dtype is not supported. Disabling autocast.\n"
                          f"{device} Autocast only supports dtypes of kiln.bfloat16, kiln.float16 currently.", UserWarning, stacklevel=3)
            return False
        return True

    def __enter__(self) -> "autocast":
        computes = self.device == "cpu" or (self.device == "cuda" and _gpu_available())
        dtype = self.fast_dtype if self.fast_dtype in _HALF else region_dtype(self.device)
        enter_region(Region(self.device, self._enabled, dtype, self._cache_enabled, computes))
        return self

    def __exit__(self, *exc_info: Any) -> bool:
        exit_region()
        return False

    def __call__(self, function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def decorated(*args: Any, **kwargs: Any) -> Any:
            with self:
                return function(*args, **kwargs)

        return decorated


def is_autocast_available(device_type: str) -> bool:
    """Whether autocast can run on ``device_type``: "cpu" and "cuda", as torch's answer here."""
    return _check_device(device_type) in ("cpu", "cuda")


def is_autocast_enabled(device_type: str | None = None) -> bool:
    """Whether the innermost region for ``device_type`` is enabled; without one, CUDA's (torch's deprecated form)."""
    return region_enabled(_check_device("cuda" if device_type is None else device_type))


def get_autocast_dtype(device_type: str) -> DType:
    """The innermost region's dtype for ``device_type``; outside any, torch's default (bfloat16 on CPU, float16 else)."""
    return region_dtype(_check_device(device_type))


def is_autocast_cache_enabled() -> bool:
    return cache_enabled()


# custom_fwd / custom_bwd: torch.amp's decorators for an autograd.Function's forward and backward -------------------

def custom_fwd(fwd: Callable[..., Any] | None = None, *, device_type: str, cast_inputs: Any = None) -> Any:
    """Record the region around ``forward`` on its ctx (for ``custom_bwd``); with ``cast_inputs``, inside an enabled
    region cast the floating tensor arguments to it and run ``forward`` with autocast off."""
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    if fwd is None:
        return functools.partial(custom_fwd, device_type=device_type, cast_inputs=cast_inputs)

    @functools.wraps(fwd)
    def decorate_fwd(*args: Any, **kwargs: Any) -> Any:
        ctx, enabled = args[0], is_autocast_enabled(device_type)
        ctx._dtype = get_autocast_dtype(device_type)
        ctx._fwd_used_autocast = enabled and cast_inputs is None
        if cast_inputs is None or not enabled:
            return fwd(*args, **kwargs)
        with excluded():
            return fwd(ctx, *cast_floating(args[1:], cast_inputs), **cast_floating(kwargs, cast_inputs))

    return decorate_fwd


def custom_bwd(bwd: Callable[..., Any] | None = None, *, device_type: str) -> Any:
    """Run ``backward`` in the region its ``custom_fwd`` forward ran in."""
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    if bwd is None:
        return functools.partial(custom_bwd, device_type=device_type)

    @functools.wraps(bwd)
    def decorate_bwd(*args: Any, **kwargs: Any) -> Any:
        with autocast(device_type=device_type, enabled=args[0]._fwd_used_autocast, dtype=args[0]._dtype):
            return bwd(*args, **kwargs)

    return decorate_bwd


# GradScaler -----------------------------------------------------------------------------------------------------------

def _float32(value: float) -> float:
    """``value`` rounded to float32: torch keeps the scale in a float32 tensor. Past float32's range it is inf, quietly,
    as torch's tensor product (a growth that would overflow, which ``_update_scale`` then declines)."""
    with np.errstate(over="ignore"):
        return float(np.float32(value))


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
            self._init_scale, self._growth_factor, self._backoff_factor = init_scale, float(growth_factor), float(backoff_factor)
            self._growth_interval, self._init_growth_tracker = int(growth_interval), 0
            self._scale: float | None = None  # float32 values; set by the first scale(), as torch's lazy tensor
            self._growth_tracker = 0
        self._found_inf: dict[int, bool] = {}
        """Per optimizer unscaled since the last update(): whether its gradients held inf/NaN."""
        self._stepped: set[int] = set()

    def is_enabled(self) -> bool:
        return self._enabled

    def scale(self, outputs: Any) -> Any:
        """``outputs`` (a tensor, or nested lists/tuples of them) times the float32 scale; unchanged when disabled. A
        0-d half loss gives a float32 product, a larger half tensor stays half (computed in float32), as torch's."""
        if not self._enabled:
            return outputs
        refuse_in_step("GradScaler.scale()", "its scale changes between steps and its step() skips on inf: run a step with a "
                       "GradScaler eagerly, or use kiln.compile_train_step(..., loss_scale=...)")
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(output) for output in outputs)
        if self._scale is None:
            self._scale, self._growth_tracker = _float32(self._init_scale), self._init_growth_tracker
        return _times_float32(outputs, self._scale)

    def unscale_(self, optimizer: Any) -> None:
        """Divide ``optimizer``'s gradients by the scale in place, once per step, noting whether any is inf/NaN."""
        if not self._enabled:
            return
        self._require_scale("unscale_")
        if id(optimizer) in self._stepped:
            raise RuntimeError("unscale_() is being called after step().")
        if id(optimizer) in self._found_inf:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        gradients = [_unscaled_array(param) for group in optimizer.param_groups for param in group["params"]
                     if getattr(param, "grad", None) is not None]
        if any(np.asarray(grad).dtype == np.float16 for grad in gradients):
            raise ValueError("Attempting to unscale FP16 gradients.")
        inverse = np.float32(1.0 / self._scale)  # torch: the reciprocal in float64, rounded to float32
        self._found_inf[id(optimizer)] = any([_unscale_in_place(grad, inverse) for grad in gradients])

    def step(self, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        """``optimizer.step()`` unless the unscaled gradients hold inf/NaN (then skipped, returning None)."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        if "closure" in kwargs:
            raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
        self._require_scale("step")
        if id(optimizer) in self._stepped:
            raise RuntimeError("step() has already been called since the last update().")
        if id(optimizer) not in self._found_inf:
            self.unscale_(optimizer)
        self._stepped.add(id(optimizer))
        return None if self._found_inf[id(optimizer)] else optimizer.step(*args, **kwargs)

    def update(self, new_scale: Any = None) -> None:
        """Back off the scale after a skipped step; grow it after ``growth_interval`` clean ones (or set ``new_scale``)."""
        if not self._enabled:
            return
        self._require_scale("update")
        if new_scale is not None:
            self._scale = _float32(new_scale.item() if hasattr(new_scale, "item") else new_scale)
        elif not self._found_inf:
            raise AssertionError("No inf checks were recorded prior to update.")
        else:
            self._update_scale(any(self._found_inf.values()))
        self._found_inf, self._stepped = {}, set()

    def _update_scale(self, found_inf: bool) -> None:
        """torch's ``_amp_update_scale_``: float32 products; a growth that would overflow float32 is not taken."""
        assert self._scale is not None
        if found_inf:
            self._scale, self._growth_tracker = _float32(self._scale * self._backoff_factor), 0
            return
        self._growth_tracker += 1
        if self._growth_tracker == self._growth_interval:
            grown = _float32(self._scale * self._growth_factor)
            self._scale, self._growth_tracker = grown if np.isfinite(grown) else self._scale, 0

    def _require_scale(self, method: str) -> None:
        if self._scale is None:
            raise AssertionError(f"Attempted {method} but _scale is None.  This may indicate your script did not use "
                                 "scaler.scale(loss or outputs) earlier in the iteration.")

    def get_scale(self) -> float:
        if not self._enabled:
            return 1.0
        return self._init_scale if self._scale is None else self._scale

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
        tracker = self._init_growth_tracker if self._scale is None else self._growth_tracker
        return {"scale": self.get_scale(), "growth_factor": self._growth_factor, "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval, "_growth_tracker": tracker}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler.")
        self._init_scale, self._growth_factor = state_dict["scale"], float(state_dict["growth_factor"])
        self._backoff_factor, self._growth_interval = float(state_dict["backoff_factor"]), int(state_dict["growth_interval"])
        self._init_growth_tracker = int(state_dict["_growth_tracker"])
        if self._scale is not None:
            self._scale, self._growth_tracker = _float32(self._init_scale), self._init_growth_tracker


def _times_float32(output: Any, scale: float) -> Any:
    """``output * scale`` where the scale is a 0-d float32 tensor, by torch's promotion: a 0-d output takes float32,
    a larger half one stays half (its product computed in float32 and rounded)."""
    if not output.dtype.is_half:
        return output * scale  # float32 or float64: the product in that dtype, as torch's
    product = output.float() * scale
    return product if output.ndim == 0 else product.to(output.dtype)


def _unscaled_array(param: Any) -> np.ndarray:
    """The array ``unscale_`` writes: the ``.grad``'s, or a sparse one's values (as torch's ``_values()``)."""
    grad = param.grad
    return grad._value_array if getattr(grad, "is_sparse", False) else grad_array(param)


def _unscale_in_place(grad: np.ndarray, inverse: np.float32) -> bool:
    """``grad *= inverse`` as torch's kernel: in float32 for a bfloat16 gradient, rounded once; whether ``grad`` held
    inf/NaN before."""
    found = not bool(np.isfinite(np.asarray(grad, dtype=np.float32) if DType.of(grad.dtype).is_half else grad).all())
    if DType.of(grad.dtype).is_half:
        grad[...] = (np.asarray(grad, dtype=np.float32) * inverse).astype(grad.dtype)
    else:
        np.multiply(grad, inverse, out=grad)
    return found


# torch.cuda.amp / torch.cpu.amp: the deprecated spellings ------------------------------------------------------------

def cuda_autocast(enabled: bool = True, dtype: Any = DType.f16, cache_enabled: bool = True) -> autocast:
    return _deprecated_autocast("cuda", enabled, dtype, cache_enabled)


def cpu_autocast(enabled: bool = True, dtype: Any = DType.bf16, cache_enabled: bool = True) -> autocast:
    return _deprecated_autocast("cpu", enabled, dtype, cache_enabled)


def _deprecated_autocast(device: str, enabled: bool, dtype: Any, cache_enabled: bool) -> autocast:
    warnings.warn(f"`kiln.{device}.amp.autocast(args...)` is deprecated. Please use `kiln.amp.autocast('{device}', args...)` instead.",
                  FutureWarning, stacklevel=3)
    return autocast(device, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


def cuda_grad_scaler(init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                     growth_interval: int = 2000, enabled: bool = True) -> GradScaler:
    return _deprecated_grad_scaler("cuda", init_scale, growth_factor, backoff_factor, growth_interval, enabled)


def cpu_grad_scaler(init_scale: float = 2.0**16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                    growth_interval: int = 2000, enabled: bool = True) -> GradScaler:
    return _deprecated_grad_scaler("cpu", init_scale, growth_factor, backoff_factor, growth_interval, enabled)


def _deprecated_grad_scaler(device: str, *arguments: Any) -> GradScaler:
    warnings.warn(f"`kiln.{device}.amp.GradScaler(args...)` is deprecated. Please use `kiln.amp.GradScaler('{device}', args...)` instead.",
                  FutureWarning, stacklevel=3)
    return GradScaler(device, *arguments)


def cuda_amp_module() -> types.ModuleType:
    """``kiln.cuda.amp``, importable as ``from kiln.cuda.amp import GradScaler, autocast`` (``kiln.cuda`` is a module)."""
    return _amp_module("cuda", cuda_autocast, cuda_grad_scaler)


def cpu_amp_module() -> types.ModuleType:
    """``kiln.cpu.amp``, as ``kiln.cuda.amp`` (``kiln/cpu.py``)."""
    return _amp_module("cpu", cpu_autocast, cpu_grad_scaler)


def _amp_module(device: str, make_autocast: Callable[..., autocast], make_scaler: Callable[..., GradScaler]) -> types.ModuleType:
    module = types.ModuleType(f"kiln.{device}.amp", f"torch.{device}.amp's deprecated spellings of kiln.amp (frontend/torch_amp.py).")
    module.autocast, module.GradScaler = make_autocast, make_scaler
    sys.modules[f"kiln.{device}.amp"] = module
    return module


__all__ = ["GradScaler", "autocast", "custom_bwd", "custom_fwd", "get_autocast_dtype", "is_autocast_available",
           "is_autocast_cache_enabled", "is_autocast_enabled"]
