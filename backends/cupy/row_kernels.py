"""Fused row kernels: softmax (also masked), log-softmax, the softmax's gradient and layer norm (and its gradient) over
the trailing axis, one CUDA block per row (layer norm's gradient: a few rows a block).

Each is one ``RawKernel`` launch where the re-bound NumPy kernel would launch
five to eight (max, subtract, exp, sum, divide, ...): a block of 256 threads
strides over its row, and tree reductions in shared memory give the row's
max and sum (or mean and variance). Rows are contiguous: the launcher moves
the softmax axis last and makes the input contiguous first (one copy when the
axis is not already last). Cross-entropy gets its log-softmax from here.

```
softmax_source(DType.f32)  ->  RawSource("kiln_softmax_f32", 'extern "C" __global__ void kiln_softmax_f32(...) {...}')
```
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiln.backends.cupy.expressions import STORAGE_TYPES, _extreme, c_type
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ops.transformer import MASKED_SCORE

THREADS = 256
"""Threads per block (a power of two: the tree reductions halve it)."""

ROW_DTYPES = (DType.f16, DType.f32, DType.f64)
"""The row kernels' dtypes: float16 rows are loaded, reduced and computed in float and stored as float16."""


def load(dtype: DType, element: str) -> str:
    """An element read from memory, in the type the kernel computes in (a float16 element: ``__half2float``)."""
    return f"__half2float({element})" if dtype is DType.f16 else element


def store(dtype: DType, value: str) -> str:
    """A computed value as the element written to memory (float16: ``__float2half_rn``, to nearest even)."""
    return f"__float2half_rn({value})" if dtype is DType.f16 else value


def computed_in(dtype: np.dtype) -> type:
    """The NumPy scalar type of a row kernel's float parameters and float scratch arrays for rows of ``dtype``:
    float32 for float16 rows (the kernel computes in float, and CuPy passes a scalar by its own size), else ``dtype``'s."""
    return np.float32 if dtype == np.float16 else dtype.type


def half_header(dtype: DType) -> str:
    return "#include <cuda_fp16.h>\n" if dtype is DType.f16 else ""


@dataclass(frozen=True)
class RawSource:
    """The arguments of ``cupy.RawKernel(code, name)``: launched as ``kernel((rows,), (THREADS,), args)``."""

    name: str
    code: str

    def text(self) -> str:
        return f"// row kernel {self.name}: one block of {THREADS} threads per row\n{self.code}"


def block_reduce(t: str) -> str:
    """``kiln_block_sum`` / ``kiln_block_max``: every thread of the block gets the reduction of ``value``."""
    functions = []
    for name, combine in (("sum", "a + b"), ("max", "max(a, b)")):
        functions.append(f"""__device__ {t} kiln_block_{name}_{t.replace(' ', '_')}({t} value, {t}* scratch) {{
    scratch[threadIdx.x] = value;
    __syncthreads();
    for (int stride = blockDim.x / 2; stride > 0; stride >>= 1) {{
        if (threadIdx.x < stride) {{
            const {t} a = scratch[threadIdx.x];
            const {t} b = scratch[threadIdx.x + stride];
            scratch[threadIdx.x] = {combine};
        }}
        __syncthreads();
    }}
    const {t} result = scratch[0];
    __syncthreads();
    return result;
}}""")
    return "\n".join(functions)


def softmax_source(dtype: DType, log: bool = False) -> RawSource:
    """``softmax(x) = exp(x - max) / sum(exp(x - max))`` (or ``x - max - log(sum)``) over each row."""
    e = STORAGE_TYPES[dtype]
    return _softmax_rows(dtype, f"kiln_{'log_' if log else ''}softmax_{dtype.value}", f"const {e}* x, {e}* y, long long cols", load(dtype, "in[j]"), log)


def masked_softmax_source(dtype: DType) -> RawSource:
    """``softmax(where(keep, x, -1e9))`` over each row (``nn.masked_softmax``), the mask row ``blockIdx.x % mask_rows``: one
    ``(mask_rows, cols)`` mask for every batch and head, read beside the scores (no masked copy of them is written)."""
    t, e = c_type(dtype), STORAGE_TYPES[dtype]
    params = f"const {e}* x, const bool* keep, {e}* y, long long cols, long long mask_rows"
    prologue = f"""    const bool* kept = keep + (blockIdx.x % mask_rows) * cols;
    const {t} masked = ({t}){MASKED_SCORE};
"""
    return _softmax_rows(dtype, f"kiln_masked_softmax_{dtype.value}", params, f"(kept[j] ? {load(dtype, 'in[j]')} : masked)", prologue=prologue)


def _softmax_rows(dtype: DType, name: str, params: str, value: str, log: bool = False, prologue: str = "") -> RawSource:
    """The three passes of a row softmax (max, sum of exponentials, write) over ``value``, element ``j`` of the row."""
    t, e = c_type(dtype), STORAGE_TYPES[dtype]
    scale, write = (f"const {t} log_sum = log(row_sum);", f"{value} - row_max - log_sum") if log else \
        (f"const {t} inverse_sum = ({t})1 / row_sum;", f"exp({value} - row_max) * inverse_sum")
    code = f"""{half_header(dtype)}{block_reduce(t)}
extern "C" __global__ void {name}({params}) {{
    __shared__ {t} scratch[{THREADS}];
    const {e}* in = x + blockIdx.x * cols;
    {e}* out = y + blockIdx.x * cols;
{prologue}    {t} local = {_extreme(t, low=True)};
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) local = max(local, {value});
    const {t} row_max = kiln_block_max_{t}(local, scratch);
    {t} sum = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) sum += exp({value} - row_max);
    const {t} row_sum = kiln_block_sum_{t}(sum, scratch);
    {scale}
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) out[j] = {store(dtype, write)};
}}
"""
    return RawSource(name, code)


def masked_rows_apply(x: TensorType, keep: TensorType) -> bool:
    """The masked row kernel's case: f16/f32/f64 scores and one ``(L, S)`` (or ``(S,)``) mask shared by every leading index."""
    if x.dtype not in ROW_DTYPES or x.rank < 1 or keep.rank < 1 or keep.shape[-1] != x.shape[-1]:
        return False
    leading = keep.shape[:-2] if keep.rank >= 2 else ()
    return all(d == 1 for d in leading) and (keep.rank < 2 or x.rank >= 2 and keep.shape[-2] == x.shape[-2])


def softmax_grad_source(dtype: DType) -> RawSource:
    """``y * (g - sum(g * y))`` over each row: the VJP of ``y = softmax(x)``, one read of ``y`` and ``g`` per pass."""
    t, e = c_type(dtype), STORAGE_TYPES[dtype]
    name = f"kiln_softmax_grad_{dtype.value}"
    y, g = load(dtype, "y[offset + j]"), load(dtype, "g[offset + j]")
    code = f"""{half_header(dtype)}{block_reduce(t)}
extern "C" __global__ void {name}(const {e}* y, const {e}* g, {e}* dx, long long cols) {{
    __shared__ {t} scratch[{THREADS}];
    const long long offset = blockIdx.x * cols;
    {t} dot = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) dot += {g} * {y};
    const {t} row_dot = kiln_block_sum_{t}(dot, scratch);
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) dx[offset + j] = {store(dtype, f"{y} * ({g} - row_dot)")};
}}
"""
    return RawSource(name, code)


def layer_norm_source(dtype: DType) -> RawSource:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over each row (the trailing dims that weight covers); ``eps`` in
    the type the kernel computes in (float for float16 rows)."""
    t, e = c_type(dtype), STORAGE_TYPES[dtype]
    name = f"kiln_layer_norm_{dtype.value}"
    x, weight, bias = load(dtype, "in[j]"), load(dtype, "weight[j]"), load(dtype, "bias[j]")
    code = f"""{half_header(dtype)}{block_reduce(t)}
extern "C" __global__ void {name}(const {e}* x, const {e}* weight, const {e}* bias, {e}* y, long long cols, {t} eps) {{
    __shared__ {t} scratch[{THREADS}];
    const {e}* in = x + blockIdx.x * cols;
    {e}* out = y + blockIdx.x * cols;
    {t} sum = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) sum += {x};
    const {t} mean = kiln_block_sum_{t}(sum, scratch) / ({t})cols;
    {t} squares = 0;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) squares += ({x} - mean) * ({x} - mean);
    const {t} variance = kiln_block_sum_{t}(squares, scratch) / ({t})cols;
    const {t} scale = ({t})1 / sqrt(variance + eps);
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) out[j] = {store(dtype, f"({x} - mean) * scale * {weight} + {bias}")};
}}
"""
    return RawSource(name, code)


GRAD_BLOCKS = 1024
"""At most this many blocks for layer norm's backward: each sums its rows' weight and bias gradients into one partial row,
and the partials (``blocks x cols``, a few MB) are summed after; 1024 blocks of 256 threads about fill an H100/H200."""


def layer_norm_grad_blocks(rows: int) -> tuple[int, int]:
    """``(blocks, rows_per_block)`` of the layer-norm backward's launch over ``rows`` rows (``rows >= 1``)."""
    rows_per_block = -(-rows // min(rows, GRAD_BLOCKS))
    return -(-rows // rows_per_block), rows_per_block


def layer_norm_grad_source(dtype: DType) -> RawSource:
    """``nn.layer_norm_grad`` over each row, ``rows_per_block`` rows a block: ``dx = r (dxh - mean(dxh) - xh mean(dxh xh))``,
    ``dxh = g w``, and the block's partial sums of ``g xh`` and ``g`` (the weight's and bias's gradients), one row of each
    per block. Reads ``x`` and ``g`` (three passes over a row that stays in cache), writes ``dx``: no normalized copy.
    float16 rows: the partial sums are float (``computed_in``), summed and rounded to half after the launch."""
    t, e = c_type(dtype), STORAGE_TYPES[dtype]
    name = f"kiln_layer_norm_grad_{dtype.value}"
    x, w, g = load(dtype, "in[j]"), load(dtype, "weight[j]"), load(dtype, "grad[j]")
    code = f"""{half_header(dtype)}{block_reduce(t)}
extern "C" __global__ void {name}(const {e}* x, const {e}* weight, const {e}* g, {e}* dx, {t}* partial_weight, {t}* partial_bias,
                                  long long rows, long long cols, long long rows_per_block, {t} eps) {{
    __shared__ {t} scratch[{THREADS}];
    {t}* d_weight = partial_weight + blockIdx.x * cols;
    {t}* d_bias = partial_bias + blockIdx.x * cols;
    for (long long j = threadIdx.x; j < cols; j += blockDim.x) {{ d_weight[j] = 0; d_bias[j] = 0; }}
    const long long first = blockIdx.x * rows_per_block;
    const long long end = first + rows_per_block < rows ? first + rows_per_block : rows;
    for (long long row = first; row < end; ++row) {{
        const {e}* in = x + row * cols;
        const {e}* grad = g + row * cols;
        {e}* out = dx + row * cols;
        {t} sum = 0;
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) sum += {x};
        const {t} mean = kiln_block_sum_{t}(sum, scratch) / ({t})cols;
        {t} squares = 0;
        {t} dot = 0;
        {t} centered_dot = 0;
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {{
            const {t} centered = {x} - mean;
            const {t} d_normalized = {g} * {w};
            squares += centered * centered;
            dot += d_normalized;
            centered_dot += d_normalized * centered;
        }}
        const {t} inverse_std = ({t})1 / sqrt(kiln_block_sum_{t}(squares, scratch) / ({t})cols + eps);
        const {t} mean_d = kiln_block_sum_{t}(dot, scratch) / ({t})cols;
        const {t} mean_dx = kiln_block_sum_{t}(centered_dot, scratch) / ({t})cols * inverse_std;
        for (long long j = threadIdx.x; j < cols; j += blockDim.x) {{
            const {t} normalized = ({x} - mean) * inverse_std;
            out[j] = {store(dtype, f"inverse_std * ({g} * {w} - mean_d - normalized * mean_dx)")};
            d_weight[j] += {g} * normalized;
            d_bias[j] += {g};
        }}
    }}
}}
"""
    return RawSource(name, code)


def row_op_fuses(op_name: str, axis: int | None, rank: int, dtype: DType) -> bool:
    """Whether ``op_name`` runs as one row kernel here: softmax over any axis (moved last), layer norm; f16, f32 or f64."""
    if dtype not in ROW_DTYPES:
        return False
    if op_name in ("nn.softmax", "nn.log_softmax", "nn.softmax_grad"):
        return rank > 0 and axis is not None
    return op_name in ("nn.layer_norm", "nn.layer_norm_grad")
