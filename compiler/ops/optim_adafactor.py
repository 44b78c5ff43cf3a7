"""The Adafactor optim op: the second moment of a parameter of rank >= 2 factored into row and column moments
(``factored_shapes``), the update scaled by the parameter's RMS and clipped by its own, as ``torch.optim.Adafactor``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import TensorType
from kiln.compiler.ops.optim_opmath import Store, as_dtype_of, constant, decay_weights, f64, host_scalar, lerp_by, register_update
from kiln.compiler.ops.optim_types import UPDATE, check_like, check_lr, check_step, split_operands
from kiln.compiler.ops.registry import register_op

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Value


def factored_shapes(param: TensorType) -> tuple[TensorType, TensorType]:
    """Adafactor's row and column moments of a parameter of rank >= 2: its shape with the last, then the next-to-last, dim 1."""
    row, col = list(param.shape), list(param.shape)
    row[-1], col[-2] = 1, 1
    return param.with_shape(tuple(row)), param.with_shape(tuple(col))


@register_op("optim.adafactor_update", traits=UPDATE, beta2_decay=-0.8, eps1=1e-7, eps2=1e-3, d=1.0, weight_decay=0.0)
def adafactor_update_shape(param: TensorType, grad: TensorType, *rest: TensorType, **options: float) -> tuple[TensorType, ...]:
    """Adafactor: ``(p, g, row_var, col_var, lr, step) -> (p', row_var', col_var')`` for a parameter of rank >= 2 (the
    second moment factored: ``row_var`` shaped like ``p`` with the last dim 1, ``col_var`` with the next-to-last 1);
    ``(p, g, variance, lr, step) -> (p', variance')`` for a vector or scalar."""
    factored = param.rank > 1
    states, (lr, step) = split_operands("optim.adafactor_update", rest, 2 if factored else 1, 2)
    check_like("optim.adafactor_update", param, grad)
    expected = factored_shapes(param) if factored else (param,)
    for state, kept in zip(states, expected):
        if state != kept:
            raise ShapeError(f"optim.adafactor_update: expected a second moment of type {kept} for a parameter {param}, got {state}")
    check_lr("optim.adafactor_update", param, lr)
    check_step("optim.adafactor_update", step)
    return (param, *states)


def norm_over(b: "Builder", store: Store, x: "Value", scale: float) -> "Value":
    # ||x||_2 / (sqrt(numel) scale), in f64   (torch: x.norm(2).item() / ((x.numel() ** 0.5) * scale))
    norm = host_scalar(b, store(b.sqrt(b.reduce_sum(b.mul(x, x)))))
    return b.div(norm, f64(b, math.prod(x.type.shape) ** 0.5 * scale))


def mean_square_along(b: "Builder", store: Store, grad: "Value", axis: int) -> "Value":
    # ||g||^2 / n along one axis, kept   (torch: torch.norm(grad, dim=axis, keepdim=True).square_().div_(n))
    norm = store(b.sqrt(b.reduce_sum(b.mul(grad, grad), axes=(axis,), keepdims=True)))
    return store(b.div(store(b.mul(norm, norm)), constant(b, float(grad.type.shape[axis]), grad)))


def factored_estimate(
    b: "Builder", store: Store, grad: "Value", row_var: "Value", col_var: "Value", weight: "Value", eps1: float
) -> tuple["Value", "Value", "Value"]:
    """``(row_var', col_var', v)``: the moments moved toward this gradient's row and column mean squares, and the second
    moment they estimate, ``row_var' col_var' / max(mean(row_var'), eps1)``."""
    rank = grad.type.rank
    new_row = lerp_by(b, store, row_var, mean_square_along(b, store, grad, rank - 1), weight)
    new_col = lerp_by(b, store, col_var, mean_square_along(b, store, grad, rank - 2), weight)
    # torch: (row_var @ col_var).div_(row_var.mean(dim=-2, keepdim=True).clamp_(min=eps1)); the matmul has one term
    row_mean = b.maximum(store(b.reduce_mean(new_row, axes=(rank - 2,), keepdims=True)), store(constant(b, eps1, grad)))
    return new_row, new_col, store(b.div(store(b.mul(new_row, new_col)), row_mean))


@register_update("optim.adafactor_update")
def adafactor_update_decomposition(
    b: "Builder", store: Store, param: "Value", grad: "Value", *rest: "Value", beta2_decay: float, eps1: float, eps2: float, d: float,
    weight_decay: float,
) -> tuple["Value", ...]:
    *states, lr, step = rest
    t, rate = host_scalar(b, step), host_scalar(b, lr)
    # 1 - beta2_t = t^beta2_decay;  alpha = max(eps2, rms(p)) min(lr, 1 / t^0.5), in f64 (before weight decay)
    weight = b.pow(t, f64(b, beta2_decay))
    relative = b.minimum(rate, b.div(f64(b, 1.0), b.pow(t, f64(b, 0.5))))
    alpha = b.mul(b.maximum(f64(b, eps2), norm_over(b, store, param, 1.0)), relative)
    param, _ = decay_weights(b, store, param, grad, lr, weight_decay, decoupled=True)
    if len(states) == 2:
        *new_states, estimate = factored_estimate(b, store, grad, states[0], states[1], weight, eps1)
    else:
        new_states = [lerp_by(b, store, states[0], store(b.mul(grad, grad)), weight)]
        estimate = new_states[0]
    # u = g / sqrt(max(v, eps1^2));  p' = p + (-alpha / max(1, rms(u) / d)) u   (torch: var.clamp_(min=eps1 * eps1).rsqrt_())
    floored = b.maximum(estimate, store(constant(b, eps1 * eps1, grad)))
    update = store(b.mul(store(b.div(constant(b, 1.0, grad), b.sqrt(floored))), grad))
    clipped = b.maximum(f64(b, 1.0), norm_over(b, store, update, d))
    new_param = b.add(param, b.mul(store(as_dtype_of(b, b.neg(b.div(alpha, clipped)), param)), update))
    return (new_param, *new_states)
