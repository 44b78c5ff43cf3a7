"""A stand-in for CuPy's cuBLAS binding: ``gemmStridedBatchedEx`` carried out in NumPy on the memory at the given
addresses, with cuBLAS's own column-major meaning of ``op``, ``ld`` and the batch strides (the fake CuPy's device
memory is host memory), so the parameters kiln computes are checked against cuBLAS's definition, not its own.

``CALLS`` records each call's shape, ops and leading dimensions.
"""

from __future__ import annotations

import ctypes
import types

import numpy as np

CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32, CUBLAS_COMPUTE_64F, CUBLAS_GEMM_DEFAULT = 68, 77, 70, -1
DTYPES = {0: np.dtype(np.float32), 1: np.dtype(np.float64), 2: np.dtype(np.float16)}
COMPUTE_DTYPES = {CUBLAS_COMPUTE_32F: np.dtype(np.float32), CUBLAS_COMPUTE_32F_FAST_TF32: np.dtype(np.float32),
                  CUBLAS_COMPUTE_64F: np.dtype(np.float64)}
"""The type cuBLAS computes in, which alpha and beta have (float16 data under ``CUBLAS_COMPUTE_32F``: float scalars)."""
CALLS: list[dict] = []


def column_major(pointer: int, dtype: np.dtype, rows: int, cols: int, ld: int, stride: int, batch: int) -> np.ndarray:
    """``batch`` column-major ``rows x cols`` matrices at ``pointer``: element (b, i, j) at ``b stride + i + j ld``."""
    assert ld >= max(1, rows), f"cuBLAS needs ld >= rows: ld {ld}, rows {rows}"
    extent = (batch - 1) * stride + (cols - 1) * ld + rows
    base = np.frombuffer((ctypes.c_char * (extent * dtype.itemsize)).from_address(pointer), dtype=dtype)
    item = dtype.itemsize
    return np.lib.stride_tricks.as_strided(base, (batch, rows, cols), (stride * item, item, ld * item))


def gemmStridedBatchedEx(handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb, strideB, beta,
                         C, Ctype, ldc, strideC, batchCount, computeType, algo):  # noqa: N802 (cuBLAS's name)
    """``C[b] = alpha op(A[b]) op(B[b]) + beta C[b]``, column-major, ``op(A)`` m x k, ``op(B)`` k x n, ``C`` m x n."""
    dtype, compute = DTYPES[Atype], COMPUTE_DTYPES[computeType]
    assert Atype == Btype == Ctype and handle == "cublas-handle" and algo == CUBLAS_GEMM_DEFAULT
    assert dtype.itemsize <= compute.itemsize, f"cuBLAS computes {dtype} in {compute}? (compute type {computeType})"
    a = column_major(A, dtype, *((m, k) if transa == 0 else (k, m)), lda, strideA, batchCount)
    b = column_major(B, dtype, *((k, n) if transb == 0 else (n, k)), ldb, strideB, batchCount)
    c = column_major(C, dtype, m, n, ldc, strideC, batchCount)
    scale = [np.frombuffer((ctypes.c_char * compute.itemsize).from_address(p), dtype=compute)[0] for p in (alpha, beta)]
    op_a, op_b = (a if transa == 0 else a.transpose(0, 2, 1)), (b if transb == 0 else b.transpose(0, 2, 1))
    product = scale[0] * np.matmul(op_a.astype(compute), op_b.astype(compute))
    c[...] = (product if scale[1] == 0 else product + scale[1] * c).astype(dtype)  # beta == 0: C is not read (cuBLAS's rule)
    CALLS.append({"m": m, "n": n, "k": k, "ops": (transa, transb), "ld": (lda, ldb, ldc), "batch": batchCount,
                  "compute": computeType})


def modules() -> dict[str, types.ModuleType]:
    """``cupy_backends.cuda.libs.cublas`` and its parent packages."""
    cublas = types.ModuleType("cupy_backends.cuda.libs.cublas")
    cublas.gemmStridedBatchedEx = gemmStridedBatchedEx
    cublas.CUBLAS_COMPUTE_32F, cublas.CUBLAS_COMPUTE_32F_FAST_TF32 = CUBLAS_COMPUTE_32F, CUBLAS_COMPUTE_32F_FAST_TF32
    cublas.CUBLAS_COMPUTE_64F, cublas.CUBLAS_GEMM_DEFAULT = CUBLAS_COMPUTE_64F, CUBLAS_GEMM_DEFAULT
    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.cublas = cublas
    return {"cupy_backends": types.ModuleType("cupy_backends"), "cupy_backends.cuda": types.ModuleType("cupy_backends.cuda"),
            "cupy_backends.cuda.libs": libs, "cupy_backends.cuda.libs.cublas": cublas}
