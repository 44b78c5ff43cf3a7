"""Half-precision corners against torch in the same dtype: dtype limits (``nan_to_num``'s defaults, ``nextafter``'s
ulps, ``rms_norm``'s default eps), a float attention mask given as a bfloat16 array, and samplers that read the
dtype's ``finfo`` (``gumbel_softmax``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from half_compare import HALF, NUMPY_HALF, from_torch, to_half, torch_dtype
from oracles import require_torch

SPECIAL = [float("nan"), float("inf"), -float("inf"), 1.0, -2.5, 7e4, 1e-8]


@pytest.mark.parametrize("dtype", HALF)
def test_nan_to_num_defaults_are_the_dtypes_limits(dtype: str):
    torch = require_torch()
    expected = from_torch(torch.tensor(SPECIAL).to(torch_dtype(torch, dtype)).nan_to_num())
    actual = kiln.tensor(to_half(np.array(SPECIAL), dtype)).nan_to_num().numpy()
    assert actual.dtype == NUMPY_HALF[dtype]
    np.testing.assert_array_equal(actual.astype(np.float64), expected)


@pytest.mark.parametrize("dtype", HALF)
def test_nextafter_steps_one_ulp_of_the_dtype(dtype: str):
    torch = require_torch()
    x, y = [1.0, 0.0, 1.0, -3.0, 6e-8, 2.0, 65504.0], [2.0, -1.0, 0.0, 5.0, 0.0, 2.0, 0.0]
    actual = kiln.nextafter(kiln.tensor(to_half(np.array(x), dtype)), kiln.tensor(to_half(np.array(y), dtype))).numpy()
    expected = from_torch(torch.nextafter(torch.tensor(x).to(torch_dtype(torch, dtype)), torch.tensor(y).to(torch_dtype(torch, dtype))))
    assert actual.dtype == NUMPY_HALF[dtype]
    np.testing.assert_array_equal(actual.astype(np.float64), expected)


@pytest.mark.parametrize("dtype", HALF)
def test_rms_norm_default_eps_is_float32s_as_torch(dtype: str):
    """A half input computes in float32, so PyTorch's eps=None is float32's epsilon (float16's, 1e-3, would shift
    the result by half an ulp); here every element must equal torch's."""
    torch = require_torch()
    x = to_half(np.random.default_rng(0).standard_normal((64, 8)) * 0.05, dtype)  # small rows: eps matters
    expected = from_torch(torch.nn.functional.rms_norm(torch.tensor(x.astype(np.float32)).to(torch_dtype(torch, dtype)), (8,)))
    actual = F.rms_norm(kiln.tensor(x), (8,)).numpy()
    assert actual.dtype == NUMPY_HALF[dtype]
    np.testing.assert_array_equal(actual.astype(np.float64), expected)


def test_transformer_takes_a_bfloat16_float_mask_array():
    """bfloat16's NumPy kind is "V": a float mask given as such an array is still read as 0 / -inf."""
    kiln.manual_seed(0)
    model = nn.TransformerDecoderLayer(8, 2, 16, dropout=0.0).bfloat16()
    tgt = kiln.tensor(to_half(np.random.default_rng(1).standard_normal((5, 2, 8)), "bf16"))
    mask = nn.Transformer.generate_square_subsequent_mask(5)
    as_bfloat16 = mask.numpy().astype(NUMPY_HALF["bf16"])
    with_array = kiln.compile(lambda t: model(t, t, tgt_mask=as_bfloat16), batch_dim=None)(tgt.numpy())  # the array reaches the layer
    with_bool = model(tgt, tgt, tgt_mask=np.triu(np.ones((5, 5), bool), 1)).numpy()
    np.testing.assert_array_equal(with_array.astype(np.float64), with_bool.astype(np.float64))


@pytest.mark.parametrize("dtype", HALF)
def test_gumbel_softmax_samples_in_the_dtype(dtype: str):
    kiln.manual_seed(0)
    sample = F.gumbel_softmax(kiln.zeros(200, 4, dtype=getattr(kiln, {"f16": "float16", "bf16": "bfloat16"}[dtype])), hard=True).numpy()
    assert sample.dtype == NUMPY_HALF[dtype]
    np.testing.assert_array_equal(sample.astype(np.float64).sum(1), 1.0)
    assert set(np.unique(sample.astype(np.float64))) == {0.0, 1.0}



@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("dtype", HALF)
@pytest.mark.parametrize("function", ["dropout", "dropout2d"])
def test_dropout_in_half_keeps_torchs_scaled_values(function: str, dtype: str, compiled: bool):
    """Each element is 0 or what torch's half dropout makes of it: ``x`` times the scale ``1 / (1 - p)`` rounded to
    the half dtype, the product rounded once (checked on torch's own output first); the drop rate is p within 5
    standard deviations (of elements, or of channels)."""
    torch = require_torch()
    p, x = 0.3, to_half(np.random.default_rng(2).uniform(0.5, 2.0, (200, 50, 1)), dtype)
    scale = np.float32(np.array(1 / (1 - p), dtype=np.float32).astype(NUMPY_HALF[dtype]))
    expected = (x.astype(np.float32) * scale).astype(NUMPY_HALF[dtype]).astype(np.float64)
    torch_out = from_torch(getattr(torch.nn.functional, function)(torch.tensor(x.astype(np.float32)).to(torch_dtype(torch, dtype)), p))
    np.testing.assert_array_equal(torch_out[torch_out != 0], expected[torch_out != 0], err_msg="the oracle's formula")
    call = lambda v: getattr(F, function)(v, p, training=True)  # noqa: E731
    kiln.manual_seed(0)
    out = np.asarray(kiln.compile(call, seed=0)(x) if compiled else call(kiln.tensor(x)).numpy())
    assert out.dtype == NUMPY_HALF[dtype]
    kept = out.astype(np.float64) != 0
    np.testing.assert_array_equal(out.astype(np.float64)[kept], expected[kept])
    dropped = ~kept if function == "dropout" else ~kept[:, :, 0]
    assert abs(dropped.mean() - p) < 5 * np.sqrt(p * (1 - p) / dropped.size), f"drop rate {dropped.mean()} for p={p}"


@pytest.mark.parametrize("dtype", HALF)
def test_bilinear_products_that_overflow_float16_cancel_as_in_torch(dtype: str):
    """``300 * 300 - 300 * 300``: each product overflows float16, their float32 sum is 0 (torch's bmm accumulates in
    float32); rounding each product to half first gave inf - inf = NaN."""
    torch = require_torch()
    x1, x2, w = np.array([[300.0, -300.0]]), np.array([[300.0]]), np.ones((1, 2, 1))
    expected = from_torch(torch.nn.functional.bilinear(*(torch.tensor(a).to(torch_dtype(torch, dtype)) for a in (x1, x2, w))))
    actual = F.bilinear(*(kiln.tensor(to_half(a, dtype)) for a in (x1, x2, w))).numpy()
    assert actual.dtype == NUMPY_HALF[dtype]
    np.testing.assert_array_equal(actual.astype(np.float64), expected)
