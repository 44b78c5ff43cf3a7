"""Half-precision casts for the NumPy backend: NumPy's bits, and float16's (of larger arrays) at a speed independent of the values.

NumPy converts float16 one element at a time, and an element whose float16 result is subnormal, zero from
underflow or infinite from overflow costs it a few hundred nanoseconds (it raises the IEEE flags for each): a
float16 Adam's second moment (``exp_avg_sq``, mostly subnormal in float16) and its widened float32 copy cast at
3-5 million elements a second, against 50-200 for ordinary values. ``widen-half`` puts such casts around every
float16 op, so they were most of a float16 training step (and, cheaper now, still are). Here:

- float16 -> float32 (of 4096 elements or more) looks each value up in a table of all 2^16 float16 bit patterns,
  built once by NumPy's own conversion (so every result, NaN payloads included, is NumPy's);
- float32 -> float16 rounds to nearest, ties to even, with whole-array integer operations on the bits: the
  normal range adds ``0xFFF`` plus the kept last bit below the 13 dropped bits; the subnormal range lets the FPU
  round (``|x| + 0.5`` puts float16's subnormal spacing, 2^-24, at float32's last bit); overflow clamps to
  infinity; a NaN keeps the top of its payload as NumPy's does (``0x7C00 + (significand >> 13)``, never infinity).

bfloat16 (``ml_dtypes``) converts a billion or more elements a second whatever the values, but 5-10x slower from
a transposed view (a weight's ``.T``) into a row-major array: such a cast runs in the source's memory order into a
staging array, then a plain copy transposes. ``benchmarks/half_precision.py`` measures all of these.

```python
out = np.empty(3, np.float16)
cast_into(np.float32([1 / 3, 1e-6, 7e4]), out)     # out == np.float32([1 / 3, 1e-6, 7e4]).astype(np.float16)
cast(np.float16([0.5]), np.dtype(np.float32))      # a new array, as .astype
```
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

FEW_ELEMENTS = 256
"""Below this many elements float32 -> float16 is NumPy's own (one call, ~1 us): the eighteen whole-array steps here
cost ~15 us however few the elements, about what NumPy takes for 256 values that are all float16 subnormals.
(Measured: 4096 elements of N(0, 1) 25 us NumPy, 46 us here; of N(0, 1e-4), partly subnormal, 590 us and 47 us.)"""

TABLE_FROM = 4096
"""float16 -> float32 of fewer elements stays NumPy's: the lookups first bring the 256 KiB table into cache (~50 us
when a step has pushed it out), more than NumPy spends on a few thousand values even when they are subnormal."""

_F16 = np.dtype(np.float16)
_F32 = np.dtype(np.float32)
_F64 = np.dtype(np.float64)
_BF16 = np.dtype(ml_dtypes.bfloat16)
_BFLOAT16_PAIR = {_F32, _BF16}
_HALVES = {_F16, _BF16}
_U32 = np.uint32
# float32 bit patterns and shifts, as NumPy scalars made once (a Python int costs a conversion per call)
_MAGNITUDE, _SIGN, _ONE, _THIRTEEN, _SIXTEEN = _U32(0x7FFFFFFF), _U32(0x8000), _U32(1), _U32(13), _U32(16)
_SMALLEST_NORMAL = _U32(0x38800000)
"""2^-14, float16's smallest normal number."""
_OVERFLOW = _U32(0x47800000)
"""2^16: at or above it, float16 infinity."""
_HALF, _HALF_AND_FLOOR = np.float32(0.5), _U32(0x3F000000 + 0x400)
_ROUND_AND_REBIAS = _U32((0xFFF - 0x38000000) % (1 << 32))
"""+ 0xFFF rounds; - 0x38000000 moves the exponent's bias from 127 to 15 (modulo 2^32: the sum is positive)."""

with np.errstate(all="ignore"):  # signalling-NaN patterns would warn "invalid value" while the table is built
    FLOAT16_TO_FLOAT32 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
"""Every float16 bit pattern's float32 value, by NumPy's conversion."""


def cast_into(source: Any, out: np.ndarray) -> None:
    """``np.copyto(out, source, casting="unsafe")``, with the float32 <-> float16 conversions done here and transposed
    float32 <-> bfloat16 ones staged (the same bits either way)."""
    source = np.asarray(source)
    if source.dtype == _F64 and out.dtype in _HALVES:
        source = source.astype(_F32)  # PyTorch rounds twice: c10 builds Half and BFloat16 from a float (1 + 2**-30 + 2**-8 -> 1)
    if source.dtype == _F32 and out.dtype == _F16 and out.size >= FEW_ELEMENTS:
        float32_to_float16_into(_broadcast(source, out), out)
    elif source.dtype == _F16 and out.dtype == _F32 and out.size >= TABLE_FROM:
        FLOAT16_TO_FLOAT32.take(_broadcast(source, out).view(np.uint16), out=out, mode="clip")
    elif {source.dtype, out.dtype} == _BFLOAT16_PAIR and source.shape == out.shape and _transposed(source, out):
        staged = np.empty_like(source, dtype=out.dtype)  # the source's memory order: ml_dtypes' loop reads it in a row
        np.copyto(staged, source, casting="unsafe")
        np.copyto(out, staged)
    else:
        np.copyto(out, source, casting="unsafe")


def cast(source: Any, dtype: np.dtype) -> np.ndarray:
    """``np.asarray(source).astype(dtype, copy=False)`` through ``cast_into`` for the float32 <-> float16 pairs."""
    source = np.asarray(source)
    if source.dtype == _F64 and dtype in _HALVES:
        source = source.astype(_F32)  # through float32, as cast_into
    if source.dtype == dtype or {source.dtype, np.dtype(dtype)} != {_F32, _F16}:
        return source.astype(dtype, copy=False)
    out = np.empty(source.shape, dtype)
    cast_into(source, out)
    return out


def float32_to_float16_into(x: np.ndarray, out: np.ndarray) -> None:
    """Round float32 ``x`` to float16 into ``out`` (same shape), bit for bit as NumPy's ``astype`` (see the module
    docstring for how)."""
    bits = x.view(_U32)
    magnitude = np.bitwise_and(bits, _MAGNITUDE)
    halves = _normal_range(magnitude)
    np.minimum(magnitude, _SMALLEST_NORMAL, out=magnitude)  # at most 2^-14, float16's smallest normal
    tiny = magnitude.view(np.float32)
    np.add(tiny, _HALF, out=tiny)  # rounded at 2^-24: 0.5 + the subnormal's value, ties to even
    halves += magnitude
    halves -= _HALF_AND_FLOOR  # 0.5's bits, and the normal part's floor (0x400, 2^-14) counted twice
    _keep_nan_payloads(x, bits, halves)
    np.right_shift(bits, _SIXTEEN, out=magnitude)
    magnitude &= _SIGN
    halves |= magnitude
    np.copyto(out.view(np.uint16), halves, casting="unsafe")


def _normal_range(magnitude: np.ndarray) -> np.ndarray:
    """float16 bits of ``|x|`` clamped to [2^-14, 2^16]: drop 13 bits, rounding to nearest even; 2^16 gives infinity."""
    halves = np.maximum(magnitude, _SMALLEST_NORMAL)
    np.minimum(halves, _OVERFLOW, out=halves)
    kept_last_bit = np.right_shift(halves, _THIRTEEN)
    kept_last_bit &= _ONE
    halves += kept_last_bit
    halves += _ROUND_AND_REBIAS
    halves >>= _THIRTEEN
    return halves


def _keep_nan_payloads(x: np.ndarray, bits: np.ndarray, halves: np.ndarray) -> None:
    """NumPy's float16 NaN: ``0x7C00`` plus the top 10 bits of the significand, or ``0x7C01`` if those are zero."""
    nan = np.isnan(x)
    if nan.any():
        payload = np.maximum(np.right_shift(bits & _U32(0x7FFFFF), _U32(13)), _U32(1)) + _U32(0x7C00)
        np.copyto(halves, payload, where=nan)


def _transposed(source: np.ndarray, out: np.ndarray) -> bool:
    """Whether ``source`` and ``out`` are each contiguous, but in different orders (a weight's ``.T``)."""
    contiguous = source.flags.c_contiguous or source.flags.f_contiguous
    return contiguous and not (source.flags.c_contiguous and out.flags.c_contiguous or source.flags.f_contiguous and out.flags.f_contiguous)


def _broadcast(source: np.ndarray, out: np.ndarray) -> np.ndarray:
    return source if source.shape == out.shape else np.broadcast_to(source, out.shape)


__all__ = ["FEW_ELEMENTS", "FLOAT16_TO_FLOAT32", "TABLE_FROM", "cast", "cast_into", "float32_to_float16_into"]
