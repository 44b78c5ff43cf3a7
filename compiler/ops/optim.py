"""The ``optim`` dialect: optimizer updates as composite ops in the training step.

Each update takes the parameter, its gradient, its state and the scalar
hyper-parameters that may change between steps (``lr``) as operands, the
fixed ones as attributes, and returns the new parameter and new state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import TensorType
from kiln.compiler.ops.registry import register_decomposition, register_op

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Value


def check_like(op: str, param: TensorType, *others: TensorType) -> None:
    """Every per-parameter operand (grad, state) has the parameter's type."""
    for other in others:
        if other != param:
            raise ShapeError(f"{op}: expected {param} like the parameter, got {other}")


def check_scalar(op: str, param: TensorType, *scalars: TensorType) -> None:
    for scalar in scalars:
        if scalar.shape != () or scalar.dtype != param.dtype:
            raise ShapeError(f"{op}: hyper-parameter operands are 0-d {param.dtype} scalars, got {scalar}")


@register_op("optim.sgd_update", traits={"composite", "non_differentiable"})
def sgd_update_shape(param: TensorType, grad: TensorType, lr: TensorType) -> TensorType:
    """Plain SGD: ``p - lr * g``."""
    check_like("optim.sgd_update", param, grad)
    check_scalar("optim.sgd_update", param, lr)
    return param


@register_decomposition("optim.sgd_update")
def sgd_update_decomposition(b: "Builder", param: "Value", grad: "Value", lr: "Value") -> "Value":
    # p' = p - lr * g
    return b.sub(param, b.mul(lr, grad))
