"""The CUDA row kernels (row_kernels.py) executed: their exact source, run on the CPU by cpu_cuda.py, against NumPy in float64.

The NVRTC test only proves they compile and the fake CuPy recomputes them in NumPy; here the generated code itself
runs, one thread per CUDA thread and a barrier per ``__syncthreads()``, with the launch the backend makes: one block
of ``THREADS`` per row, ``(x, y, int64 cols)``, ``(x, keep, y, int64 cols, int64 mask_rows)``, ``(y, g, dx, int64 cols)`` or ``(x, weight, bias, y, int64 cols, eps of x's dtype)``;
layer norm's gradient a block per ``rows_per_block`` rows. Row
lengths cover a row shorter than the block (threads with nothing to read), exactly one block, one past it, and
several strides; a broken tree reduction must fail here (the mutation tests), so a pass is not vacuous.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

from cpu_cuda import run_raw_kernel
from kiln.backends.cupy.row_kernels import (THREADS, RawSource, layer_norm_grad_blocks, layer_norm_grad_source, layer_norm_source,
                                            masked_softmax_source, softmax_grad_source, softmax_source)
from kiln.compiler.ir.types import DType

SHAPES = [(1, 1), (7, 3), (3, 255), (1, 256), (7, 257), (3, 1000)]
"""(rows, cols): every row length with one row count (each launch costs about 10 ms a row: 21 barriers of 256 threads)."""
DTYPES = {DType.f32: np.float32, DType.f64: np.float64}
TOLERANCE = {DType.f32: {"rtol": 1e-5, "atol": 1e-6}, DType.f64: {"rtol": 1e-12, "atol": 1e-13}}
EPS = 1e-5


def softmax_reference(x: np.ndarray, log: bool) -> np.ndarray:
    shifted = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return shifted - log_sum if log else np.exp(shifted - log_sum)


def layer_norm_reference(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    centered = x - x.mean(axis=1, keepdims=True)
    return centered / np.sqrt((centered * centered).mean(axis=1, keepdims=True) + EPS) * weight + bias


def run_softmax(source: RawSource, x: np.ndarray) -> np.ndarray:
    y = np.empty_like(x)
    run_raw_kernel(source.code, source.name, (x.shape[0],), (THREADS,), (x, y, np.int64(x.shape[1])))
    return y


def run_layer_norm(source: RawSource, x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    y = np.empty_like(x)
    args = (x, weight, bias, y, np.int64(x.shape[1]), x.dtype.type(EPS))
    run_raw_kernel(source.code, source.name, (x.shape[0],), (THREADS,), args)
    return y


def rows(shape: tuple[int, int], dtype: DType, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(DTYPES[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: f"{shape[0]}x{shape[1]}")
def test_softmax_kernel_matches_numpy(dtype: DType, log: bool, shape: tuple[int, int]):
    x = rows(shape, dtype)
    np.testing.assert_allclose(run_softmax(softmax_source(dtype, log), x), softmax_reference(x, log), **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_kernel_subtracts_the_row_max(dtype: DType, log: bool):
    """Values around 1e3 overflow ``exp`` in float32 and float64 unless the kernel shifts by the row's max first."""
    x = rows((3, 1000), dtype, scale=3.0) + np.array([[1e3], [-1e3], [5e2]], DTYPES[dtype])
    y = run_softmax(softmax_source(dtype, log), x)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, softmax_reference(x, log), **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: f"{shape[0]}x{shape[1]}")
def test_layer_norm_kernel_matches_numpy(dtype: DType, shape: tuple[int, int]):
    """Off-centre rows (mean 3, std 2): the mean is subtracted before the variance is taken."""
    weight, bias = rows((1, shape[1]), dtype, seed=1).reshape(-1), rows((1, shape[1]), dtype, seed=2).reshape(-1)
    x = rows(shape, dtype, scale=2.0) + 3
    expected = layer_norm_reference(x, weight, bias)
    np.testing.assert_allclose(run_layer_norm(layer_norm_source(dtype), x, weight, bias), expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda shape: f"{shape[0]}x{shape[1]}")
def test_softmax_grad_kernel_matches_numpy(dtype: DType, shape: tuple[int, int]):
    """``y * (g - sum(g y))`` per row, for a real softmax ``y`` and a cotangent ``g`` off zero mean."""
    y = softmax_reference(rows(shape, dtype, scale=2.0), log=False).astype(DTYPES[dtype])
    g = rows(shape, dtype, seed=1) + 0.5
    dx = np.empty_like(y)
    run_raw_kernel(softmax_grad_source(dtype).code, softmax_grad_source(dtype).name, (shape[0],), (THREADS,), (y, g, dx, np.int64(shape[1])))
    y64, g64 = y.astype(np.float64), g.astype(np.float64)
    np.testing.assert_allclose(dx, y64 * (g64 - (g64 * y64).sum(axis=1, keepdims=True)), **TOLERANCE[dtype])


def layer_norm_grad_reference(x: np.ndarray, weight: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dx and the per-row ``g xh`` and ``g`` of ``nn.layer_norm_grad``, in float64 (written out independently of the kernel's
    algebra: dx from the Jacobian of the standardization, ``(I - 1/n - xh xh^T / n) r``, applied to ``g w``)."""
    x, g = x.astype(np.float64), g.astype(np.float64)
    n = x.shape[1]
    centered = x - x.mean(axis=1, keepdims=True)
    r = 1 / np.sqrt((centered * centered).mean(axis=1, keepdims=True) + EPS)
    normalized = centered * r
    jacobians = (np.eye(n) - 1 / n - normalized[:, :, None] * normalized[:, None, :] / n) * r[:, :, None]
    return np.einsum("rij,rj->ri", jacobians, g * weight), g * normalized, g


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "rows_per_block"), [((7, 3), 3), ((3, 255), 1), ((7, 257), 2), ((4, 1000), 4)],
                         ids=["7x3-by3", "3x255-by1", "7x257-by2", "4x1000-by4"])
def test_layer_norm_grad_kernel_matches_numpy(dtype: DType, shape: tuple[int, int], rows_per_block: int):
    """dx per row, and each block's partial sums of the weight's and bias's gradients over its rows (the last block
    short when ``rows_per_block`` does not divide the rows)."""
    rows_count, cols = shape
    blocks = -(-rows_count // rows_per_block)
    x, g = rows(shape, dtype, scale=2.0) + 3, rows(shape, dtype, seed=1) + 0.5
    weight = rows((1, cols), dtype, seed=2).reshape(-1)
    dx, partials = np.empty_like(x), np.full((2, blocks, cols), np.nan, x.dtype)
    source = layer_norm_grad_source(dtype)
    args = (x, weight, g, dx, partials[0], partials[1], np.int64(rows_count), np.int64(cols), np.int64(rows_per_block), x.dtype.type(EPS))
    run_raw_kernel(source.code, source.name, (blocks,), (THREADS,), args)
    expected_dx, g_normalized, g64 = layer_norm_grad_reference(x, weight, g)
    np.testing.assert_allclose(dx, expected_dx, **TOLERANCE[dtype])
    for block in range(blocks):
        own = slice(block * rows_per_block, (block + 1) * rows_per_block)
        np.testing.assert_allclose(partials[0, block], g_normalized[own].sum(axis=0), **TOLERANCE[dtype])
        np.testing.assert_allclose(partials[1, block], g64[own].sum(axis=0), **TOLERANCE[dtype])


@pytest.mark.parametrize(("rows_count", "expected"), [(1, (1, 1)), (5, (5, 1)), (1024, (1024, 1)), (1025, (513, 2)), (8192, (1024, 8))])
def test_layer_norm_grad_blocks_cover_every_row_once(rows_count: int, expected: tuple[int, int]):
    blocks, rows_per_block = layer_norm_grad_blocks(rows_count)
    assert (blocks, rows_per_block) == expected
    assert (blocks - 1) * rows_per_block < rows_count <= blocks * rows_per_block


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "mask_rows"), [((6, 3), 3), ((4, 257), 2), ((3, 1000), 1)], ids=["6x3", "4x257", "3x1000"])
def test_masked_softmax_kernel_matches_numpy(dtype: DType, shape: tuple[int, int], mask_rows: int):
    """Row ``r`` reads mask row ``r % mask_rows``; masked keys weigh nothing (the first key of each row is kept)."""
    x = rows(shape, dtype, scale=2.0)
    keep = np.random.default_rng(3).random((mask_rows, shape[1])) < 0.6
    keep[:, 0] = True
    source, y = masked_softmax_source(dtype), np.empty_like(x)
    run_raw_kernel(source.code, source.name, (shape[0],), (THREADS,), (x, keep, y, np.int64(shape[1]), np.int64(mask_rows)))
    expected = softmax_reference(np.where(keep[np.arange(shape[0]) % mask_rows], x.astype(np.float64), -np.inf), log=False)
    np.testing.assert_allclose(y, expected, **TOLERANCE[dtype])
    assert not y[~keep[np.arange(shape[0]) % mask_rows]].any()


BROKEN: dict[str, Callable[[str], str]] = {
    "tree skips levels": lambda code: code.replace("stride >>= 1", "stride >>= 2"),
    "no barrier after a tree step": lambda code: code.replace("}\n        __syncthreads();\n    }", "}\n    }"),
    "result read without the closing barrier": lambda code: code.replace("scratch[0];\n    __syncthreads();", "scratch[0];"),
}
"""Mutations of the real source, each a bug the tree reduction could have; the emulator must see each one."""


@pytest.mark.parametrize("mutation", BROKEN)
def test_a_broken_reduction_is_caught(mutation: str):
    source = softmax_source(DType.f64)
    broken = RawSource(source.name, BROKEN[mutation](source.code))
    assert broken.code != source.code, f"the mutation '{mutation}' no longer applies to the source"
    x = rows((3, 1000), DType.f64)
    wrong = (not np.allclose(run_softmax(broken, x), softmax_reference(x, False)) for _ in range(5))
    assert any(wrong), f"'{mutation}' went unnoticed: the emulator would pass a broken kernel"


def test_arguments_must_have_the_kernels_types():
    """CuPy passes a NumPy scalar by its own dtype: a float64 ``eps`` for a float kernel would be read as garbage."""
    source, x = layer_norm_source(DType.f32), rows((2, 4), DType.f32)
    weight, bias, y = np.ones(4, np.float32), np.zeros(4, np.float32), np.empty_like(x)
    with pytest.raises(AssertionError, match="eps"):
        run_raw_kernel(source.code, source.name, (2,), (THREADS,), (x, weight, bias, y, np.int64(4), np.float64(EPS)))
    with pytest.raises(AssertionError, match="cols"):
        run_raw_kernel(source.code, source.name, (2,), (THREADS,), (x, weight, bias, y, 4, np.float32(EPS)))


SPECIAL_ROWS = np.array([
    [1.0, np.nan, 2.0, 0.5, -1.0],  # a NaN: the whole row NaN, as NumPy's max and sum make it
    [1.0, np.inf, 0.0, 0.5, -1.0],  # +inf: inf - inf in the shift
    [-np.inf, -np.inf, -np.inf, -np.inf, -np.inf],  # fully masked
    [-np.inf, 0.5, -np.inf, 2.0, 0.0],  # partly masked: those weigh 0
    [3.0, 3.0, 3.0, 3.0, 3.0],  # constant: zero variance, the normalized row is 0 (eps keeps it finite)
    [1e30, -1e30, 0.0, 1.0, 2.0],  # huge: squares overflow float32
])
"""Rows of special values, each kernel's answer to be NumPy backend's (NaN where it has NaN, inf where it has inf)."""


def numpy_backend(op_name: str, arrays: list[np.ndarray], **attrs) -> list[np.ndarray]:
    """``op_name`` on these arrays through the NumPy backend (a one-op graph: composites run as it runs them)."""
    from kiln.backends.numpy import NumpyBackend
    from kiln.compiler.ir import Builder, Graph, TensorType

    graph = Graph("one_op")
    inputs = [graph.add_input(TensorType(a.shape, DType.of(a.dtype))) for a in arrays]
    results = Builder(graph).op(op_name, *inputs, **attrs)
    graph.outputs = list(results) if isinstance(results, (list, tuple)) else [results]
    with np.errstate(all="ignore"):
        return [np.asarray(r) for r in NumpyBackend().compile(graph)(*arrays)]


def assert_like_numpy(actual: np.ndarray, expected: np.ndarray, dtype: DType, what: str) -> None:
    np.testing.assert_allclose(actual, expected, equal_nan=True, err_msg=what, **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_row_kernels_answer_special_rows_as_the_numpy_backend(dtype: DType):
    x = SPECIAL_ROWS.astype(DTYPES[dtype])
    rows_count, cols = x.shape
    weight, bias = np.linspace(0.5, 1.5, cols).astype(x.dtype), np.linspace(-1, 1, cols).astype(x.dtype)
    for log in (False, True):
        name = "nn.log_softmax" if log else "nn.softmax"
        assert_like_numpy(run_softmax(softmax_source(dtype, log), x), numpy_backend(name, [x], axis=-1)[0], dtype, name)
    assert_like_numpy(run_layer_norm(layer_norm_source(dtype), x, weight, bias),
                      numpy_backend("nn.layer_norm", [x, weight, bias], eps=EPS)[0], dtype, "nn.layer_norm")
    y, g = numpy_backend("nn.softmax", [x], axis=-1)[0], np.linspace(-2, 2, x.size).reshape(x.shape).astype(x.dtype)
    dx = np.empty_like(y)
    run_raw_kernel(softmax_grad_source(dtype).code, softmax_grad_source(dtype).name, (rows_count,), (THREADS,), (y, g, dx, np.int64(cols)))
    assert_like_numpy(dx, numpy_backend("nn.softmax_grad", [y, g], axis=-1)[0], dtype, "nn.softmax_grad")
    dx, partials = np.empty_like(x), np.empty((2, rows_count, cols), x.dtype)
    args = (x, weight, g, dx, partials[0], partials[1], np.int64(rows_count), np.int64(cols), np.int64(1), x.dtype.type(EPS))
    run_raw_kernel(layer_norm_grad_source(dtype).code, layer_norm_grad_source(dtype).name, (rows_count,), (THREADS,), args)
    expected_dx, expected_weight, expected_bias = numpy_backend("nn.layer_norm_grad", [x, weight, g], eps=EPS)
    assert_like_numpy(dx, expected_dx, dtype, "nn.layer_norm_grad dx")
    assert_like_numpy(partials.sum(axis=1), np.stack([expected_weight, expected_bias]), dtype, "nn.layer_norm_grad dw, db")
