"""ONNX export of the ``fft`` dialect (``compiler/ops/fft.py``): a clear refusal.

ONNX's ``DFT`` (opset 20) has all three transforms on ``[..., n, 2]`` pairs, but onnxruntime 1.32's is not yet one
to lower to: checked against ``np.fft`` in float64, its inverse of a length that is not a power of 2 (6, 9, 10, 11) is
off by 1e-8 (pocketfft: 1e-16), and its one-sided inverse given more bins than ``n//2 + 1`` (``irfft(x, n=4)`` of 6
bins) returns wrong values instead of cropping. So exporting a graph with an ``fft.*`` op raises an error naming the
op and where it came from.
"""

from __future__ import annotations

from kiln.backends.onnx.lowering import ONNX
from kiln.compiler.errors import LoweringError
from kiln.compiler.ir.core import Op

FFT_OPS = ("fft.c2c", "fft.r2c", "fft.c2r")


def _refuse(ctx, op: Op, inputs: list[str]) -> list[str]:
    where = f" (from {op.location})" if op.location else ""
    raise LoweringError(f"ONNX export: {op.name}{where}, a Fourier transform (kiln.fft), has no ONNX lowering in kiln; "
                        "run this part of the model with the NumPy or CuPy backend, or export a model without it")


for _name in FFT_OPS:
    ONNX.register(_name)(_refuse)
