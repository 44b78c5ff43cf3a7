"""``kiln.backends.cuda``: the ``torch.backends.cuda`` settings PyTorch scripts set, so they run unchanged.

``matmul.allow_tf32`` is ``kiln.set_float32_matmul_precision`` under torch's other name ("high" when True, "highest"
when False: TF32 on the CuPy backend; NumPy and ONNX Runtime compute float32 either way). The SDP switches choose
among torch's attention kernels (``frontend/sdpa_backends.py``).

```python
import kiln as torch
torch.backends.cuda.matmul.allow_tf32 = True      # nanoGPT's train.py
with torch.backends.cuda.sdp_kernel(enable_flash=False):
    ...
```
"""

from __future__ import annotations

from kiln.backends.matmul_precision import get_float32_matmul_precision, set_float32_matmul_precision
from kiln.frontend.sdpa_backends import (  # noqa: F401  (torch.backends.cuda's names)
    cudnn_sdp_enabled, enable_cudnn_sdp, enable_flash_sdp, enable_math_sdp, enable_mem_efficient_sdp, flash_sdp_enabled,
    math_sdp_enabled, mem_efficient_sdp_enabled, sdp_kernel)


class _MatmulSettings:
    """``torch.backends.cuda.matmul``: ``allow_tf32`` reads and sets the float32 matmul precision; the reduced-
    precision reduction flags are kept (a script may read back what it set): kiln's half GEMMs accumulate in float32."""

    allow_fp16_reduced_precision_reduction: bool = True
    allow_bf16_reduced_precision_reduction: bool = True

    @property
    def allow_tf32(self) -> bool:
        return get_float32_matmul_precision() != "highest"

    @allow_tf32.setter
    def allow_tf32(self, allowed: bool) -> None:
        set_float32_matmul_precision("high" if allowed else "highest")


matmul = _MatmulSettings()


def is_built() -> bool:
    """Whether kiln can run on CUDA at all: CuPy importable (``kiln.cuda.is_available()`` asks for a GPU too)."""
    import importlib.util

    return importlib.util.find_spec("cupy") is not None
