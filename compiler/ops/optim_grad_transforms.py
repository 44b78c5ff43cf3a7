"""The optim ops that transform gradients before an update: clipping by the global norm or by value
(``torch.nn.utils.clip_grad_norm_``, ``clip_grad_value_``) and undoing loss scaling (``GradScaler.unscale_``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import TensorType
from kiln.compiler.ops.optim_opmath import Store, as_dtype_of, constant, register_update, rounded_constant
from kiln.compiler.ops.optim_types import UPDATE, check_scalar
from kiln.compiler.ops.registry import register_op

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Value


@register_op("optim.clip_grad_norm", traits=UPDATE, max_norm=1.0)
def clip_grad_norm_shape(*grads: TensorType, max_norm: float) -> TensorType | tuple[TensorType, ...]:
    """Scale every gradient by ``min(1, max_norm / (global 2-norm + 1e-6))``, as ``torch.nn.utils.clip_grad_norm_``."""
    if not grads:
        raise ShapeError("optim.clip_grad_norm needs at least one gradient")
    if len({g.dtype for g in grads}) != 1 or not grads[0].dtype.is_float:
        raise ShapeError(f"optim.clip_grad_norm needs float gradients of one dtype, got {', '.join(map(str, grads))}")
    return grads[0] if len(grads) == 1 else tuple(grads)


@register_update("optim.clip_grad_norm")
def clip_grad_norm_decomposition(b: "Builder", store: Store, *grads: "Value", max_norm: float) -> "Value | tuple[Value, ...]":
    # norm = ||(|g_1|, |g_2|, ...)|| with |g_i| = sqrt(sum(g_i^2)), each norm an op of its own in the gradients' dtype
    norms = [store(b.sqrt(b.reduce_sum(b.mul(g, g)))) for g in grads]
    total = b.mul(norms[0], norms[0])
    for norm in norms[1:]:
        total = b.add(total, b.mul(norm, norm))
    like = grads[0]
    # coef = min(max_norm / (norm + 1e-6), 1)   (torch: max_norm / tensor is tensor.reciprocal() * max_norm)
    shifted = store(b.add(store(b.sqrt(total)), rounded_constant(b, store, 1e-6, like)))
    coefficient = store(b.mul(store(b.div(constant(b, 1.0, like), shifted)), constant(b, max_norm, like)))
    coefficient = b.minimum(coefficient, store(constant(b, 1.0, like)))
    clipped = tuple(b.mul(g, coefficient) for g in grads)
    return clipped[0] if len(clipped) == 1 else clipped


@register_op("optim.clip_grad_value", traits=UPDATE, clip_value=1.0)
def clip_grad_value_shape(grad: TensorType, *, clip_value: float) -> TensorType:
    """Clamp a gradient to ``[-clip_value, clip_value]``, as ``torch.nn.utils.clip_grad_value_``."""
    if not grad.dtype.is_float or clip_value < 0:
        raise ShapeError(f"optim.clip_grad_value needs a float gradient and clip_value >= 0, got {grad} and {clip_value}")
    return grad


@register_update("optim.clip_grad_value")
def clip_grad_value_decomposition(b: "Builder", store: Store, grad: "Value", *, clip_value: float) -> "Value":
    # min(max(g, -c), c), c rounded to the gradient's dtype (torch's clamp reads its bounds in it)
    return b.minimum(b.maximum(grad, store(constant(b, -clip_value, grad))), store(constant(b, clip_value, grad)))


@register_op("optim.unscale_grad", traits=UPDATE)
def unscale_grad_shape(grad: TensorType, scale: TensorType) -> TensorType:
    """Undo loss scaling: ``g * (1 / scale)``, as ``torch.amp.GradScaler.unscale_``."""
    check_scalar("optim.unscale_grad", grad, scale)
    return grad


@register_update("optim.unscale_grad")
def unscale_grad_decomposition(b: "Builder", store: Store, grad: "Value", scale: "Value") -> "Value":
    # g * (1 / s), 1 / s in the scale's dtype, read in the gradient's   (torch: grad.mul_(1 / scale), a Python float)
    return b.mul(grad, as_dtype_of(b, b.div(constant(b, 1.0, scale), scale), grad))
