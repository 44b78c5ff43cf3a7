"""backends/numpy/half_cast.py: the NumPy backend's float32 <-> float16 casts give NumPy's ``astype`` bits exactly
(every float16 pattern, ties at every exponent, random float32 bit patterns with NaN payloads, infinities and
subnormals), round to nearest even as PyTorch's conversion does, and follow ``np.copyto``'s broadcasting and
strides; compiled and eager float16 code goes through them."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from kiln.backends.numpy.half_cast import FEW_ELEMENTS, TABLE_FROM, cast, cast_into, float32_to_float16_into
from oracles import require_torch

ALL_HALF_BITS = np.arange(1 << 16, dtype=np.uint16)


def numpy_half(x: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):  # overflow and invalid (signalling NaN) warnings: the bits are what is compared
        return x.astype(np.float16)


def kiln_half(x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, np.float16)
    float32_to_float16_into(x, out)
    return out


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a.view(np.uint16), b.view(np.uint16))


def ties_at_every_exponent() -> np.ndarray:
    """float32 patterns of every sign and exponent (and a high significand) with the 13 dropped bits at the rounding
    boundaries: exact, just below, at and just above half a float16 ulp, and the largest."""
    high = np.arange(1 << 19, dtype=np.uint32) << np.uint32(13)
    return np.concatenate([high | np.uint32(low) for low in (0, 1, 0xFFF, 0x1000, 0x1001, 0x1FFF)]).view(np.float32)


def test_every_float16_pattern_widens_to_numpys_float32_bits():
    halves = ALL_HALF_BITS.view(np.float16)
    out = np.empty(halves.shape, np.float32)
    cast_into(halves, out)
    with np.errstate(all="ignore"):
        expected = halves.astype(np.float32)
    assert np.array_equal(out.view(np.uint32), expected.view(np.uint32))


def test_every_float16_value_rounds_back_to_its_own_bits():
    with np.errstate(all="ignore"):
        widened = ALL_HALF_BITS.view(np.float16).astype(np.float32)
    assert same_bits(kiln_half(widened), numpy_half(widened))
    finite = np.isfinite(widened)
    assert np.array_equal(kiln_half(widened).view(np.uint16)[finite], ALL_HALF_BITS[finite])


def test_ties_and_boundaries_at_every_exponent_match_numpy():
    x = ties_at_every_exponent()
    assert same_bits(kiln_half(x), numpy_half(x))


def test_ties_round_to_even_as_torch_does():
    """An independent oracle: PyTorch's float32 -> float16 (round to nearest even; NaNs left out, whose payloads differ)."""
    torch = require_torch()
    x = ties_at_every_exponent()
    x = x[~np.isnan(x)]
    assert same_bits(kiln_half(x), torch.from_numpy(x).to(torch.float16).numpy())


def test_random_bit_patterns_with_nans_infinities_and_subnormals_match_numpy():
    bits = np.random.default_rng(0).integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    assert np.isnan(x).sum() > 1000 and np.isinf(x).sum() == 0  # NaNs with assorted payloads; infinities added below
    x = np.concatenate([x, np.float32([np.inf, -np.inf, 0.0, -0.0, 65504, 65519.99, 65520, -65520, 2.0**-24, 2.0**-25, 2.0**-25 * 1.0001])])
    assert same_bits(kiln_half(x), numpy_half(x))


def test_the_float16_subnormal_range_matches_numpy_exhaustively():
    """Every float32 from 2^-25 (below it all round to zero) to 2^-14 (float16's smallest normal), at a stride."""
    bits = np.arange(0x33000000 - 8, 0x38800000 + 8, 7, dtype=np.uint32)
    x = np.concatenate([bits, bits | np.uint32(0x80000000)]).view(np.float32)
    assert same_bits(kiln_half(x), numpy_half(x))


@pytest.mark.parametrize("size", [0, 1, FEW_ELEMENTS - 1, FEW_ELEMENTS, 1000, TABLE_FROM // 6 + 1])
def test_cast_into_broadcasts_and_takes_strided_views_as_copyto(size):
    rng = np.random.default_rng(size)
    x = (rng.standard_normal((2 * size, 3)) * np.float32(1e-5)).astype(np.float32)[::2].T  # strided, transposed
    for source, out_dtype in ((x, np.float16), (numpy_half(x), np.float32)):
        out, expected = np.empty((2, 3, size), out_dtype)[:, ::-1], np.empty((2, 3, size), out_dtype)[:, ::-1]
        cast_into(source, out)  # (3, size) broadcast over the leading 2, into a strided output
        np.copyto(expected, source, casting="unsafe")
        assert out.dtype == expected.dtype and np.array_equal(out.view(np.uint8), expected.view(np.uint8))


@pytest.mark.parametrize("order", ["C", "F"])
def test_transposed_bfloat16_casts_are_copytos_bits(order):
    """float32 <-> bfloat16 from a transposed view (staged in the source's order): ml_dtypes' round to nearest even,
    on random bit patterns (NaNs, infinities, subnormals)."""
    import ml_dtypes

    bits = np.random.default_rng(3).integers(0, 1 << 32, (300, 70), dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([bits.view(np.float32), np.float32([[np.inf, -np.inf, 0.0, -0.0, 1 + 2.0**-8, 1 + 3 * 2.0**-8, 1e-40] * 10])])
    with np.errstate(all="ignore"):
        halves = x.astype(ml_dtypes.bfloat16)
    for source, target in ((x.T, ml_dtypes.bfloat16), (halves.T, np.float32)):
        out, expected = np.empty(source.shape, target, order=order), np.empty(source.shape, target, order=order)
        with np.errstate(all="ignore"):
            cast_into(source, out)
            np.copyto(expected, source, casting="unsafe")
        assert np.array_equal(np.ascontiguousarray(out).view(np.uint8), np.ascontiguousarray(expected).view(np.uint8))


@pytest.mark.parametrize("pair", [(np.float64, np.float16), (np.int32, np.float16), (np.float16, np.float64), (np.float32, np.float32),
                                  (np.float16, np.float32), (np.float32, np.float16)])
def test_cast_is_astype_for_every_pair(pair):
    source_dtype, target = pair
    x = (np.random.default_rng(1).standard_normal((5, 40)) * 1e3).astype(source_dtype)
    result = cast(x, np.dtype(target))
    through_float32 = x.astype(np.float32) if source_dtype == np.float64 else x  # float64 -> float16 as PyTorch rounds it
    assert result.dtype == target and np.array_equal(result, numpy_half(through_float32) if target == np.float16 else x.astype(target))
    assert (cast(x, x.dtype) is x) and cast(2.5, np.dtype(np.float16)).dtype == np.float16


@pytest.mark.parametrize("half, tie, target", [("half", 2**-11, np.dtype(np.float16)),
                                               ("bfloat16", 2**-8, np.dtype(ml_dtypes.bfloat16))])
def test_float64_rounds_to_half_through_float32_as_torch(half, tie, target):
    """c10's Half and BFloat16 are built from a float: PyTorch rounds a double to float32, then to the half type. A
    value just above a half tie rounds up in one step (NumPy's and ml_dtypes' astype) but to the tie, then to even, in
    two (PyTorch's): Muon's ``G.bfloat16()`` of a float64 gradient."""
    torch = require_torch()
    import kiln

    values = np.array([1 + tie + 2**-40, -(1 + tie + 2**-30), 1 + 3 * tie + 2**-35, 3.0, 1e-9, 6e4])
    expected = getattr(torch.tensor(values), half)()
    assert not np.array_equal(values.astype(target), expected.float().numpy().astype(target))  # tells them apart
    out = np.empty(values.shape, target)
    cast_into(values, out)
    compiled = kiln.compile(lambda x: getattr(x, half)(), batch_dim=None)(values)
    for got in (out, cast(values, target), compiled, getattr(kiln.tensor(values), half)().numpy()):
        assert np.array_equal(np.asarray(got).view(np.uint16), expected.view(torch.int16).numpy().view(np.uint16))


def test_a_compiled_float16_step_matches_torch_on_values_subnormal_in_half():
    """Widened float16 code rounds each op's float32 result through these casts: a product and sum of tiny values
    (subnormal and underflowing in float16) equal PyTorch's float16 CPU result, which computes in float32 and rounds."""
    torch = require_torch()
    import kiln
    from kiln.compiler.ir.types import DType

    rng = np.random.default_rng(2)
    a = numpy_half(rng.standard_normal((64, 48)).astype(np.float32) * np.float32(3e-3))
    b = numpy_half(rng.standard_normal((64, 48)).astype(np.float32) * np.float32(3e-3))
    function = kiln.compile(lambda x, y: x * y + x)
    result = function(a, b)
    expected = (torch.from_numpy(a) * torch.from_numpy(b) + torch.from_numpy(a)).numpy()
    assert DType.of(result.dtype) is DType.f16 and same_bits(np.asarray(result), expected)
    assert (np.abs(expected[expected != 0]) < 2.0**-14).any()  # the products are float16 subnormals
    (variant,) = function.variants.values()
    assert "_nn.cast_into(" in variant.executable.source  # the emitted tensor.cast
