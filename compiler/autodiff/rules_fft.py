"""VJP rules of the ``fft`` dialect (``compiler/ops/fft.py``), in the one ``VJP_RULES`` table.

A cotangent of a complex value is the pair ``(dL/dRe, dL/dIm)``, PyTorch's convention for a real loss of complex
values (``grad = dL/dRe + i dL/dIm``). Each rule is a transform of the cotangent, so the backward graph differentiates
again:

- ``c2c``: a complex-linear map ``A = s D P`` (``P`` crops or pads to ``n`` points, ``D`` the DFT) has cotangent
  ``A^H g = P^T (s D^H g)``: the opposite direction under the dual normalization (the same scale ``s``), cropped or
  padded back to the input's length.
- ``r2c``: ``dL/dx_j = s Re sum_{k <= n/2} g_k e^{+2 pi i jk/n}``, which is ``c2r`` (dual normalization) of ``g`` with
  the bins ``c2r`` counts twice (its mirror images, ``0 < k < n/2``) halved.
- ``c2r``: the transpose of the former: ``r2c`` of ``g`` (dual normalization), the mirrored bins doubled and the
  imaginary parts of bin 0 and bin ``n/2`` zero (``c2r`` ignores them), as PyTorch's.
"""

from __future__ import annotations

import numpy as np

from kiln.compiler.autodiff.differentiate import _zeros
from kiln.compiler.autodiff.rules import Cotangents, vjp_rule
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value
from kiln.compiler.ir.types import normalize_axis
from kiln.compiler.ops.fft import dual_norm


def _filled(b: Builder, g: tuple[Value | None, ...], like: Value) -> tuple[Value, ...]:
    """The cotangents with a zero tensor for each one the loss does not use (None)."""
    return tuple(_zeros(b, like.type) if part is None else part for part in g)


def _resized(b: Builder, x: Value, axis: int, length: int) -> Value:
    """``x`` cropped to, or zero-padded at the end up to, ``length`` along ``axis``."""
    current = x.type.shape[axis]
    if current > length:
        return b.slice(x, axis=axis, start=0, stop=length, step=1)
    if current < length:
        zeros, high = (0,) * x.type.rank, tuple(length - current if i == axis else 0 for i in range(x.type.rank))
        return b.pad(x, low=zeros, high=high, interior=zeros, value=0.0)
    return x


def _axis(op: Op) -> int:
    return normalize_axis(op.attrs["axis"], op.operands[0].type.rank)


def _bin_weights(b: Builder, like: Value, axis: int, n: int, middle: float, ends: float) -> Value:
    """A constant along ``axis`` (broadcasting over the other dims): ``ends`` at bin 0 and bin ``n/2`` (even ``n``),
    ``middle`` at the bins between, whose mirror images ``n - k`` ``c2r`` adds in."""
    bins = n // 2 + 1
    weights = np.full(bins, middle)
    weights[0] = ends
    if n % 2 == 0:
        weights[-1] = ends
    return b.constant(weights.reshape((bins,) + (1,) * (like.type.rank - 1 - axis)), like.type.dtype)


@vjp_rule("fft.c2c")
def c2c_vjp(b: Builder, op: Op, g: tuple[Value | None, Value | None]) -> Cotangents:
    # A = s D P  ->  dx = P^T (s D^H g): the other direction, dual norm, back to the input's length
    axis = _axis(op)
    length = op.operands[0].type.shape[axis]
    g_real, g_imag = _filled(b, g, op.results[0])
    real, imag = b.op("fft.c2c", g_real, g_imag, axis=axis, n=op.attrs["n"], inverse=not op.attrs["inverse"],
                      norm=dual_norm(op.attrs["norm"]))
    return _resized(b, real, axis, length), _resized(b, imag, axis, length)


@vjp_rule("fft.r2c")
def r2c_vjp(b: Builder, op: Op, g: tuple[Value | None, Value | None]) -> Cotangents:
    # dx_j = s Re sum_{k <= n/2} g_k e^{+i 2 pi jk/n} = c2r(g with the mirrored bins halved), dual norm
    axis, n = _axis(op), op.attrs["n"]
    g_real, g_imag = _filled(b, g, op.results[0])
    half = _bin_weights(b, g_real, axis, n, middle=0.5, ends=1.0)
    signal = b.op("fft.c2r", b.mul(g_real, half), b.mul(g_imag, half), axis=axis, n=n, norm=dual_norm(op.attrs["norm"]))
    return (_resized(b, signal, axis, op.operands[0].type.shape[axis]),)


@vjp_rule("fft.c2r")
def c2r_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # the transpose of r2c_vjp's map: r2c(g), dual norm, mirrored bins doubled, Im of bins 0 and n/2 zero (ignored)
    axis, n = _axis(op), op.attrs["n"]
    real, imag = b.op("fft.r2c", g, axis=axis, n=n, norm=dual_norm(op.attrs["norm"]))
    real = b.mul(real, _bin_weights(b, real, axis, n, middle=2.0, ends=1.0))
    imag = b.mul(imag, _bin_weights(b, imag, axis, n, middle=2.0, ends=0.0))
    bins = op.operands[0].type.shape[axis]
    return _resized(b, real, axis, bins), _resized(b, imag, axis, bins)
