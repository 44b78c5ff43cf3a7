"""Freed host memory stays with the process, so a step's temporaries reuse warm pages instead of faulting in new ones.

glibc's malloc hands a freed block back to the kernel when it was mmapped (above
the mmap threshold: 128 KiB at first, raised as blocks are freed) or when the
free top of the heap passes the trim threshold. A training step allocates and
frees the same large temporaries every time (a kernel's scratch: im2col columns,
attention scores), so each step faulted their pages in again: 1,872 minor
faults per step of the W5 CNN (batch 256), 14.9 ms a step against 7.9 ms with
freed memory kept; 2,191 per W4 GPT step, 70 ms against 59.

``keep_freed_host_memory`` raises both thresholds once (``mallopt``), the way
PyTorch's caching allocator keeps GPU memory: the process's resident memory
then stays near its high-water mark. The NumPy backend calls it when it
compiles. ``KILN_KEEP_FREED_MEMORY=0`` leaves malloc alone. Only glibc has
``mallopt``; elsewhere (macOS, musl) nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 << 20
"""Blocks up to 32 MiB (glibc's ceiling on 64-bit) come from the heap; larger ones are still mapped per call, their
page faults a small share of the work done on them."""
TRIM_THRESHOLD = 1 << 30
"""Up to 1 GiB of free memory at the top of the heap stays mapped."""

_lock = threading.Lock()
_state: dict[str, bool] = {}


def keep_freed_host_memory() -> bool:
    """Tune malloc once per process; True if freed memory is now kept (False: opted out, or not glibc)."""
    with _lock:
        if "kept" not in _state:
            _state["kept"] = _tune_malloc()
        return _state["kept"]


def _tune_malloc() -> bool:
    if os.environ.get("KILN_KEEP_FREED_MEMORY", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):  # musl's mallopt does nothing
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
