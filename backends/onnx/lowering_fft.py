"""ONNX export of the ``fft`` dialect (``compiler/ops/fft.py``): each transform as ``MatMul``s by constant DFT matrices.

ONNX's ``DFT`` (opset 20) has all three transforms on ``[..., n, 2]`` pairs, but onnxruntime 1.32's is not one to
lower to: checked against ``np.fft`` in float64, its inverse of a length that is not a power of 2 (6, 9, 10, 11) is
off by 1e-8 (pocketfft: 1e-16), and its one-sided inverse given more bins than ``n//2 + 1`` (``irfft(x, n=4)`` of 6
bins) returns wrong values instead of cropping. So the export spells the transform out: the axis moved last, then
``x @ C`` and ``x @ S`` with ``C[j, k] = s cos(2 pi jk/n)``, ``S[j, k] = s sin(2 pi jk/n)`` (angles reduced mod ``n``
first, so each entry is within an ulp), the scale ``s`` of ``norm`` folded in, rows past what the transform reads
zero (cropping) and missing rows standing for the zero padding. Autoformer's ``torch.fft.rfft``/``irfft``
auto-correlation exports this way and agrees with torch in onnxruntime to rounding.

That is O(n^2) work and ``n x n`` constants in the file, which a time-series length affords; past ``MAX_POINTS``
points the export raises an error naming the op and where it came from.

```
%yr, %yi = "fft.r2c"(%x) {axis = 1, n = 8, norm = "backward"} : (tensor<Nx8xf32>) -> (tensor<Nx5xf32>, tensor<Nx5xf32>)
    ->  yr = MatMul(x, C[8x5]);  yi = MatMul(x, -S[8x5])
```
"""

from __future__ import annotations

import numpy as np

from kiln.backends.onnx.lowering import ONNX
from kiln.compiler.errors import LoweringError
from kiln.compiler.ir.core import Op
from kiln.compiler.ir.types import normalize_axis

MAX_POINTS = 2048
"""The longest transform exported as matrices (two 2048 x 1025 float64 constants are 34 MB)."""


def _scale(norm: str, n: int, inverse: bool) -> float:
    """``norm``'s factor for this direction: ``backward`` scales the inverse by ``1/n``, ``forward`` the forward one,
    ``ortho`` both by ``1/sqrt(n)``."""
    if norm == "ortho":
        return 1 / np.sqrt(n)
    return 1 / n if (norm == "backward") == inverse else 1.0


def _cos_sin(rows: int, columns: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``cos`` and ``sin`` of ``2 pi jk/n`` for ``j < rows``, ``k < columns``, rows ``j >= n`` zero (cropped)."""
    j, k = np.arange(rows)[:, None], np.arange(columns)[None, :]
    angle = 2 * np.pi * ((j * k) % n) / n
    read = j < n
    return np.where(read, np.cos(angle), 0.0), np.where(read, np.sin(angle), 0.0)


def _checked(op: Op) -> tuple[int, int]:
    """The op's normalized axis and ``n``, after refusing a transform too long to spell out."""
    n = op.attrs["n"]
    if n > MAX_POINTS:
        where = f" (from {op.location})" if op.location else ""
        raise LoweringError(f"ONNX export: {op.name}{where}, a Fourier transform of {n} points, is exported as DFT "
                            f"matrices only up to {MAX_POINTS} points; run this part of the model with the NumPy or "
                            "CuPy backend, or export a model without it")
    return normalize_axis(op.attrs["axis"], op.operands[0].type.rank), n


def _along(ctx, op: Op, axis: int, inputs: list[str], transform) -> list[str]:
    """``transform`` (last-axis names -> last-axis names) applied along ``axis``: moved last and back."""
    rank = op.operands[0].type.rank
    if axis == rank - 1:
        return transform(inputs)
    perm = [d for d in range(rank) if d != axis] + [axis]
    back = list(np.argsort(perm))
    moved = transform([ctx.node("Transpose", [name], perm=perm) for name in inputs])
    return [ctx.node("Transpose", [name], perm=back) for name in moved]


def _times(ctx, name: str, matrix: np.ndarray, dtype: np.dtype) -> str:
    return ctx.node("MatMul", [name, ctx.constant(matrix.astype(dtype))])


@ONNX.register("fft.r2c")
def r2c(ctx, op: Op, inputs: list[str]) -> list[str]:
    """``rfft``: ``yr = x C``, ``yi = -x S`` over bins ``0 .. n//2``."""
    axis, n = _checked(op)
    dtype, s = op.operands[0].type.dtype.numpy, _scale(op.attrs["norm"], n, inverse=False)
    cos, sin = _cos_sin(op.operands[0].type.shape[axis], n // 2 + 1, n)
    return _along(ctx, op, axis, inputs, lambda x: [_times(ctx, x[0], s * cos, dtype), _times(ctx, x[0], -s * sin, dtype)])


@ONNX.register("fft.c2r")
def c2r(ctx, op: Op, inputs: list[str]) -> list[str]:
    """``irfft``: ``x = yr (w C) - yi (w S)`` with bin weights ``w`` 1 for bins 0 and ``n/2`` (whose imaginary parts
    pocketfft ignores: their ``S`` rows are zero) and 2 for the bins between, rows past ``n//2`` zero (cropped)."""
    axis, n = _checked(op)
    dtype, s = op.operands[0].type.dtype.numpy, _scale(op.attrs["norm"], n, inverse=True)
    bins = op.operands[0].type.shape[axis]
    sin, cos = (m.T for m in _cos_sin(n, bins, n)[::-1])
    k = np.arange(bins)[:, None]
    weight = np.where((k == 0) | (2 * k == n), 1.0, np.where(k <= n // 2, 2.0, 0.0))
    sin = np.where((k == 0) | (2 * k == n), 0.0, sin)

    def transform(parts: list[str]) -> list[str]:
        real, imag = _times(ctx, parts[0], s * weight * cos, dtype), _times(ctx, parts[1], s * weight * sin, dtype)
        return [ctx.node("Sub", [real, imag])]

    return _along(ctx, op, axis, inputs, transform)


@ONNX.register("fft.c2c")
def c2c(ctx, op: Op, inputs: list[str]) -> list[str]:
    """``fft``/``ifft`` with sign ``sigma`` (-1 forward, +1 inverse): ``yr = xr C - sigma xi S``,
    ``yi = xi C + sigma xr S``."""
    axis, n = _checked(op)
    inverse = op.attrs["inverse"]
    dtype, s = op.operands[0].type.dtype.numpy, _scale(op.attrs["norm"], n, inverse)
    cos, sin = _cos_sin(op.operands[0].type.shape[axis], n, n)
    sigma = 1.0 if inverse else -1.0

    def transform(parts: list[str]) -> list[str]:
        real, imag = parts
        c, sg = s * cos, sigma * s * sin
        return [ctx.node("Sub", [_times(ctx, real, c, dtype), _times(ctx, imag, sg, dtype)]),
                ctx.node("Add", [_times(ctx, imag, c, dtype), _times(ctx, real, sg, dtype)])]

    return _along(ctx, op, axis, inputs, transform)
