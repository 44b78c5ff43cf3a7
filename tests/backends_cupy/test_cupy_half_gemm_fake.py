"""float16 batched matmuls go to cuBLAS's strided-batched GEMM as they lie (``gemm.batched_matmul``), as float32 ones
do: ``CUDA_R_16F`` operands and result, summed in float32 (``CUBLAS_COMPUTE_32F``, float32 alpha and beta), with
transpose flags and leading dimensions instead of ``cupy.matmul``'s contiguous copies. Checked on the stand-in,
whose cuBLAS (fake_cublas.py) computes by cuBLAS's column-major definition in the compute type it is given."""

from __future__ import annotations

import numpy as np
import pytest

import fake_cublas
from cupy_groups import HALF_TOLERANCE, assert_graph_matches_numpy
from gemm_layouts import LAYOUTS
from kiln.backends.cupy.gemm import batched_matmul
from kiln.compiler.ir import Builder, DType, Graph, TensorType


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_float16_products_are_rounded_float32_sums_read_in_place(fake, name):
    make, in_place = LAYOUTS[name]
    a, b = make(fake, np.random.default_rng(0), np.float16)
    exact = np.matmul(fake.asnumpy(a).astype(np.float64), fake.asnumpy(b).astype(np.float64))
    fake_cublas.CALLS.clear()
    product = batched_matmul(fake, a, b)
    assert product.dtype == np.float16 and product.shape == exact.shape and product.flags.c_contiguous
    np.testing.assert_allclose(fake.asnumpy(product).astype(np.float64), exact, rtol=2.0 ** -10, atol=2.0 ** -14)  # rounded once
    strided = a.ndim >= 3 and b.ndim >= 3 or a.ndim == 2 and b.ndim >= 3
    assert bool(fake_cublas.CALLS) == (in_place and strided), fake_cublas.CALLS
    assert all(call["compute"] == fake_cublas.CUBLAS_COMPUTE_32F for call in fake_cublas.CALLS)


def test_float16_sums_in_float32_whatever_tf32_says(fake):
    """TF32 is a float32 setting; a float16 product is summed in float32 with it on or off (as CuPy's own)."""
    from kiln.backends.cupy import set_tf32

    a = fake.asarray(np.ones((2, 3, 4), np.float16))
    for enabled in (True, False):
        set_tf32(fake, enabled)
        fake_cublas.CALLS.clear()
        batched_matmul(fake, a, a.swapaxes(-1, -2))
        assert fake_cublas.CALLS[0]["compute"] == fake_cublas.CUBLAS_COMPUTE_32F


def test_a_float16_sum_of_many_terms_is_not_summed_in_half(fake):
    """4096 terms of 1.5 sum to 6144 (a float16 value) in float32; a float16 running sum stalls at 4096, where float16's
    spacing (4) swallows each 1.5."""
    a = fake.asarray(np.full((2, 1, 4096), 1.5, np.float16))
    b = fake.asarray(np.ones((2, 4096, 1), np.float16))
    assert fake.asnumpy(batched_matmul(fake, a, b)).ravel().tolist() == [6144.0, 6144.0]


def test_a_float16_step_batched_product_reads_its_transposed_operand_in_place(fake, monkeypatch):
    """A float16 batched matmul of a transposed operand (``bmm(x^T, dy)`` in half) reaches cuBLAS with a transpose
    flag: ``cupy.matmul`` (which would copy it) sees no batched product; values as on the NumPy backend."""
    graph = Graph("bmm_half")
    x = graph.add_input(TensorType(("N", 8, 16), DType.f16), "x")
    dy = graph.add_input(TensorType(("N", 8, 4), DType.f16), "dy")
    build = Builder(graph)
    graph.outputs = [build.op("tensor.matmul", build.op("tensor.transpose", x, perm=(0, 2, 1)), dy)]
    batched, plain = [], fake.matmul
    monkeypatch.setattr(fake, "matmul", lambda a, b: batched.append((a.shape, b.shape)) or plain(a, b) if a.ndim > 2 or b.ndim > 2 else plain(a, b))
    fake_cublas.CALLS.clear()
    assert_graph_matches_numpy(graph, **HALF_TOLERANCE)
    assert not batched, batched
    assert [call["ops"] for call in fake_cublas.CALLS] == [(0, 1)]  # dy as it lies, x^T read transposed
