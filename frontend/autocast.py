"""Autocast's state and its hook on the frontend functions torch's autocast lists (``frontend/autocast_policy.py``).

A frontend function on one of the lists names its ATen op with ``@autocasts``; inside an enabled region it casts its
floating arguments as the list says and runs with autocast off (as PyTorch's dispatcher excludes autocast below an
autocast kernel), so the ops it is built from are not cast again:

```python
@autocasts("linear")
def linear(input, weight, bias=None): ...       # in a bfloat16 region: input, weight, bias cast to bfloat16

with kiln.autocast("cpu"):                      # frontend/torch_amp.py pushes a region here
    h = F.linear(x, w, b)                        # bfloat16: "tensor.cast" ops, then the matmul in bfloat16
    loss = F.mse_loss(h, y)                      # float32: h cast back up
```

The casts are ordinary ``tensor.cast`` ops: eagerly they run at once and backward carries float32 gradients to
float32 parameters through them; traced, they are in the IR the step compiles. Regions nest (a stack per thread);
the innermost region of a device kiln computes on (``"cpu"``, and ``"cuda"`` where a GPU is present) decides. An
eager float32 parameter cast to the region's dtype is cast once per outermost region while ``cache_enabled`` (PyTorch's
cast cache); a traced one is cast once by CSE.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from kiln.compiler.ir.types import DType
from kiln.frontend.autocast_policy import policy_of

Function = TypeVar("Function", bound=Callable[..., Any])

DEFAULT_DTYPES = {"cpu": DType.bf16, "cuda": DType.f16}
"""``torch.get_autocast_dtype(device)`` outside any region (other devices: float16, as torch's)."""


@dataclass(frozen=True)
class Region:
    """One entered ``autocast`` context."""

    device: str
    enabled: bool
    dtype: DType
    cache_enabled: bool
    computes: bool
    """Whether kiln computes on this device here (``"cpu"``, or ``"cuda"`` with a GPU): only such regions cast."""


class _State(threading.local):
    """The thread's regions (torch's autocast state is thread-local too)."""

    def __init__(self) -> None:
        self.regions: list[Region] = []
        self.cast_dtype: DType | None = None
        """The dtype listed ops cast to now: None outside an enabled region, and inside a listed op."""
        self.cache: dict[tuple[int, int, DType, bool], tuple[Any, Any]] = {}


_STATE = _State()


def enter_region(region: Region) -> None:
    _STATE.regions.append(region)
    _STATE.cast_dtype = _effective_dtype()


def exit_region() -> None:
    _STATE.regions.pop()
    _STATE.cast_dtype = _effective_dtype()
    if not _STATE.regions:
        _STATE.cache.clear()  # PyTorch empties its cast cache when the outermost region exits


def _effective_dtype() -> DType | None:
    computing = [region for region in _STATE.regions if region.computes]
    return computing[-1].dtype if computing and computing[-1].enabled else None


def innermost(device: str) -> Region | None:
    """The innermost region entered for ``device``, or None."""
    if not _STATE.regions:  # outside every region (most calls): no generator to start
        return None
    return next((region for region in reversed(_STATE.regions) if region.device == device), None)


def region_enabled(device: str) -> bool:
    region = innermost(device)
    return region is not None and region.enabled


def region_dtype(device: str) -> DType:
    region = innermost(device)
    return region.dtype if region is not None else DEFAULT_DTYPES.get(device, DType.f16)


def cache_enabled() -> bool:
    return _STATE.regions[-1].cache_enabled if _STATE.regions else True


def autocast_signature() -> DType | None:
    """What a trace depends on of the autocast state (the dtype listed ops cast to, or None): compiled functions and
    steps key their cache on it, so a call inside a region does not reuse a graph traced outside one (as torch.compile
    guards on autocast)."""
    return _STATE.cast_dtype


def autocasts(op: str, when: Callable[..., bool] | None = None) -> Callable[[Function], Function]:
    """Mark a frontend function as ATen's ``op`` on torch's autocast lists: in an enabled region its floating tensor
    arguments (float64 excepted) are cast as the op's list says (``"inputs"``: not at all), and its body runs with
    autocast off. ``when(*args, **kwargs)``, if given, says whether a call is that op (``F.pad``'s reflect mode is
    ``reflection_pad2d``, its constant mode on no list)."""
    policy = policy_of(op)

    def decorate(function: Function) -> Function:
        @functools.wraps(function)
        def autocast_aware(*args: Any, **kwargs: Any) -> Any:
            if _STATE.cast_dtype is None or kwargs.get("dtype") is not None:  # an explicit dtype= is not autocast
                return function(*args, **kwargs)
            if when is not None and not when(*args, **kwargs):
                return function(*args, **kwargs)
            return _run_cast(policy, function, args, kwargs)

        return autocast_aware  # type: ignore[return-value]

    return decorate


def _run_cast(policy: str, function: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    region_dtype_now = _STATE.cast_dtype
    assert region_dtype_now is not None
    if policy == "inputs":
        cast_args, cast_kwargs = args, kwargs
    else:
        target = _target_dtype(policy, region_dtype_now, (*args, *kwargs.values()))
        cast_args = tuple(cast_floating(arg, target) for arg in args)
        cast_kwargs = {name: cast_floating(value, target) for name, value in kwargs.items()}
    _STATE.cast_dtype = None  # the op's own ops are not cast again
    try:
        return function(*cast_args, **cast_kwargs)
    finally:
        _STATE.cast_dtype = region_dtype_now


def _target_dtype(policy: str, region: DType, arguments: tuple[Any, ...]) -> DType:
    """The region's dtype, float32, or for ``promote`` float32 if any castable argument is not in the region's dtype."""
    if policy == "lower":
        return region
    if policy == "float32":
        return DType.f32
    dtypes = {tensor.dtype for tensor in _castable_tensors(arguments)}
    return region if dtypes <= {region} else DType.f32


def _castable_tensors(arguments: Any) -> list[Any]:
    from kiln.frontend.tensor import Tensor  # lazily: tensor.py imports this module

    found: list[Any] = []
    for argument in arguments:
        if isinstance(argument, Tensor) and _castable(argument.dtype):
            found.append(argument)
        elif isinstance(argument, (list, tuple)):
            found.extend(_castable_tensors(argument))
    return found


def _castable(dtype: DType) -> bool:
    """PyTorch casts floating tensors, never float64 ones."""
    return dtype.is_float and dtype is not DType.f64


def cast_floating(value: Any, dtype: DType) -> Any:
    """``value`` with its castable tensors (also inside lists, tuples and dicts) cast to ``dtype``; the rest as is."""
    from kiln.frontend.tensor import Tensor

    if isinstance(value, Tensor):
        return _cast(value, dtype) if _castable(value.dtype) and value.dtype is not dtype else value
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(cast_floating(item, dtype) for item in value)
    if isinstance(value, dict):
        return {key: cast_floating(item, dtype) for key, item in value.items()}
    return value


def _cast(tensor: Any, dtype: DType) -> Any:
    key = _cache_key(tensor, dtype)
    if key is None:
        return tensor.to(dtype)
    cached = _STATE.cache.get(key)
    if cached is None:
        cached = _STATE.cache[key] = (tensor, tensor.to(dtype))  # the parameter is kept: its id stays its own
    return cached[1]


def _cache_key(tensor: Any, dtype: DType) -> tuple[int, int, DType, bool] | None:
    """PyTorch caches the cast of a float32 leaf that requires grad to the region's dtype; here an eager parameter's,
    until the outermost region exits or an optimizer step writes it."""
    from kiln.frontend.eager_values import updates
    from kiln.frontend.module import ArrayLeaf
    from kiln.frontend.trace import TraceContext

    if not (isinstance(tensor, ArrayLeaf) and tensor.requires_grad and tensor.dtype is DType.f32 and cache_enabled()):
        return None
    context = TraceContext.current()
    if not getattr(context, "eager", False):
        return None  # traced: CSE leaves one cast per parameter
    return (id(tensor), updates(tensor), dtype, context.grad_enabled)  # a cast made under no_grad has no gradient


def excluded() -> "_Excluded":
    """A context in which no op is cast (``custom_fwd(cast_inputs=...)`` runs its forward so)."""
    return _Excluded()


class _Excluded:
    def __enter__(self) -> None:
        self.saved, _STATE.cast_dtype = _STATE.cast_dtype, None

    def __exit__(self, *exc_info: Any) -> None:
        _STATE.cast_dtype = self.saved
