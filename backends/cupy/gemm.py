"""Matmuls without operand copies: batched products straight to cuBLAS with strides and transpose flags.

``cupy.matmul`` makes both operands of a batched (3-D and up) product C-contiguous before its strided-batched GEMM,
so every transposed or sliced operand is copied first. In a GPT step that is the attention's ``P^T`` and ``dS^T``
(score-sized), each chunk's key and value slices, and every ``(N, T, d) @ W^T`` weight: about 23 GB a GPT-2-small
step. cuBLAS itself reads any matrix with a unit stride along one axis (a leading dimension and a transpose flag say
the rest) and any batch with one uniform stride, so here those operands go in as they lie:

```
batched_matmul(cupy, p.swapaxes(-1, -2), g)   # one cublasGemmStridedBatchedEx, P read transposed in place
```

A batch of rows times a matrix (``(..., M, K) @ (K, N)``) is one 2-D GEMM over the stacked rows. What cuBLAS cannot
read in place (no unit stride, batch strides that do not merge, other dtypes) goes to ``cupy.matmul`` as before.
float16 goes in as float16 (``CUDA_R_16F``) and is summed in float32 (``CUBLAS_COMPUTE_32F``, float32 alpha and
beta), as ``cupy.matmul`` computes it, so a batched float16 product reads transposed operands in place too.

cuBLAS is column-major: a row-major ``X`` with row stride ``s`` is the column-major ``X^T`` with leading dimension
``s``. So ``C = A B`` (row-major, contiguous) is computed as ``C^T = B^T A^T``: ``B`` is the first operand.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from kiln.compiler.ir.types import dim_value

OP_N, OP_T = 0, 1
"""cuBLAS's ``CUBLAS_OP_N`` and ``CUBLAS_OP_T``."""
CUDA_DTYPES = {np.dtype(np.float32): 0, np.dtype(np.float64): 1, np.dtype(np.float16): 2}
"""``CUDA_R_32F``, ``CUDA_R_64F`` and ``CUDA_R_16F`` (float16 products accumulate in float32: ``compute_type``)."""


@dataclass(frozen=True)
class Layout:
    """A batch of matrices as cuBLAS reads it: ``op`` (N or T) of the column-major storage at ``ptr``."""

    ptr: int
    op: int
    ld: int
    batch_stride: int


def matrix_layout(x: Any, batch_shape: tuple[int, ...]) -> Layout | None:
    """How cuBLAS reads the row-major ``(..., r, c)`` batch ``x`` as a column-major ``(c, r)`` matrix ``x^T``, broadcast
    over ``batch_shape``; ``None`` when it cannot read it in place."""
    if any(s % x.itemsize or s < 0 for s in x.strides):
        return None
    strides = [s // x.itemsize for s in x.strides]
    rows, cols = x.shape[-2], x.shape[-1]
    row_stride, col_stride = (strides[-2] if rows > 1 else cols), (strides[-1] if cols > 1 else 1)
    if col_stride == 1 and row_stride >= max(cols, 1):
        op, ld = OP_N, row_stride  # row-major: the storage read column-major is x^T, as wanted
    elif row_stride == 1 and col_stride >= max(rows, 1):
        op, ld = OP_T, col_stride  # column-major storage of x itself: transpose it
    else:
        return None
    batch_stride = merged_batch_stride(x.shape[:-2], strides[:-2], batch_shape)
    return None if batch_stride is None else Layout(x.data.ptr, op, ld, batch_stride)


def merged_batch_stride(shape: tuple[int, ...], strides: list[int], batch_shape: tuple[int, ...]) -> int | None:
    """The one stride that walks ``shape`` broadcast to ``batch_shape`` in row-major order, or ``None`` if none does."""
    padded = [1] * (len(batch_shape) - len(shape)) + list(shape)
    steps = [0] * (len(batch_shape) - len(shape)) + list(strides)
    walk = [(0 if size == 1 else step, extent) for size, step, extent in zip(padded, steps, batch_shape) if extent > 1]
    if not walk:
        return 0
    stride = walk[-1][0]
    for (outer, _), (inner, extent) in zip(walk, walk[1:]):
        if outer != inner * extent:
            return None
    return stride


def batched_matmul(cupy: Any, a: Any, b: Any) -> Any:
    """``a @ b`` with NumPy's broadcasting, reading strided and transposed operands in place where cuBLAS can."""
    if a.ndim <= 2 and b.ndim <= 2 or a.ndim < 2 or b.ndim < 2 or a.dtype != b.dtype or a.dtype not in CUDA_DTYPES or 0 in a.shape + b.shape:
        return cupy.matmul(a, b)
    if b.ndim == 2:  # rows of a batch times one matrix: one 2-D GEMM (a reshape copies only rows that do not stack)
        return cupy.matmul(a.reshape(-1, a.shape[-1]), b).reshape(a.shape[:-1] + b.shape[-1:])
    batch_shape = tuple(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]))
    left, right = matrix_layout(a, batch_shape), matrix_layout(b, batch_shape)
    if left is None or right is None:
        return cupy.matmul(a, b)
    out = cupy.empty(batch_shape + (a.shape[-2], b.shape[-1]), a.dtype)
    _gemm_strided_batched(a.dtype, right, left, out, m=b.shape[-1], n=a.shape[-2], k=a.shape[-1])
    return out


def _gemm_strided_batched(dtype: np.dtype, first: Layout, second: Layout, out: Any, m: int, n: int, k: int) -> None:
    """``out^T (m x n) = op(first) op(second)`` for every batch, ``out`` C-contiguous."""
    from cupy.cuda import device
    from cupy_backends.cuda.libs import cublas

    scalar = np.float32 if dtype == np.float16 else dtype  # alpha and beta in the compute type (float for float16)
    one, zero = np.ones((), scalar), np.zeros((), scalar)  # host scalars, alive for the call
    batch = math.prod(out.shape[:-2])
    cublas.gemmStridedBatchedEx(
        device.get_cublas_handle(), first.op, second.op, m, n, k, one.ctypes.data,
        first.ptr, CUDA_DTYPES[dtype], first.ld, first.batch_stride,
        second.ptr, CUDA_DTYPES[dtype], second.ld, second.batch_stride,
        zero.ctypes.data, out.data.ptr, CUDA_DTYPES[dtype], m, m * n, batch, compute_type(cublas, dtype), cublas.CUBLAS_GEMM_DEFAULT)


def compute_type(cublas: Any, dtype: np.dtype) -> int:
    """float64; float32, or TF32 where ``set_tf32`` turned it on (CuPy's own float32 setting, read per call); float32
    for float16 (what ``cupy.matmul`` picks for float16: float16 in and out, summed in float, rounded once)."""
    from cupy._core import _routines_linalg as linalg

    if dtype == np.float64:
        return cublas.CUBLAS_COMPUTE_64F
    if dtype == np.float16:
        return cublas.CUBLAS_COMPUTE_32F
    tf32 = linalg.get_compute_type(np.float32) == linalg.COMPUTE_TYPE_TF32
    return cublas.CUBLAS_COMPUTE_32F_FAST_TF32 if tf32 else cublas.CUBLAS_COMPUTE_32F


def device_matmul(cupy: Any) -> Callable[[Any, Any], Any]:
    """The CuPy backend's ``tensor.matmul`` (and the GEMM of ``fused.matmul``)."""
    return lambda a, b: batched_matmul(cupy, a, b)


def batch_walkable(shape: tuple[int, ...], strides: list[int]) -> bool:
    """Whether one stride walks the batch (leading) axes of a ``shape`` with these element ``strides``."""
    return len(shape) < 3 or merged_batch_stride(tuple(shape[:-2]), list(strides[:-2]), tuple(shape[:-2])) is not None


def transpose_copies(shape: tuple[Any, ...], perm: tuple[int, ...] | None) -> bool:
    """Whether ``device_transpose`` copies the transpose of a C-contiguous ``shape``: when the transposed batch axes
    take more than one stride, as splitting heads does (``(N, T, H, E) -> (N, H, T, E)``). ``None``: axes reversed.
    Symbolic dims count as 2 (a batch of more than one)."""
    shape = tuple(dim_value(d, {}, default=2) for d in shape)
    perm = tuple(reversed(range(len(shape)))) if perm is None else perm
    strides = [math.prod(shape[i + 1:]) for i in range(len(shape))]
    return not batch_walkable(tuple(shape[p] for p in perm), [strides[p] for p in perm])


def device_transpose(cupy: Any) -> Callable[..., Any]:
    """The CuPy backend's ``tensor.transpose``: a view, unless its batch axes take more than one stride (split heads).
    Every batched matmul reading such a view would copy it, so it is made contiguous once here; cuBLAS then reads it
    and its row slices (attention chunks) in place."""

    def transpose(x: Any, *, perm: tuple[int, ...] | None) -> Any:
        view = cupy.transpose(x, perm)
        return view if batch_walkable(view.shape, [s // view.itemsize for s in view.strides]) else cupy.ascontiguousarray(view)

    return transpose
