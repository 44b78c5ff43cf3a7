"""The optim ops whose step size adapts per element from the gradients' history: RMSprop, Adagrad and Adadelta
(running sums or averages of squared gradients) and Rprop (step sizes grown or shrunk by the gradient's sign), each
``torch.optim``'s single-tensor update op by op."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.compiler.ir.types import TensorType
from kiln.compiler.ops.optim_opmath import Store, add_scaled_ratio, as_dtype_of, constant, decayed_average_of_squares, f64, host_scalar, lerp, multiply_add, register_update, rounded_constant, with_l2
from kiln.compiler.ops.optim_types import UPDATE, check_like, split_operands, update_types
from kiln.compiler.ops.registry import register_op

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Value


# --- RMSprop -------------------------------------------------------------------------------------


def rmsprop_state_count(centered: bool, momentum: "float | Value") -> int:
    """``square_avg``, then ``grad_avg`` when centered, then ``momentum_buffer`` when momentum > 0 or fed each step."""
    return 1 + int(centered) + int(_has_momentum(momentum))


def _has_momentum(momentum: "float | Value") -> bool:
    """A momentum > 0, or one a scheduler feeds each step (a 0-d f64 ``Value``: ``emit_decomposed``)."""
    return not isinstance(momentum, (int, float)) or momentum > 0


@register_op("optim.rmsprop_update", traits=UPDATE, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False)
def rmsprop_update_shape(
    param: TensorType, grad: TensorType, *rest: TensorType, centered: bool, momentum: float, **options: float
) -> tuple[TensorType, ...]:
    """RMSprop: ``(p, g, square_avg, [grad_avg,] [momentum_buffer,] lr) -> (p', state'...)``."""
    states, (lr,) = split_operands("optim.rmsprop_update", rest, rmsprop_state_count(centered, momentum), 1)
    return update_types("optim.rmsprop_update", param, grad, states, lr)


@register_update("optim.rmsprop_update")
def rmsprop_update_decomposition(
    b: "Builder", store: Store, param: "Value", grad: "Value", *rest: "Value",
    alpha: float, eps: float, weight_decay: float, momentum: "float | Value", centered: bool,
) -> tuple["Value", ...]:
    square_avg, *others, lr = rest
    lr = as_dtype_of(b, lr, param)
    grad = with_l2(b, store, grad, param, weight_decay)
    new_square_avg = decayed_average_of_squares(b, store, square_avg, grad, alpha)
    new_states = [new_square_avg]
    variance = new_square_avg
    if centered:
        # v - E[g]^2   (torch: square_avg.addcmul(grad_avg, grad_avg, value=-1))
        new_grad_avg = lerp(b, store, others.pop(0), grad, 1 - alpha)
        new_states.append(new_grad_avg)
        variance = store(multiply_add(b, store, b.mul(constant(b, -1.0, grad), new_grad_avg), new_grad_avg, new_square_avg))
    avg = store(b.add(store(b.sqrt(variance)), rounded_constant(b, store, eps, param)))
    if _has_momentum(momentum):
        # buf' = buf m + g / avg;  p' = p - lr buf'   (torch: buf.mul_(momentum).addcdiv_(grad, avg))
        new_buf = store(b.add(store(b.mul(others[0], constant(b, momentum, param))), b.div(grad, avg)))
        new_states.append(new_buf)
        return (b.sub(param, b.mul(store(lr), new_buf)), *new_states)
    # p' = p + (-lr g) / avg
    return (b.add(param, b.div(b.mul(b.neg(lr), grad), avg)), *new_states)


# --- Adagrad -------------------------------------------------------------------------------------


@register_op("optim.adagrad_update", traits=UPDATE, lr_decay=0.0, eps=1e-10, weight_decay=0.0)
def adagrad_update_shape(
    param: TensorType, grad: TensorType, state_sum: TensorType, lr: TensorType, step: TensorType, **options: float
) -> tuple[TensorType, TensorType]:
    """Adagrad: ``(p, g, sum, lr, step) -> (p', sum')``."""
    return update_types("optim.adagrad_update", param, grad, (state_sum,), lr, step)


@register_update("optim.adagrad_update")
def adagrad_update_decomposition(
    b: "Builder", store: Store, param: "Value", grad: "Value", state_sum: "Value", lr: "Value", step: "Value",
    *, lr_decay: float, eps: float, weight_decay: float,
) -> tuple["Value", "Value"]:
    grad = with_l2(b, store, grad, param, weight_decay)
    # clr = lr / (1 + (t - 1) lr_decay), in f64
    steps_before = b.sub(host_scalar(b, step), f64(b, 1.0))
    clr = b.div(host_scalar(b, lr), b.add(f64(b, 1.0), b.mul(steps_before, f64(b, lr_decay))))
    # sum' = sum + g g;  p' = p + (-clr g) / (sqrt(sum') + eps)
    new_sum = store(multiply_add(b, store, b.mul(constant(b, 1.0, grad), grad), grad, state_sum))
    std = store(b.add(store(b.sqrt(new_sum)), rounded_constant(b, store, eps, param)))
    return add_scaled_ratio(b, param, b.neg(clr), grad, std), new_sum


# --- Adadelta ------------------------------------------------------------------------------------


@register_op("optim.adadelta_update", traits=UPDATE, rho=0.9, eps=1e-6, weight_decay=0.0)
def adadelta_update_shape(
    param: TensorType, grad: TensorType, square_avg: TensorType, acc_delta: TensorType, lr: TensorType, **options: float
) -> tuple[TensorType, TensorType, TensorType]:
    """Adadelta: ``(p, g, square_avg, acc_delta, lr) -> (p', square_avg', acc_delta')``."""
    return update_types("optim.adadelta_update", param, grad, (square_avg, acc_delta), lr)


@register_update("optim.adadelta_update")
def adadelta_update_decomposition(
    b: "Builder", store: Store, param: "Value", grad: "Value", square_avg: "Value", acc_delta: "Value", lr: "Value",
    *, rho: float, eps: float, weight_decay: float,
) -> tuple["Value", "Value", "Value"]:
    grad = with_l2(b, store, grad, param, weight_decay)
    new_square_avg = decayed_average_of_squares(b, store, square_avg, grad, rho)
    # delta = sqrt(acc + eps) / sqrt(v' + eps) * g;  acc' = acc rho + (1 - rho) delta delta
    std = store(b.sqrt(store(b.add(new_square_avg, rounded_constant(b, store, eps, param)))))
    delta = store(b.mul(store(b.div(store(b.sqrt(store(b.add(acc_delta, rounded_constant(b, store, eps, param))))), std)), grad))
    new_acc_delta = decayed_average_of_squares(b, store, acc_delta, delta, rho)
    # p' = p + (-lr) delta
    return b.add(param, b.mul(b.neg(store(as_dtype_of(b, lr, param))), delta)), new_square_avg, new_acc_delta


# --- Rprop ---------------------------------------------------------------------------------------


@register_op("optim.rprop_update", traits=UPDATE, etaminus=0.5, etaplus=1.2, step_size_min=1e-6, step_size_max=50.0)
def rprop_update_shape(
    param: TensorType, grad: TensorType, prev: TensorType, step_size: TensorType, **options: float
) -> tuple[TensorType, TensorType, TensorType]:
    """Rprop: ``(p, g, prev, step_size) -> (p', prev', step_size')``; neither lr (only the step sizes' initial value)
    nor the step number enters the update."""
    check_like("optim.rprop_update", param, grad, prev, step_size)
    return param, param, param


def sign(b: "Builder", x: "Value") -> "Value":
    # 1, -1 or 0 as x > 0, x < 0 or neither   (torch.sign)
    zero = constant(b, 0.0, x)
    return b.where(b.greater(x, zero), constant(b, 1.0, x), b.where(b.less(x, zero), constant(b, -1.0, x), zero))


@register_update("optim.rprop_update")
def rprop_update_decomposition(
    b: "Builder", store: Store, param: "Value", grad: "Value", prev: "Value", step_size: "Value",
    *, etaminus: float, etaplus: float, step_size_min: float, step_size_max: float,
) -> tuple["Value", "Value", "Value"]:
    # factor = etaplus, etaminus or 1 as g prev > 0, < 0 or 0   (torch: sign = grad.mul(prev).sign(), then replaced,
    # in the gradient's dtype: etas rounded to it)
    product = store(b.mul(grad, prev))
    zero = constant(b, 0.0, grad)
    flipped = b.less(product, zero)
    etas = store(b.where(b.greater(product, zero), constant(b, etaplus, grad), b.where(flipped, constant(b, etaminus, grad), constant(b, 1.0, grad))))
    # s' = clamp(s factor, min, max);  g' = 0 where the sign flipped, else g
    grown = store(b.mul(step_size, etas))
    new_step_size = store(b.minimum(b.maximum(grown, constant(b, step_size_min, grown)), constant(b, step_size_max, grown)))
    new_grad = b.where(flipped, zero, grad)
    # p' = p - sign(g') s'   (torch: param.addcmul_(grad.sign(), step_size, value=-1));  prev' = g'
    return b.sub(param, b.mul(sign(b, new_grad), new_step_size)), new_grad, new_step_size
