"""NumPy kernel of ``tensor.reduce_prod`` (``compiler/ops/reduce_prod.py``), in the one ``NUMPY`` table."""

from __future__ import annotations

import numpy as np

from kiln.backends.numpy.lowering import NUMPY


@NUMPY.register("tensor.reduce_prod")
def reduce_prod(x, *, axes, keepdims: bool):
    # dtype=x.dtype: NumPy would widen int32 to int64; an empty product is 1, as in ONNX
    return np.prod(x, axis=axes, keepdims=keepdims, dtype=x.dtype)
