"""The CuPy backend: the same compiled steps on an NVIDIA GPU, fusion groups as generated CUDA kernels.

CuPy is imported lazily (``pip install 'kiln[cuda12]'`` or ``'kiln[cuda13]'``):
importing this package, generating kernel source (``codegen``) and planning
launches (``plan``) work on any machine; ``compile`` needs CuPy and a GPU.

Matmuls run through cuBLAS with TF32 off, so float32 results match float32
references; ``CupyBackend(tf32=True)``, ``KILN_CUPY_TF32=1`` or, for backends made
after it, ``kiln.set_float32_matmul_precision("high")`` turns it on (the argument
first, then the variable where set, then the precision setting).
``CupyBackend(profile=True)`` or ``KILN_CUPY_PROFILE=1`` builds steps that record
a CUDA event after every op, so ``executable.op_times()`` gives each op's GPU
time (``benchmarks/gpu_profile.py``).

Half precision (``half.py``): float16 tensors stay 16 bits in memory and every op
computes in float32, rounding its result to float16 once, as PyTorch's half
kernels do. ``widen-half`` runs before fusion, so the casts it inserts fuse
into the generated kernels (a kernel loads ``__half``, computes in ``float``,
stores ``__float2half_rn``); matmuls stay float16 (cuBLAS with float32
accumulation, ``CUBLAS_COMPUTE_32F``, CuPy's choice for float16) and so do the
softmax and layer-norm row kernels, which compute in float. bfloat16 is refused
when the graph is compiled (CuPy has no bfloat16 dtype): a ``LoweringError``
says to use float16 or float32 here, or the NumPy backend. float16 kernels need
``cuda_fp16.h`` (the CUDA toolkit's or the ``nvidia-cuda-runtime`` wheel's, which
CuPy finds); without it, compiling a float16 graph says what to install.

```python
model = model.half()
step = kiln.compile_train_step(model, F.cross_entropy, optim.SGD(model.parameters(), lr=0.05), backend="cupy")
```
"""

from __future__ import annotations

import os
from typing import Any

from kiln.backends.cupy.codegen import ElementwiseSource, ReductionSource, elementwise_kernel_source, group_kernels
from kiln.backends.cupy.half import refuse_bfloat16, require_half_headers, uses_half
from kiln.backends.cupy.plan import KernelLaunch, kernel_plan, lower_for_cupy
from kiln.backends.matmul_precision import allows_tf32
from kiln.backends.numpy.codegen import function_name
from kiln.compiler.ir.core import Graph


def device_problem() -> str | None:
    """``None`` when CuPy imports and sees a CUDA device, else why not and what to do (never raises)."""
    try:
        import cupy
    except Exception as error:  # an ImportError, or a CUDA library that fails to load
        return f"cupy is not importable ({type(error).__name__}: {error}); pip install 'kiln[cuda12]' or 'kiln[cuda13]'"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # no driver: CUDARuntimeError
        return f"cupy imports but finds no usable CUDA driver ({type(error).__name__}: {error}); run on a machine with an NVIDIA GPU"
    return None if count > 0 else "cupy imports but this machine has no CUDA device; run on a machine with an NVIDIA GPU"


def set_tf32(cupy: Any, enabled: bool) -> None:
    """float32 GEMMs in TF32 (tensor cores, ~10 mantissa bits) or in full float32 (the default)."""
    import numpy as np
    from cupy._core import _routines_linalg as linalg

    linalg.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_FP32)


def _default_tf32() -> bool:
    """``KILN_CUPY_TF32`` where set (``1`` on, anything else off), else ``kiln.set_float32_matmul_precision``'s choice."""
    variable = os.environ.get("KILN_CUPY_TF32")
    return allows_tf32() if variable is None else variable == "1"


class CupyBackend:
    name = "cupy"

    def __init__(self, tf32: bool | None = None, profile: bool | None = None):
        self.tf32 = _default_tf32() if tf32 is None else tf32
        self.profile = os.environ.get("KILN_CUPY_PROFILE") == "1" if profile is None else profile
        """Record a CUDA event after every op, for ``CupyExecutable.op_times`` (``benchmarks/gpu_profile.py``)."""

    def compile(self, graph: Graph) -> Any:
        """Lower a copy of ``graph`` (fusion as on NumPy), bind generated kernels, and generate one function."""
        refuse_bfloat16(graph)  # before CuPy is imported: the error says what to do on any machine
        import cupy

        from kiln.backends.cupy.executable import OP_EVENTS, CupyExecutable, generate
        from kiln.backends.cupy.lowering import cupy_table

        set_tf32(cupy, self.tf32)
        if uses_half(graph):
            require_half_headers(cupy)
        donations = dict(getattr(graph, "donations", {}))
        lowered = lower_for_cupy(graph)
        source, namespace = generate(cupy, lowered, cupy_table(), profile=self.profile)
        exec(compile(source, f"<kiln-cupy:{lowered.name}>", "exec"), namespace)  # noqa: S102  (our generated code)
        return CupyExecutable(cupy, lowered, namespace[function_name(lowered)], source, donations, namespace.get(OP_EVENTS))


__all__ = [
    "CupyBackend", "ElementwiseSource", "KernelLaunch", "ReductionSource", "device_problem", "elementwise_kernel_source",
    "group_kernels", "kernel_plan", "lower_for_cupy",
]
