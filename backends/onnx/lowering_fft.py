"""ONNX export of the ``fft`` dialect (``compiler/ops/fft.py``): a clear refusal.

ONNX's ``DFT`` (opset 17, 20) transforms ``[..., n, 2]`` real/imaginary pairs, but it has no one-sided inverse
(``fft.c2r``: ``irfft``), its axis may not be the first dim, and it normalizes only the inverse by ``1/n``; kiln's
exporter does not lower to it yet. Exporting a graph with an ``fft.*`` op raises an error naming the op and where it
came from.
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
