"""Compiled CuPy kernels for fused ops, and the launcher each fused op becomes in the generated step function.

Kernels are cached by their source (``_KERNELS``): a group of the same
structure and dtypes compiles once per process, whichever graph it is in;
CuPy keeps the compiled binaries on disk (``~/.cupy/kernel_cache``, or
``CUPY_CACHE_DIR``), so a later process skips NVRTC too.
"""

from __future__ import annotations

from typing import Any, Callable

from kiln.backends.cupy.codegen import ElementwiseSource, ReductionSource, group_kernels
from kiln.backends.cupy.gemm import device_matmul
from kiln.backends.cupy.row_kernels import RawSource
from kiln.compiler.ir.core import Op

Launcher = Callable[..., Any]

_KERNELS: dict[ElementwiseSource | ReductionSource | RawSource, Any] = {}
"""Source -> the CuPy kernel object (compiled on first launch, per dtype signature, by CuPy)."""


def compiled(cupy: Any, source: ElementwiseSource | ReductionSource | RawSource) -> Any:
    if source not in _KERNELS:
        _KERNELS[source] = _build(cupy, source)
    return _KERNELS[source]


def _build(cupy: Any, source: ElementwiseSource | ReductionSource | RawSource) -> Any:
    if isinstance(source, RawSource):
        return cupy.RawKernel(source.code, source.name)
    if isinstance(source, ElementwiseSource):
        return cupy.ElementwiseKernel(source.in_params, source.out_params, source.body, source.name, preamble=source.preamble)
    return cupy.ReductionKernel(
        source.in_params, source.out_params, source.map_expr, source.reduce_expr, source.post_map_expr, source.identity,
        source.name, reduce_type=source.reduce_type, preamble=source.preamble,
    )


def launcher(cupy: Any, op: Op) -> Launcher:
    """``launch(*operands) -> result or tuple of results`` for one fused op: its GEMM, then its generated kernels."""
    group = group_kernels(op)
    count = len(op.attrs["yields"])
    calls = [(_callable(cupy, call.source), call.reads, call.writes) for call in group.calls]
    matmul = device_matmul(cupy)

    def launch(*arrays: Any) -> Any:
        slots, results = dict(enumerate(arrays)), [None] * count
        if group.gemm is not None:
            slots[group.product] = product = matmul(arrays[group.gemm[0]], arrays[group.gemm[1]])
            for position in group.direct_yields:
                results[position] = product
        for kernel, reads, writes in calls:
            outputs = kernel(*[slots[s] for s in reads])
            for position, value in zip(writes, outputs if isinstance(outputs, tuple) else (outputs,)):
                results[position] = value
        return tuple(results) if count > 1 else results[0]

    return launch


def _callable(cupy: Any, source: ElementwiseSource | ReductionSource) -> Callable[..., Any]:
    kernel = compiled(cupy, source)
    if isinstance(source, ElementwiseSource):
        return kernel
    axes = tuple(source.axes) if isinstance(source.axes, (tuple, list)) else source.axes
    return lambda *arrays: kernel(*arrays, axis=axes, keepdims=source.keepdims)
