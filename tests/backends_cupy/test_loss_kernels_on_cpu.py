"""The cross-entropy row kernels (loss_kernels.py) executed on the CPU (cpu_cuda.py) against NumPy in float64.

Rows shorter than a block, one block long and several strides; ignored labels, label smoothing, a per-row and a
shared cotangent, logits far from zero (the running max must rescale the running sum), a row holding -inf, and a
label out of range (a NaN loss, no read outside the row: the deferred label check reports it).
"""

from __future__ import annotations

import numpy as np
import pytest

from cpu_cuda import run_raw_kernel
from kiln.backends.cupy.loss_kernels import cross_entropy_grad_source, cross_entropy_loss_source
from kiln.backends.cupy.row_kernels import THREADS
from kiln.compiler.ir.types import DType

DTYPES = {DType.f32: np.float32, DType.f64: np.float64}
TOLERANCE = {DType.f32: {"rtol": 1e-5, "atol": 2e-6}, DType.f64: {"rtol": 1e-12, "atol": 1e-13}}
IGNORE = -100
SHAPES = [(5, 3), (3, 256), (4, 300), (3, 1000)]


def _reference(x: np.ndarray, labels: np.ndarray, smoothing: float, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row losses and gradient rows, from the definitions, in float64."""
    x = x.astype(np.float64)
    rows, cols = x.shape
    kept = labels != IGNORE
    safe = np.where(kept, labels, 0)
    log_p = x - x.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    target = np.eye(cols)[safe] * (1 - smoothing) + smoothing / cols
    weighted = np.multiply(target, log_p, out=np.zeros_like(log_p), where=target > 0)  # 0 log 0 = 0 for -inf logits
    loss = np.where(kept, -weighted.sum(axis=1), 0)
    grad = (np.exp(log_p) - target) * np.where(kept, scale, 0)[:, None]
    return loss, grad


def _run(dtype: DType, x: np.ndarray, labels: np.ndarray, smoothing: float, scale: np.ndarray, stride: int):
    t = DTYPES[dtype]
    rows, cols = x.shape
    loss, grad = np.empty(rows, t), np.empty_like(x)
    source = cross_entropy_loss_source(dtype)
    run_raw_kernel(source.code, source.name, (rows,), (THREADS,), (x, labels, loss, np.int64(cols), np.int64(IGNORE), t(smoothing)))
    source = cross_entropy_grad_source(dtype)
    args = (x, labels, scale.astype(t), np.int64(stride), grad, np.int64(cols), np.int64(IGNORE), t(smoothing))
    run_raw_kernel(source.code, source.name, (rows,), (THREADS,), args)
    return loss, grad


def _case(shape: tuple[int, int], dtype: DType, offset: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + offset).astype(DTYPES[dtype])
    labels = rng.integers(0, shape[1], shape[0]).astype(np.int64)
    labels[1] = IGNORE
    return x, labels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: f"{shape[0]}x{shape[1]}")
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_loss_and_gradient_rows_match_the_definitions(dtype: DType, shape: tuple[int, int], smoothing: float):
    x, labels = _case(shape, dtype)
    scale = np.random.default_rng(1).standard_normal(shape[0])
    loss, grad = _run(dtype, x, labels, smoothing, scale, stride=1)
    expected_loss, expected_grad = _reference(x, labels, smoothing, scale.astype(DTYPES[dtype]))
    np.testing.assert_allclose(loss, expected_loss, **TOLERANCE[dtype])
    np.testing.assert_allclose(grad, expected_grad, **TOLERANCE[dtype])
    assert loss[1] == 0 and not grad[1].any()  # the ignored row


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_shared_scale_and_logits_far_from_zero(dtype: DType):
    """Logits around 1e3 (exp overflows without the running max) and one factor for every row (stride 0)."""
    x, labels = _case((4, 700), dtype, offset=1e3)
    x[2] -= 2e3
    scale = np.array([0.25])
    loss, grad = _run(dtype, x, labels, 0.0, scale, stride=0)
    expected_loss, expected_grad = _reference(x, labels, 0.0, np.full(4, 0.25))
    assert np.isfinite(loss).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(loss, expected_loss, **TOLERANCE[dtype])
    np.testing.assert_allclose(grad, expected_grad, **TOLERANCE[dtype])


def test_minus_infinity_logits_and_a_label_out_of_range():
    x, labels = _case((3, 300), DType.f64)
    x[0, :200] = -np.inf  # masked classes: probability 0, the rest still a distribution
    labels[0], labels[2] = 250, 300  # row 2's label is one past the last class
    loss, grad = _run(DType.f64, x, labels, 0.0, np.ones(3), stride=1)
    expected_loss, expected_grad = _reference(x[:1], labels[:1], 0.0, np.ones(1))
    assert np.isfinite(loss[0]) and np.isfinite(grad[0]).all()
    np.testing.assert_allclose(loss[0], expected_loss[0], rtol=1e-12)
    np.testing.assert_allclose(grad[0], expected_grad[0], rtol=1e-12, atol=1e-15)
    assert np.isnan(loss[2])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_and_inf_logits_answer_as_the_numpy_backend(dtype: DType):
    """A NaN logit anywhere in a row (before, at or after the label) or a +inf one makes the row's loss and gradient
    NaN, as on the NumPy backend: the running max (CUDA's max drops a NaN) must not hide it."""
    from test_row_kernels_on_cpu import numpy_backend

    x = np.array([[1, np.nan, 2, 0.5], [np.nan, 1, 2, 0.5], [1, 2, 3, np.nan], [1, np.inf, 0, 0.5], [np.inf, 1, 2, 3], [0, 1, 2, 3]],
                 DTYPES[dtype])
    labels, scale = np.array([0, 1, 2, 0, 1, 3], np.int64), np.ones(6, DTYPES[dtype])
    loss, grad = _run(dtype, x, labels, 0.0, scale, stride=1)
    (expected_loss,) = numpy_backend("nn.cross_entropy", [x, labels], reduction="none")
    (expected_grad,) = numpy_backend("nn.cross_entropy_grad", [x, labels, scale], reduction="none")
    assert np.isnan(loss[:5]).all() and np.isfinite(loss[5])
    np.testing.assert_allclose(loss, expected_loss, equal_nan=True, **TOLERANCE[dtype])
    np.testing.assert_allclose(grad, expected_grad, equal_nan=True, **TOLERANCE[dtype])
