"""``torch.set_num_threads``/``get_num_threads`` for kiln: the BLAS pool NumPy's matmuls run on.

```python
kiln.set_num_threads(1)        # pin the BLAS pool (OpenBLAS, MKL, BLIS) of this process, as torch's intra-op pool
kiln.get_num_threads()         # what it is now
```

kiln's CPU compute is NumPy's, whose only thread pool is its BLAS library's
(GEMMs, convolutions as GEMMs); elementwise kernels are single-threaded. The
pool is resized through ``threadpoolctl`` (which scikit-learn installs); when
it is missing, ``set_num_threads`` says how to pin the pool instead (the
``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS`` environment variables, before
NumPy loads). ``set_num_interop_threads`` is accepted and changes nothing:
kiln runs one op at a time.
"""

from __future__ import annotations

import os
from typing import Any

from kiln.compiler.errors import KilnError


def set_num_threads(count: int) -> None:
    """Resize the BLAS thread pool to ``count`` threads (at least 1), as ``torch.set_num_threads``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"set_num_threads expects a positive integer, got {count!r}")
    controller = _controller()
    if controller is None:
        raise KilnError("set_num_threads needs threadpoolctl (pip install threadpoolctl) to resize NumPy's BLAS pool; "
                        "or set OPENBLAS_NUM_THREADS / OMP_NUM_THREADS before NumPy is imported")
    controller.limit(limits=count, user_api="blas")


def get_num_threads() -> int:
    """Threads in the BLAS pool (the largest, if NumPy loaded several), as ``torch.get_num_threads``."""
    controller = _controller()
    if controller is not None:
        counts = [pool.num_threads for pool in controller.select(user_api="blas").lib_controllers]
        if counts:
            return max(counts)
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return os.cpu_count() or 1


def set_num_interop_threads(count: int) -> None:
    """Accepted for PyTorch code: kiln runs one op at a time, so there is no inter-op pool to size."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"set_num_interop_threads expects a positive integer, got {count!r}")


def get_num_interop_threads() -> int:
    return 1


_CONTROLLER: list[Any] = []


def _controller() -> Any:
    """One ``threadpoolctl.ThreadpoolController`` (it inspects the loaded libraries once), or None without it."""
    if not _CONTROLLER:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return None
        import numpy  # noqa: F401  (loads the BLAS library the controller finds)

        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


__all__ = ["get_num_interop_threads", "get_num_threads", "set_num_interop_threads", "set_num_threads"]
