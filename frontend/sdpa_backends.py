"""``kiln.nn.attention.sdpa_kernel`` / ``SDPBackend`` and ``kiln.backends.cuda``'s SDP switches: which of torch's
attention kernels ``F.scaled_dot_product_attention`` may use.

On CPU PyTorch 2.13 has two: the flash kernel (4-d inputs, no dropout) and the math path. kiln follows the choice
where it changes numbers, in a CPU autocast region's half precision: with FLASH_ATTENTION allowed, 4-d attention
computes as torch's flash kernel; restricted to MATH, as the math path (float32 throughout, one rounding). Elsewhere
both give the same values. A set naming neither is refused, as torch's "No available kernel" on CPU.

```python
from kiln.nn.attention import SDPBackend, sdpa_kernel
with sdpa_kernel(SDPBackend.MATH):            # or [SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]
    out = F.scaled_dot_product_attention(q, k, v)
```
"""

from __future__ import annotations

import contextlib
import enum
import threading
from typing import Any, Iterator

from kiln.compiler.errors import KilnError


class SDPBackend(enum.IntEnum):
    """torch.nn.attention.SDPBackend's members and values."""

    ERROR = -1
    MATH = 0
    FLASH_ATTENTION = 1
    EFFICIENT_ATTENTION = 2
    CUDNN_ATTENTION = 3
    OVERRIDEABLE = 4


CPU_BACKENDS = frozenset({SDPBackend.MATH, SDPBackend.FLASH_ATTENTION})
"""The kernels PyTorch has on CPU."""


class _Allowed(threading.local):
    def __init__(self) -> None:
        self.backends = frozenset(SDPBackend) - {SDPBackend.ERROR}


_ALLOWED = _Allowed()


def allowed_backends() -> frozenset:
    return _ALLOWED.backends


def flash_allowed() -> bool:
    """Whether F.scaled_dot_product_attention may compute as torch's CPU flash kernel."""
    return SDPBackend.FLASH_ATTENTION in _ALLOWED.backends


def set_allowed(backends: frozenset) -> None:
    if not backends & CPU_BACKENDS:
        names = ", ".join(sorted(b.name for b in backends)) or "none"
        raise KilnError(f"sdpa_kernel: {names} leaves F.scaled_dot_product_attention no kernel on CPU (torch's 'No available "
                        "kernel'); allow SDPBackend.MATH or SDPBackend.FLASH_ATTENTION")
    _ALLOWED.backends = backends


@contextlib.contextmanager
def sdpa_kernel(backends: Any, set_priority: bool = False) -> Iterator[None]:
    """Allow only ``backends`` (one SDPBackend or a list) inside the block, as torch.nn.attention.sdpa_kernel."""
    chosen = frozenset([backends] if isinstance(backends, SDPBackend) else backends)
    if not all(isinstance(b, SDPBackend) for b in chosen):
        raise TypeError(f"sdpa_kernel: backends must be SDPBackend members or a list of them, got {backends!r}")
    saved = _ALLOWED.backends
    set_allowed(chosen)
    try:
        yield
    finally:
        _ALLOWED.backends = saved


def _switch(backend: SDPBackend, enabled: bool) -> None:
    set_allowed(_ALLOWED.backends | {backend} if enabled else _ALLOWED.backends - {backend})


def enable_flash_sdp(enabled: bool) -> None:
    _switch(SDPBackend.FLASH_ATTENTION, bool(enabled))


def enable_math_sdp(enabled: bool) -> None:
    _switch(SDPBackend.MATH, bool(enabled))


def enable_mem_efficient_sdp(enabled: bool) -> None:
    _switch(SDPBackend.EFFICIENT_ATTENTION, bool(enabled))


def enable_cudnn_sdp(enabled: bool) -> None:
    _switch(SDPBackend.CUDNN_ATTENTION, bool(enabled))


def flash_sdp_enabled() -> bool:
    return flash_allowed()


def math_sdp_enabled() -> bool:
    return SDPBackend.MATH in _ALLOWED.backends


def mem_efficient_sdp_enabled() -> bool:
    return SDPBackend.EFFICIENT_ATTENTION in _ALLOWED.backends


def cudnn_sdp_enabled() -> bool:
    return SDPBackend.CUDNN_ATTENTION in _ALLOWED.backends


@contextlib.contextmanager
def sdp_kernel(enable_flash: bool = True, enable_math: bool = True, enable_mem_efficient: bool = True,
               enable_cudnn: bool = True) -> Iterator[None]:
    """torch.backends.cuda.sdp_kernel (deprecated there for sdpa_kernel): the same switch by flags."""
    flags = {SDPBackend.FLASH_ATTENTION: enable_flash, SDPBackend.MATH: enable_math,
             SDPBackend.EFFICIENT_ATTENTION: enable_mem_efficient, SDPBackend.CUDNN_ATTENTION: enable_cudnn}
    with sdpa_kernel([backend for backend, on in flags.items() if on]):
        yield
