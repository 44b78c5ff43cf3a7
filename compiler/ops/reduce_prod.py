"""``tensor.reduce_prod``: the product over ``axes`` (``None`` for all), like ``np.prod``; an empty product is 1.

It serves ONNX's ``ReduceProd`` on run-time data and ``ScatterElements(reduction="mul")``
(the product of one-hot-selected updates). It has no ``reduction`` trait: that
trait lets elementwise fusion close a group with the op, and the fused-kernel
code generators know only sums, means and extrema.

>>> from kiln.compiler.ir.types import TensorType, DType
>>> reduce_prod_shape(TensorType((2, 3), DType.f32), axes=(1,), keepdims=False)
TensorType(shape=(2,), dtype=<DType.f32: 'f32'>)
"""

from __future__ import annotations

from kiln.compiler.ops.registry import register_op
from kiln.compiler.ops.tensor import _reduce_shape

reduce_prod_shape = register_op("tensor.reduce_prod", axes=None, keepdims=False)(_reduce_shape("tensor.reduce_prod"))
