"""PyTorch's check of ``F.linear``'s input against its ``(out_features, in_features)`` weight, with its words:
``mat1 and mat2 shapes cannot be multiplied (16x9 and 4x4)`` (the input's leading dims folded into rows, the weight
transposed), a ``RuntimeError`` raised before the matmul, whose shape rule would name kiln's op and layouts."""

from __future__ import annotations

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import dim_product
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.tensor import Tensor


class LinearShapeError(TraceError, RuntimeError):
    """An input whose last dim is not the weight's ``in_features`` (torch's ``RuntimeError``)."""


def check_linear_shapes(input: Tensor, weight: Tensor) -> None:  # noqa: A002  (torch's names)
    """Raise torch's error when a 2-D ``weight``'s in_features differ from ``input``'s last dim."""
    input_shape, weight_shape = input.shape, weight.shape  # each a new Size: read once
    if len(weight_shape) != 2 or len(input_shape) == 0:
        return
    features, in_features = input_shape[-1], weight_shape[1]
    if not isinstance(features, int) or not isinstance(in_features, int) or features == in_features:
        return
    rows = dim_product(tuple(input.shape[:-1]))
    raise located(LinearShapeError, f"mat1 and mat2 shapes cannot be multiplied ({rows}x{features} and "
                                    f"{in_features}x{weight.shape[0]})")
