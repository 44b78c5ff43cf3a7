"""The float16 row kernels executed: their exact CUDA source run on the CPU (cpu_cuda.py, ``__half`` as the compiler's
``_Float16``), against the float64 result rounded to float16.

A float16 row kernel loads half, reduces and computes in float and stores half once, so each output is the exact
result rounded to float16 up to the float32 arithmetic's own error (a few 1e-7 relative): within one float16 ulp
(2**-10 relative; ``atol`` 2**-24, the subnormal spacing, for the outputs that underflow). The cross-entropy's
per-row losses stay float32 (the backend sums them before rounding the loss once): float32 tolerances.
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_cuda import run_raw_kernel
from kiln.backends.cupy.loss_kernels import cross_entropy_grad_source, cross_entropy_loss_source
from kiln.backends.cupy.row_kernels import THREADS, layer_norm_grad_blocks, layer_norm_grad_source, layer_norm_source, softmax_grad_source, softmax_source
from kiln.compiler.ir.types import DType

SHAPES = [(3, 255), (2, 257), (2, 1000)]
"""(rows, cols): fewer columns than threads, one past a block, several strides (about 10 ms a row on the CPU)."""
ONE_ULP = {"rtol": 2.0 ** -10, "atol": 2.0 ** -24}
EPS = 1e-5


def _half_rows(shape: tuple[int, int], seed: int = 0, scale: float = 2.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float16)


def _rounded(exact: np.ndarray) -> np.ndarray:
    return exact.astype(np.float16).astype(np.float64)


def _softmax64(x: np.ndarray, log: bool) -> np.ndarray:
    shifted = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return shifted - log_sum if log else np.exp(shifted - log_sum)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: f"{shape[0]}x{shape[1]}")
def test_f16_softmax_rows_are_the_float64_result_rounded(log, shape):
    x = _half_rows(shape)
    y = np.empty_like(x)
    source = softmax_source(DType.f16, log)
    run_raw_kernel(source.code, source.name, (shape[0],), (THREADS,), (x, y, np.int64(shape[1])))
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.astype(np.float64), _rounded(_softmax64(x, log)), **ONE_ULP)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: f"{shape[0]}x{shape[1]}")
def test_f16_softmax_grad_rows_are_the_float64_result_rounded(shape):
    y, g = _softmax64(_half_rows(shape), log=False).astype(np.float16), _half_rows(shape, seed=1)
    dx = np.empty_like(y)
    source = softmax_grad_source(DType.f16)
    run_raw_kernel(source.code, source.name, (shape[0],), (THREADS,), (y, g, dx, np.int64(shape[1])))
    y64, g64 = y.astype(np.float64), g.astype(np.float64)
    exact = y64 * (g64 - (g64 * y64).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(dx.astype(np.float64), _rounded(exact), **ONE_ULP)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: f"{shape[0]}x{shape[1]}")
def test_f16_layer_norm_rows_are_the_float64_result_rounded(shape):
    """Off-centre rows (mean 3): float16 inputs, eps a float32 scalar (the kernel computes in float)."""
    x = (_half_rows(shape) + np.float16(3)).astype(np.float16)
    weight, bias = _half_rows(shape[1:], seed=2, scale=1.0), _half_rows(shape[1:], seed=3, scale=1.0)
    y = np.empty_like(x)
    source = layer_norm_source(DType.f16)
    run_raw_kernel(source.code, source.name, (shape[0],), (THREADS,), (x, weight, bias, y, np.int64(shape[1]), np.float32(EPS)))
    x64 = x.astype(np.float64)
    centered = x64 - x64.mean(axis=1, keepdims=True)
    exact = centered / np.sqrt((centered * centered).mean(axis=1, keepdims=True) + EPS) * weight.astype(np.float64) + bias.astype(np.float64)
    # the float32 normalisation's error (~1e-6 of a unit value) can cross a rounding boundary of an output near zero
    np.testing.assert_allclose(y.astype(np.float64), _rounded(exact), rtol=2.0 ** -10, atol=2.0 ** -14)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: f"{shape[0]}x{shape[1]}")
def test_f16_cross_entropy_rows_read_half_logits_and_keep_float_losses(shape):
    rows, cols = shape
    x = _half_rows(shape, scale=3.0)
    labels = np.random.default_rng(4).integers(0, cols, rows).astype(np.int64)
    loss, dx = np.empty(rows, np.float32), np.empty_like(x)
    source = cross_entropy_loss_source(DType.f16)
    run_raw_kernel(source.code, source.name, (rows,), (THREADS,), (x, labels, loss, np.int64(cols), np.int64(-100), np.float32(0.1)))
    scale = np.full(1, 1 / rows, np.float32)
    source = cross_entropy_grad_source(DType.f16)
    run_raw_kernel(source.code, source.name, (rows,), (THREADS,), (x, labels, scale, np.int64(0), dx, np.int64(cols), np.int64(-100), np.float32(0.1)))
    log_p = _softmax64(x, log=True)
    target = np.eye(cols)[labels] * 0.9 + 0.1 / cols
    np.testing.assert_allclose(loss, -(target * log_p).sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(dx.astype(np.float64), _rounded((np.exp(log_p) - target) * scale[0]), **ONE_ULP)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: f"{shape[0]}x{shape[1]}")
def test_f16_layer_norm_grad_rows_are_the_float64_result_rounded(shape):
    """dx rounded once to half; the weight and bias gradients as float partial sums (one row per block, as launched)."""
    rows, cols = shape
    x, g = (_half_rows(shape) + np.float16(3)).astype(np.float16), _half_rows(shape, seed=5)
    weight = _half_rows((cols,), seed=6, scale=1.0)
    blocks, per_block = layer_norm_grad_blocks(rows)
    dx, partials = np.empty_like(x), np.empty((2, blocks, cols), np.float32)
    source = layer_norm_grad_source(DType.f16)
    args = (x, weight, g, dx, partials[0], partials[1], np.int64(rows), np.int64(cols), np.int64(per_block), np.float32(EPS))
    run_raw_kernel(source.code, source.name, (blocks,), (THREADS,), args)
    x64, g64, w64 = x.astype(np.float64), g.astype(np.float64), weight.astype(np.float64)
    centered = x64 - x64.mean(axis=1, keepdims=True)
    inverse_std = 1 / np.sqrt((centered * centered).mean(axis=1, keepdims=True) + EPS)
    normalized, d_normalized = centered * inverse_std, g64 * w64
    exact = inverse_std * (d_normalized - d_normalized.mean(axis=1, keepdims=True) - normalized * (d_normalized * normalized).mean(axis=1, keepdims=True))
    np.testing.assert_allclose(dx.astype(np.float64), _rounded(exact), rtol=2.0 ** -10, atol=2.0 ** -14)
    np.testing.assert_allclose(partials.sum(axis=1), [(g64 * normalized).sum(axis=0), g64.sum(axis=0)], rtol=1e-4, atol=1e-4)
