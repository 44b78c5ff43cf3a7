"""The ``optim`` dialect: optimizer updates and gradient transforms as composite ops.

Each update takes the parameter, its gradient, its state and the scalars that
may change between steps (``lr``, the 1-based ``step`` counter) as operands,
the fixed options as attributes, and returns the new parameter and new state:

```
%w.new, %w.exp_avg.new, %w.exp_avg_sq.new = "optim.adam_update"(%w, %dw, %w.exp_avg, %w.exp_avg_sq, %lr, %step)
    {beta1 = 0.9, beta2 = 0.999, eps = 1e-08, weight_decay = 0.0, amsgrad = false, decoupled = false}
```

The decompositions follow ``torch.optim``'s single-tensor code operation by
operation (``buf.mul_(m).add_(g, alpha=1 - d)`` is ``buf * m + (1 - d) * g``),
so float32 results agree with PyTorch's to rounding. Scalar factors that
PyTorch computes on the host in double precision (bias corrections, Adagrad's
decayed lr) are computed here in f64 and cast to the parameter's dtype.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ops.registry import register_decomposition, register_op

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Value

UPDATE = {"composite", "non_differentiable"}


def check_like(op: str, param: TensorType, *others: TensorType) -> None:
    """Every per-parameter operand (grad, state) has the parameter's type."""
    for other in others:
        if other != param:
            raise ShapeError(f"{op}: expected {param} like the parameter, got {other}")


def check_scalar(op: str, param: TensorType, *scalars: TensorType) -> None:
    for scalar in scalars:
        if scalar.shape != () or scalar.dtype != param.dtype:
            raise ShapeError(f"{op}: hyper-parameter operands are 0-d {param.dtype} scalars, got {scalar}")


def check_step(op: str, step: TensorType) -> None:
    if step.shape != () or not step.dtype.is_int:
        raise ShapeError(f"{op}: the step counter is a 0-d integer (the 1-based number of this update), got {step}")


def update_types(op: str, param: TensorType, grad: TensorType, states: "list[TensorType] | tuple[TensorType, ...]",
                 lr: TensorType, step: TensorType | None = None) -> tuple[TensorType, ...]:
    """Check an update's operands (gradient and state like the parameter, ``lr`` a scalar, ``step`` a counter);
    returns the result types: the new parameter, then one per state."""
    check_like(op, param, grad, *states)
    check_scalar(op, param, lr)
    if step is not None:
        check_step(op, step)
    return (param,) * (1 + len(states))


def split_operands(op: str, operands: tuple, states: int, scalars: int) -> tuple[list, list]:
    """``(state operands, scalar operands)`` after ``param, grad``, checking the count the attributes imply."""
    if len(operands) != states + scalars:
        raise ShapeError(
            f"{op}: with these attributes it takes param, grad, {states} state and {scalars} scalar operands, got {2 + len(operands)} operands"
        )
    return list(operands[:states]), list(operands[states:])


# --- shared pieces of the decompositions --------------------------------------------------------


def constant(b: "Builder", value: float, like: "Value") -> "Value":
    """``value`` rounded to ``like``'s dtype, as PyTorch rounds a Python scalar operand."""
    return b.scalar_like(value, like)


def with_l2(b: "Builder", grad: "Value", param: "Value", weight_decay: float) -> "Value":
    # g + wd p   (torch: grad.add(param, alpha=weight_decay))
    return b.add(grad, b.mul(constant(b, weight_decay, param), param)) if weight_decay else grad


def lerp(b: "Builder", start: "Value", end: "Value", weight: float) -> "Value":
    # torch.lerp: start + w (end - start) for w < 0.5, else end - (end - start)(1 - w)
    dtype = start.type.dtype.numpy
    if weight < 0.5:
        return b.add(start, b.mul(constant(b, weight, start), b.sub(end, start)))
    one_minus = float(dtype.type(1) - dtype.type(weight))
    return b.sub(end, b.mul(b.sub(end, start), constant(b, one_minus, start)))


def decayed_average_of_squares(b: "Builder", average: "Value", grad: "Value", decay: float) -> "Value":
    # a d + (1 - d) g g   (torch: avg.mul_(d).addcmul_(g, g, value=1 - d))
    return b.add(b.mul(average, constant(b, decay, average)), b.mul(b.mul(constant(b, 1 - decay, grad), grad), grad))


def host_scalar(b: "Builder", value: "Value") -> "Value":
    """A scalar operand in f64, where PyTorch does its scalar arithmetic (Python floats)."""
    return value if value.type.dtype is DType.f64 else b.cast(value, dtype=DType.f64)


def f64(b: "Builder", value: float) -> "Value":
    return b.constant(value, DType.f64)


def bias_correction(b: "Builder", beta: float, step: "Value") -> "Value":
    # 1 - beta^t, in f64
    return b.sub(f64(b, 1.0), b.pow(f64(b, beta), host_scalar(b, step)))


def as_dtype_of(b: "Builder", scalar: "Value", like: "Value") -> "Value":
    return scalar if scalar.type.dtype is like.type.dtype else b.cast(scalar, dtype=like.type.dtype)


# --- SGD -----------------------------------------------------------------------------------------


@register_op("optim.sgd_update", traits=UPDATE, weight_decay=0.0)
def sgd_update_shape(param: TensorType, grad: TensorType, lr: TensorType, *, weight_decay: float) -> TensorType:
    """Plain SGD: ``p - lr * (g + weight_decay * p)``."""
    return update_types("optim.sgd_update", param, grad, (), lr)[0]


@register_decomposition("optim.sgd_update")
def sgd_update_decomposition(b: "Builder", param: "Value", grad: "Value", lr: "Value", *, weight_decay: float) -> "Value":
    # p' = p - lr * g
    return b.sub(param, b.mul(lr, with_l2(b, grad, param, weight_decay)))


@register_op("optim.sgd_momentum_update", traits=UPDATE, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0)
def sgd_momentum_update_shape(
    param: TensorType, grad: TensorType, buf: TensorType, lr: TensorType, step: TensorType, **options: float
) -> tuple[TensorType, TensorType]:
    """SGD with a momentum buffer: ``(p, g, buf, lr, step) -> (p', buf')``."""
    return update_types("optim.sgd_momentum_update", param, grad, (buf,), lr, step)


@register_decomposition("optim.sgd_momentum_update")
def sgd_momentum_update_decomposition(
    b: "Builder", param: "Value", grad: "Value", buf: "Value", lr: "Value", step: "Value",
    *, momentum: float, dampening: float, nesterov: bool, weight_decay: float,
) -> tuple["Value", "Value"]:
    grad = with_l2(b, grad, param, weight_decay)
    # buf' = g on the first step (torch clones the gradient), else buf m + (1 - dampening) g
    running = b.add(b.mul(buf, constant(b, momentum, buf)), b.mul(constant(b, 1 - dampening, grad), grad))
    new_buf = b.where(b.equal(step, b.constant(1, step.type.dtype)), grad, running)
    # d = g + m buf' (nesterov) or buf';  p' = p - lr d
    direction = b.add(grad, b.mul(constant(b, momentum, new_buf), new_buf)) if nesterov else new_buf
    return b.sub(param, b.mul(lr, direction)), new_buf


# --- Adam / AdamW --------------------------------------------------------------------------------


@register_op("optim.adam_update", traits=UPDATE, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False)
def adam_update_shape(param: TensorType, grad: TensorType, *rest: TensorType, amsgrad: bool, **options: float) -> tuple[TensorType, ...]:
    """Adam (``decoupled``: AdamW): ``(p, g, m, v, [vmax,] lr, step) -> (p', m', v'[, vmax'])``."""
    states, (lr, step) = split_operands("optim.adam_update", rest, 3 if amsgrad else 2, 2)
    return update_types("optim.adam_update", param, grad, states, lr, step)


@register_decomposition("optim.adam_update")
def adam_update_decomposition(
    b: "Builder", param: "Value", grad: "Value", *rest: "Value",
    beta1: float, beta2: float, eps: float, weight_decay: float, amsgrad: bool, decoupled: bool,
) -> tuple["Value", ...]:
    exp_avg, exp_avg_sq, *max_sq, lr, step = rest
    if decoupled and weight_decay:
        # p <- p (1 - lr wd)
        param = b.mul(param, as_dtype_of(b, b.sub(f64(b, 1.0), b.mul(host_scalar(b, lr), f64(b, weight_decay))), param))
    else:
        grad = with_l2(b, grad, param, weight_decay)
    new_avg = lerp(b, exp_avg, grad, 1 - beta1)
    new_avg_sq = decayed_average_of_squares(b, exp_avg_sq, grad, beta2)
    # step_size = lr / (1 - beta1^t);  denom = sqrt(v) / sqrt(1 - beta2^t) + eps
    step_size = b.div(host_scalar(b, lr), bias_correction(b, beta1, step))
    correction2_sqrt = as_dtype_of(b, b.sqrt(bias_correction(b, beta2, step)), param)
    new_max = [b.maximum(max_sq[0], new_avg_sq)] if amsgrad else []
    second = new_max[0] if amsgrad else new_avg_sq
    denom = b.add(b.div(b.sqrt(second), correction2_sqrt), constant(b, eps, param))
    # p' = p + (-step_size m') / denom   (torch: param.addcdiv_(m, denom, value=-step_size))
    new_param = b.add(param, b.div(b.mul(as_dtype_of(b, b.neg(step_size), param), new_avg), denom))
    return (new_param, new_avg, new_avg_sq, *new_max)


# --- RMSprop -------------------------------------------------------------------------------------


def rmsprop_state_count(centered: bool, momentum: float) -> int:
    """``square_avg``, then ``grad_avg`` when centered, then ``momentum_buffer`` when momentum > 0."""
    return 1 + int(centered) + int(momentum > 0)


@register_op("optim.rmsprop_update", traits=UPDATE, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False)
def rmsprop_update_shape(
    param: TensorType, grad: TensorType, *rest: TensorType, centered: bool, momentum: float, **options: float
) -> tuple[TensorType, ...]:
    """RMSprop: ``(p, g, square_avg, [grad_avg,] [momentum_buffer,] lr) -> (p', state'...)``."""
    states, (lr,) = split_operands("optim.rmsprop_update", rest, rmsprop_state_count(centered, momentum), 1)
    return update_types("optim.rmsprop_update", param, grad, states, lr)


@register_decomposition("optim.rmsprop_update")
def rmsprop_update_decomposition(
    b: "Builder", param: "Value", grad: "Value", *rest: "Value",
    alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool,
) -> tuple["Value", ...]:
    square_avg, *others, lr = rest
    grad = with_l2(b, grad, param, weight_decay)
    new_square_avg = decayed_average_of_squares(b, square_avg, grad, alpha)
    new_states = [new_square_avg]
    variance = new_square_avg
    if centered:
        # v - E[g]^2   (torch: square_avg.addcmul(grad_avg, grad_avg, value=-1))
        new_grad_avg = lerp(b, others.pop(0), grad, 1 - alpha)
        new_states.append(new_grad_avg)
        variance = b.add(new_square_avg, b.mul(b.mul(constant(b, -1.0, grad), new_grad_avg), new_grad_avg))
    avg = b.add(b.sqrt(variance), constant(b, eps, param))
    if momentum > 0:
        # buf' = buf m + g / avg;  p' = p - lr buf'
        new_buf = b.add(b.mul(others[0], constant(b, momentum, param)), b.div(grad, avg))
        new_states.append(new_buf)
        return (b.sub(param, b.mul(lr, new_buf)), *new_states)
    # p' = p + (-lr g) / avg
    return (b.add(param, b.div(b.mul(b.neg(lr), grad), avg)), *new_states)


# --- Adagrad -------------------------------------------------------------------------------------


@register_op("optim.adagrad_update", traits=UPDATE, lr_decay=0.0, eps=1e-10, weight_decay=0.0)
def adagrad_update_shape(
    param: TensorType, grad: TensorType, state_sum: TensorType, lr: TensorType, step: TensorType, **options: float
) -> tuple[TensorType, TensorType]:
    """Adagrad: ``(p, g, sum, lr, step) -> (p', sum')``."""
    return update_types("optim.adagrad_update", param, grad, (state_sum,), lr, step)


@register_decomposition("optim.adagrad_update")
def adagrad_update_decomposition(
    b: "Builder", param: "Value", grad: "Value", state_sum: "Value", lr: "Value", step: "Value",
    *, lr_decay: float, eps: float, weight_decay: float,
) -> tuple["Value", "Value"]:
    grad = with_l2(b, grad, param, weight_decay)
    # clr = lr / (1 + (t - 1) lr_decay), in f64
    steps_before = b.sub(host_scalar(b, step), f64(b, 1.0))
    clr = b.div(host_scalar(b, lr), b.add(f64(b, 1.0), b.mul(steps_before, f64(b, lr_decay))))
    # sum' = sum + g g;  p' = p + (-clr g) / (sqrt(sum') + eps)
    new_sum = b.add(state_sum, b.mul(b.mul(constant(b, 1.0, grad), grad), grad))
    std = b.add(b.sqrt(new_sum), constant(b, eps, param))
    return b.add(param, b.div(b.mul(as_dtype_of(b, b.neg(clr), param), grad), std)), new_sum


# --- gradient transforms -------------------------------------------------------------------------


@register_op("optim.clip_grad_norm", traits=UPDATE, max_norm=1.0)
def clip_grad_norm_shape(*grads: TensorType, max_norm: float) -> TensorType | tuple[TensorType, ...]:
    """Scale every gradient by ``min(1, max_norm / (global 2-norm + 1e-6))``, as ``torch.nn.utils.clip_grad_norm_``."""
    if not grads:
        raise ShapeError("optim.clip_grad_norm needs at least one gradient")
    if len({g.dtype for g in grads}) != 1 or not grads[0].dtype.is_float:
        raise ShapeError(f"optim.clip_grad_norm needs float gradients of one dtype, got {', '.join(map(str, grads))}")
    return grads[0] if len(grads) == 1 else tuple(grads)


@register_decomposition("optim.clip_grad_norm")
def clip_grad_norm_decomposition(b: "Builder", *grads: "Value", max_norm: float) -> "Value | tuple[Value, ...]":
    # norm = sqrt(sum_i |g_i|^2) with |g_i| = sqrt(sum(g_i^2));  coef = min(max_norm / (norm + 1e-6), 1)
    norms = [b.sqrt(b.reduce_sum(b.mul(g, g))) for g in grads]
    total = b.mul(norms[0], norms[0])
    for norm in norms[1:]:
        total = b.add(total, b.mul(norm, norm))
    like = grads[0]
    coefficient = b.div(constant(b, max_norm, like), b.add(b.sqrt(total), constant(b, 1e-6, like)))
    coefficient = b.minimum(coefficient, constant(b, 1.0, like))
    clipped = tuple(b.mul(g, coefficient) for g in grads)
    return clipped[0] if len(clipped) == 1 else clipped


@register_op("optim.clip_grad_value", traits=UPDATE, clip_value=1.0)
def clip_grad_value_shape(grad: TensorType, *, clip_value: float) -> TensorType:
    """Clamp a gradient to ``[-clip_value, clip_value]``, as ``torch.nn.utils.clip_grad_value_``."""
    if not grad.dtype.is_float or clip_value < 0:
        raise ShapeError(f"optim.clip_grad_value needs a float gradient and clip_value >= 0, got {grad} and {clip_value}")
    return grad


@register_decomposition("optim.clip_grad_value")
def clip_grad_value_decomposition(b: "Builder", grad: "Value", *, clip_value: float) -> "Value":
    # min(max(g, -c), c)
    return b.minimum(b.maximum(grad, constant(b, -clip_value, grad)), constant(b, clip_value, grad))


@register_op("optim.unscale_grad", traits=UPDATE)
def unscale_grad_shape(grad: TensorType, scale: TensorType) -> TensorType:
    """Undo loss scaling: ``g * (1 / scale)``, as ``torch.amp.GradScaler.unscale_``."""
    check_scalar("optim.unscale_grad", grad, scale)
    return grad


@register_decomposition("optim.unscale_grad")
def unscale_grad_decomposition(b: "Builder", grad: "Value", scale: "Value") -> "Value":
    # g * (1 / s)
    return b.mul(grad, b.div(constant(b, 1.0, scale), scale))

