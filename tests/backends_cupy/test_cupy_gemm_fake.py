"""``gemm.batched_matmul`` on the stand-in CuPy, whose cuBLAS (fake_cublas.py) carries out ``gemmStridedBatchedEx``
by cuBLAS's column-major definition on the operands' own memory: the strides, leading dimensions and transpose
flags kiln derives from each layout must give NumPy's ``a @ b``, with no copy where cuBLAS can read in place."""

from __future__ import annotations

import numpy as np
import pytest

import fake_cublas
from gemm_layouts import LAYOUTS
from kiln.backends.cupy.gemm import batched_matmul, matrix_layout, merged_batch_stride


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_products_match_numpy_and_read_operands_in_place(fake, name, dtype):
    make, in_place = LAYOUTS[name]
    a, b = make(fake, np.random.default_rng(0), dtype)
    expected = np.matmul(fake.asnumpy(a).astype(np.float64), fake.asnumpy(b).astype(np.float64))
    fake_cublas.CALLS.clear()
    product = batched_matmul(fake, a, b)
    assert product.shape == expected.shape and product.dtype == dtype and product.flags.c_contiguous
    np.testing.assert_allclose(fake.asnumpy(product), expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5 if dtype == np.float32 else 1e-12)
    strided = a.ndim >= 3 and b.ndim >= 3 or a.ndim == 2 and b.ndim >= 3
    assert bool(fake_cublas.CALLS) == (in_place and strided), fake_cublas.CALLS


def test_transposed_operands_go_in_with_transpose_flags(fake):
    rng = np.random.default_rng(1)
    p = fake.asarray(rng.standard_normal((2, 3, 7, 4)).astype(np.float32)).swapaxes(-1, -2)  # (2, 3, 4, 7), column-major
    g = fake.asarray(rng.standard_normal((2, 3, 7, 5)).astype(np.float32))
    fake_cublas.CALLS.clear()
    batched_matmul(fake, p, g)
    (call,) = fake_cublas.CALLS
    assert call["ops"] == (0, 1) and call["ld"] == (5, 4, 5) and call["batch"] == 6 and (call["m"], call["n"], call["k"]) == (5, 4, 7)


def test_tf32_follows_cupys_float32_setting(fake):
    from kiln.backends.cupy import set_tf32

    a = fake.asarray(np.ones((2, 3, 4), np.float32))
    for enabled, compute in ((True, fake_cublas.CUBLAS_COMPUTE_32F_FAST_TF32), (False, fake_cublas.CUBLAS_COMPUTE_32F)):
        set_tf32(fake, enabled)
        fake_cublas.CALLS.clear()
        batched_matmul(fake, a, a.swapaxes(-1, -2))
        assert fake_cublas.CALLS[0]["compute"] == compute


def test_batch_strides_merge_only_when_one_stride_walks_them():
    assert merged_batch_stride((2, 3), [60, 20], (2, 3)) == 20
    assert merged_batch_stride((3,), [20], (2, 3)) is None  # broadcast outer, strided inner: two strides
    assert merged_batch_stride((1, 1), [0, 0], (2, 3)) == 0  # one matrix for every batch
    assert merged_batch_stride((2, 3), [20, 60], (2, 3)) is None  # heads before positions: not one walk


def test_a_matrix_without_a_unit_stride_is_not_read_in_place(fake):
    x = fake.asarray(np.ones((2, 6, 6), np.float32))[:, ::2, ::2]
    assert matrix_layout(x, (2,)) is None


@pytest.mark.parametrize("chunk", [0, 3])
def test_a_gpt_step_copies_no_matmul_operand(fake, monkeypatch, chunk):
    """Every batched product of the tiny GPT's step (whole and in attention chunks) is read in place by cuBLAS:
    ``cupy.matmul``, which would copy, sees only 2-D products. Heads are split once, contiguously."""
    from cupy_models import MODELS, step_for
    from kiln.compiler.passes import chunk_causal_attention

    monkeypatch.setattr(chunk_causal_attention, "CAUSAL_CHUNK", chunk)
    batched = []
    plain = fake.matmul
    monkeypatch.setattr(fake, "matmul", lambda a, b: batched.append((a.shape, b.shape)) or plain(a, b) if a.ndim > 2 or b.ndim > 2 else plain(a, b))
    _, step, rng = step_for("gpt", "cupy")
    fake_cublas.CALLS.clear()
    float(step(*MODELS["gpt"][1](rng)))
    assert not batched, batched
    assert len(fake_cublas.CALLS) >= 6 * 2  # per layer: scores, weights times values, and four in the backward


def test_only_a_transpose_into_split_heads_is_made_contiguous(fake):
    from kiln.backends.cupy.gemm import device_transpose

    transpose = device_transpose(fake)
    x = fake.asarray(np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5))
    heads = transpose(x, perm=(0, 2, 1, 3))
    swapped = transpose(x, perm=(0, 1, 3, 2))
    stacked = transpose(x.reshape(2, 12, 5), perm=(2, 0, 1))  # (K, N, T): one batch axis, reshaped to (K, N T) as a view
    assert heads.flags.c_contiguous and not swapped.flags.c_contiguous and np.shares_memory(swapped, x)
    assert np.shares_memory(stacked, x) and np.shares_memory(stacked.reshape(5, 24), x)
    np.testing.assert_array_equal(fake.asnumpy(heads), np.transpose(fake.asnumpy(x), (0, 2, 1, 3)))
