"""Stateless randomness: ``tensor.random_uniform`` draws from a seed operand, so graphs stay pure.

The same seed (and ``stream``, which tells apart the draws of one graph)
gives the same numbers on every run and backend that implements the same
counter-based generator (Philox-4x64, keyed by ``(seed, stream)``). A training
step feeds a fresh seed each call; replaying a seed replays the step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ops.registry import register_decomposition, register_op

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Value


@register_op("tensor.random_uniform", traits={"non_differentiable"}, dtype=DType.f32, stream=0)
def random_uniform_shape(seed: TensorType, like: TensorType, *, dtype: DType, stream: int) -> TensorType:
    """U[0, 1) numbers shaped like ``like`` (symbolic dims too), a pure function of the scalar integer ``seed`` and ``stream``."""
    if seed.shape != () or not seed.dtype.is_int:
        raise ShapeError(f"tensor.random_uniform needs a scalar integer seed, got {seed}")
    if not DType.of(dtype).is_float:
        raise ShapeError(f"tensor.random_uniform draws floats, not {DType.of(dtype).value}")
    return TensorType(like.shape, DType.of(dtype))


@register_op("nn.dropout", traits={"composite"}, p=0.5, stream=0)
def dropout_shape(x: TensorType, seed: TensorType, *, p: float, stream: int) -> TensorType:
    """Zero each element with probability ``p`` and scale the survivors by ``1 / (1 - p)`` (training mode)."""
    if not 0 <= p < 1 or not x.dtype.is_float:
        raise ShapeError(f"nn.dropout needs float x and 0 <= p < 1, got {x} and p={p}")
    random_uniform_shape(seed, x, dtype=x.dtype, stream=stream)
    return x


@register_decomposition("nn.dropout")
def dropout_decomposition(b: "Builder", x: "Value", seed: "Value", *, p: float, stream: int) -> "Value":
    # dropout(x) = x * [u >= p] / (1 - p),  u ~ U[0, 1) from (seed, stream)
    draw = b.random_uniform(seed, x, dtype=x.type.dtype, stream=stream)
    keep = b.greater_equal(draw, b.scalar_like(p, draw))
    return b.mul(x, b.where(keep, b.scalar_like(1 / (1 - p), x), b.scalar_like(0.0, x)))
