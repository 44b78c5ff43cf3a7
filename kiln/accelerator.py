"""``kiln.accelerator``: ``torch.accelerator``'s questions (PyTorch 2.6+), answered by kiln's GPU backend (CuPy).

Current PyTorch programs pick their device this way, as pytorch/examples' vae and mnist do:

```python
use_accel = not args.no_accel and kiln.accelerator.is_available()
device = kiln.accelerator.current_accelerator() if use_accel else kiln.device("cpu")
```

Without a GPU that CuPy can use there is no accelerator: ``is_available()`` is False and
``current_accelerator()`` is None, as a CPU build of PyTorch answers. A device changes nothing in kiln (the compiled
step's backend places the data, ``frontend/tensor_device.py``); the GPU runs when a step compiles with ``backend="cupy"``.
"""

from __future__ import annotations

from kiln import cuda
from kiln.compiler.errors import KilnError
from kiln.frontend.tensor_device import device


def is_available() -> bool:
    """Whether an accelerator runs here: the CuPy backend imports and sees a GPU (``kiln.cuda.is_available()``)."""
    return cuda.is_available()


def current_accelerator(check_available: bool = False) -> device | None:
    """``kiln.device("cuda")`` where a GPU runs; else None (with ``check_available``, as without: PyTorch's answer
    when the accelerator is built but not available is None too)."""
    return device("cuda") if is_available() else None


def device_count() -> int:
    return cuda.device_count()


def current_device_index() -> int:
    """0, the device CuPy runs on; an error without one, as PyTorch's."""
    if not is_available():
        raise KilnError("kiln.accelerator.current_device_index(): no accelerator is available (kiln.accelerator.is_available() "
                        "is False); choose the device with 'kiln.accelerator.current_accelerator() or kiln.device(\"cpu\")'")
    return 0


def synchronize(device_index: int | None = None) -> None:
    """Wait for the GPU's queued work (``kiln.cuda.synchronize``); nothing without one."""
    cuda.synchronize()


__all__ = ["current_accelerator", "current_device_index", "device_count", "is_available", "synchronize"]
