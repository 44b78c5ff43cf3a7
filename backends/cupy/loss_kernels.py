"""Cross-entropy over integer labels as row kernels: one block per sample, the logits read once for the loss and twice
for the gradient, nothing of the logits' size written but the gradient itself.

The re-bound NumPy path writes the whole log-softmax for the loss, and the expanded gradient builds a float one-hot,
the softmax and the scaled difference (about five passes over ``(N, C)`` arrays). For a language model's head
(GPT-2: 8192 rows of 50257 classes, 1.6 GB per pass) that traffic is milliseconds a step. Here a block keeps a
running max and sum of exponentials (``logsumexp`` in one pass, rescaling the sum when the max grows), so:

```
loss_i = logsumexp(x_i) - (1 - eps) x_i[y_i] - eps mean_j x_ij          (0 where y_i == ignore_index)
dx_ij  = (softmax(x_i)_j - (1 - eps) [j == y_i] - eps / C) * scale_i   (0 where y_i == ignore_index)
```

with ``eps`` the label smoothing and ``scale_i`` the loss's cotangent (divided by the kept count for a mean).
Class weights, probability targets and logits with more than two axes keep the general path. float16 logits are
read as float16 and everything else is float: the per-row losses, their sum (rounded to float16 once, at the end)
and the cotangent's scale; the gradient is stored as float16.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from kiln.backends.cupy.expressions import STORAGE_TYPES, c_type
from kiln.backends.cupy.row_kernels import ROW_DTYPES, THREADS, RawSource, block_reduce, computed_in, half_header, load, store
from kiln.compiler.ir.types import DType, TensorType

LOWEST = {"float": "(-3.402823466e+38f)", "double": "(-1.7976931348623157e+308)"}
"""The running max's start: finite, so an empty thread or a row of -inf never computes ``-inf - -inf``."""
QUIET_NAN = {"float": "__int_as_float(0x7fc00000)", "double": "__longlong_as_double(0x7ff8000000000000ULL)"}
"""NaN through CUDA intrinsics (NVRTC has no ``NAN`` without headers)."""


def cross_entropy_rows_apply(logits: TensorType, target: TensorType, weighted: bool) -> bool:
    """``(N, C)`` f16/f32/f64 logits, ``(N,)`` integer labels, no class weight: the row kernels' case."""
    return (logits.rank == 2 and logits.dtype in ROW_DTYPES and target.rank == 1
            and target.dtype in (DType.i32, DType.i64) and not weighted)


def _block_logsumexp(t: str) -> str:
    """``kiln_block_logsumexp_T``: every thread gets the row's ``(max, sum exp(x - max))`` from its own pair."""
    return f"""__device__ void kiln_block_logsumexp_{t}({t}* top, {t}* total, {t}* scratch_top, {t}* scratch_total) {{
    scratch_top[threadIdx.x] = *top;
    scratch_total[threadIdx.x] = *total;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {{
        if (threadIdx.x < stride) {{
            const {t} a = scratch_top[threadIdx.x];
            const {t} b = scratch_top[threadIdx.x + stride];
            const {t} m = max(a, b);
            scratch_total[threadIdx.x] = scratch_total[threadIdx.x] * exp(a - m) + scratch_total[threadIdx.x + stride] * exp(b - m);
            scratch_top[threadIdx.x] = m;
        }}
        __syncthreads();
    }}
    *top = scratch_top[0];
    *total = scratch_total[0];
    __syncthreads();
}}"""


def _row_logsumexp(dtype: DType, summed: bool = False) -> str:
    """The body's first pass: this row's label, ``top`` and ``total`` (and with ``summed``, ``sum`` of its logits)."""
    t = c_type(dtype)
    return f"""    __shared__ {t} scratch_top[{THREADS}];
    __shared__ {t} scratch_total[{THREADS}];
    const {STORAGE_TYPES[dtype]}* in = x + blockIdx.x * cols;
    const long long label = labels[blockIdx.x];
    const bool kept = label != ignore_index;
    {t} top = {LOWEST[t]}, total = 0{", sum = 0" if summed else ""};
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {{
        const {t} v = {load(dtype, "in[j]")};
        if (v > top) {{ total = total * exp(top - v) + 1; top = v; }} else {{ total += exp(v - top); }}{" sum += v;" if summed else ""}
    }}
    kiln_block_logsumexp_{t}(&top, &total, scratch_top, scratch_total);"""


def cross_entropy_loss_source(dtype: DType) -> RawSource:
    """Per-row losses: ``(x, labels int64, loss, cols, ignore_index, smoothing)``, one block per row."""
    t, e = c_type(dtype), STORAGE_TYPES[dtype]
    name = f"kiln_cross_entropy_rows_{dtype.value}"
    code = f"""{half_header(dtype)}{block_reduce(t)}
{_block_logsumexp(t)}
extern "C" __global__ void {name}(const {e}* x, const long long* labels, {t}* loss, long long cols, long long ignore_index, {t} smoothing) {{
{_row_logsumexp(dtype, summed=True)}
    const {t} row_sum = kiln_block_sum_{t}(sum, scratch_top);
    if (threadIdx.x == 0) {{
        const {t} picked = (label >= 0 && label < cols) ? {load(dtype, "in[label]")} : {QUIET_NAN[t]};  // out of range: the deferred check raises
        const {t} spread = smoothing != 0 ? smoothing * row_sum / ({t})cols : ({t})0;  // -inf logits: no 0 * -inf
        loss[blockIdx.x] = kept ? top + log(total) - (1 - smoothing) * picked - spread : ({t})0;
    }}
}}
"""
    return RawSource(name, code)


def cross_entropy_grad_source(dtype: DType) -> RawSource:
    """Gradient rows: ``(x, labels int64, scale, scale_stride, dx, cols, ignore_index, smoothing)``; ``scale[i * stride]``
    is row ``i``'s factor (stride 0: one factor for every row)."""
    t, e = c_type(dtype), STORAGE_TYPES[dtype]
    name = f"kiln_cross_entropy_grad_rows_{dtype.value}"
    code = f"""{half_header(dtype)}{_block_logsumexp(t)}
extern "C" __global__ void {name}(const {e}* x, const long long* labels, const {t}* scale, long long scale_stride, {e}* dx,
                                  long long cols, long long ignore_index, {t} smoothing) {{
{_row_logsumexp(dtype)}
    {e}* out = dx + blockIdx.x * cols;
    const {t} factor = kept ? scale[blockIdx.x * scale_stride] : ({t})0;
    const {t} inverse_total = ({t})1 / total;
    const {t} spread = smoothing / ({t})cols;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {{
        const {t} target = (j == label ? 1 - smoothing : ({t})0) + spread;
        out[j] = {store(dtype, f"(exp({load(dtype, 'in[j]')} - top) * inverse_total - target) * factor")};
    }}
}}
"""
    return RawSource(name, code)


def cross_entropy_kernels(cupy: Any, fallback: dict[str, Callable[..., Any]], launch: Callable[..., None],
                          check_labels: Callable[..., None]) -> dict[str, Callable[..., Any]]:
    """``nn.cross_entropy`` and ``nn.cross_entropy_grad`` through the row kernels where they apply, else ``fallback``'s
    (the re-bound NumPy kernels); ``check_labels(op, labels, keep, classes, ignore_index)`` range-checks the labels."""

    def applies(logits: Any, target: Any, weight: Any) -> bool:
        return logits.size > 0 and cross_entropy_rows_apply(TensorType.of_array(logits), TensorType.of_array(target), weight is not None)

    def labels_of(op: str, logits: Any, target: Any, ignore_index: int) -> Any:
        check_labels(op, target, target != ignore_index, logits.shape[1], ignore_index)
        return cupy.ascontiguousarray(target, dtype=np.int64)

    def loss(logits: Any, target: Any, weight: Any = None, *, reduction: str, ignore_index: int = -100, label_smoothing: float = 0.0) -> Any:
        if not applies(logits, target, weight):
            return fallback["nn.cross_entropy"](logits, target, weight, reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing)
        logits, dtype, computed = cupy.ascontiguousarray(logits), DType.of(logits.dtype), computed_in(logits.dtype)
        per_row = cupy.empty(logits.shape[0], computed)
        labels = labels_of("nn.cross_entropy", logits, target, ignore_index)
        launch(cross_entropy_loss_source(dtype), logits.shape[0], logits, labels, per_row, np.int64(logits.shape[1]),
               np.int64(ignore_index), computed(label_smoothing))
        if reduction != "none":
            per_row = per_row.sum() if reduction == "sum" else per_row.sum() / _kept(labels, ignore_index, computed)
        return per_row.astype(logits.dtype, copy=False)  # float16 logits: the float loss rounded once

    def grad(logits: Any, target: Any, cotangent: Any, weight: Any = None, *, reduction: str, ignore_index: int = -100,
             label_smoothing: float = 0.0) -> Any:
        if not applies(logits, target, weight):
            return fallback["nn.cross_entropy_grad"](logits, target, cotangent, weight, reduction=reduction, ignore_index=ignore_index,
                                                     label_smoothing=label_smoothing)
        logits, dtype = cupy.ascontiguousarray(logits), DType.of(logits.dtype)
        labels = labels_of("nn.cross_entropy_grad", logits, target, ignore_index)
        computed = computed_in(logits.dtype)
        cotangent = cotangent.astype(computed, copy=False)  # a float16 cotangent scales in float
        scale = cotangent if reduction != "mean" else cotangent / _kept(labels, ignore_index, computed)
        scale = cupy.ascontiguousarray(scale, dtype=computed).reshape(-1)
        dx = cupy.empty_like(logits)
        launch(cross_entropy_grad_source(dtype), logits.shape[0], logits, labels, scale, np.int64(1 if reduction == "none" else 0), dx,
               np.int64(logits.shape[1]), np.int64(ignore_index), computed(label_smoothing))
        return dx

    return {"nn.cross_entropy": loss, "nn.cross_entropy_grad": grad}


def _kept(labels: Any, ignore_index: int, dtype: Any) -> Any:
    """How many labels count (``!= ignore_index``): a mean's divisor, on the device."""
    return (labels != ignore_index).sum().astype(dtype)
