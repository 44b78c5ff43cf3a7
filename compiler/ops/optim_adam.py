"""The Adam family of optim ops: Adam and AdamW (``decoupled``), Adamax, NAdam (its momentum schedule) and RAdam (its
rectification), each ``torch.optim``'s single-tensor update op by op, bias corrections in float64."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ops.optim_opmath import Store, add_scaled_ratio, as_dtype_of, bias_correction, complement, constant, decay_weights, decayed_average_of_squares, f64, host, host_scalar, lerp, register_update, rounded_constant, with_l2
from kiln.compiler.ops.optim_types import UPDATE, check_scalar_state, split_operands, update_types
from kiln.compiler.ops.registry import register_op

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Value


# --- Adam / AdamW --------------------------------------------------------------------------------


@register_op("optim.adam_update", traits=UPDATE, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False)
def adam_update_shape(param: TensorType, grad: TensorType, *rest: TensorType, amsgrad: bool, **options: float) -> tuple[TensorType, ...]:
    """Adam (``decoupled``: AdamW): ``(p, g, m, v, [vmax,] lr, step) -> (p', m', v'[, vmax'])``."""
    states, (lr, step) = split_operands("optim.adam_update", rest, 3 if amsgrad else 2, 2)
    return update_types("optim.adam_update", param, grad, states, lr, step)


@register_update("optim.adam_update")
def adam_update_decomposition(
    b: "Builder", store: Store, param: "Value", grad: "Value", *rest: "Value",
    beta1: "float | Value", beta2: float, eps: float, weight_decay: float, amsgrad: bool, decoupled: bool,
) -> tuple["Value", ...]:
    exp_avg, exp_avg_sq, *max_sq, lr, step = rest
    param, grad = decay_weights(b, store, param, grad, lr, weight_decay, decoupled)
    new_avg = lerp(b, store, exp_avg, grad, complement(b, beta1))
    new_avg_sq = decayed_average_of_squares(b, store, exp_avg_sq, grad, beta2)
    # step_size = lr / (1 - beta1^t);  denom = sqrt(v) / sqrt(1 - beta2^t) + eps, one rounding per op
    step_size = b.div(host_scalar(b, lr), bias_correction(b, beta1, step))
    correction2_sqrt = as_dtype_of(b, b.sqrt(bias_correction(b, beta2, step)), param)
    new_max = [b.maximum(max_sq[0], new_avg_sq)] if amsgrad else []
    second = new_max[0] if amsgrad else new_avg_sq
    denom = store(b.add(store(b.div(store(b.sqrt(second)), correction2_sqrt)), rounded_constant(b, store, eps, param)))
    # p' = p + (-step_size m') / denom
    return (add_scaled_ratio(b, param, b.neg(step_size), new_avg, denom), new_avg, new_avg_sq, *new_max)


# --- Adamax --------------------------------------------------------------------------------------


@register_op("optim.adamax_update", traits=UPDATE, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
def adamax_update_shape(
    param: TensorType, grad: TensorType, exp_avg: TensorType, exp_inf: TensorType, lr: TensorType, step: TensorType, **options: float
) -> tuple[TensorType, TensorType, TensorType]:
    """Adamax, Adam with an infinity norm: ``(p, g, m, u, lr, step) -> (p', m', u')``."""
    return update_types("optim.adamax_update", param, grad, (exp_avg, exp_inf), lr, step)


@register_update("optim.adamax_update")
def adamax_update_decomposition(
    b: "Builder", store: Store, param: "Value", grad: "Value", exp_avg: "Value", exp_inf: "Value", lr: "Value", step: "Value",
    *, beta1: "float | Value", beta2: float, eps: float, weight_decay: float,
) -> tuple["Value", "Value", "Value"]:
    grad = with_l2(b, store, grad, param, weight_decay)
    new_avg = lerp(b, store, exp_avg, grad, complement(b, beta1))
    # u' = max(u beta2, |g| + eps)
    new_inf = b.maximum(store(b.mul(exp_inf, constant(b, beta2, exp_inf))), store(b.add(b.abs(grad), rounded_constant(b, store, eps, grad))))
    # clr = lr / (1 - beta1^t), in f64;  p' = p + (-clr m') / u'
    clr = b.div(host_scalar(b, lr), bias_correction(b, beta1, step))
    return add_scaled_ratio(b, param, b.neg(clr), new_avg, new_inf), new_avg, new_inf


# --- NAdam ---------------------------------------------------------------------------------------


@register_op("optim.nadam_update", traits=UPDATE, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, momentum_decay=4e-3, decoupled=False)
def nadam_update_shape(
    param: TensorType, grad: TensorType, mu_product: TensorType, exp_avg: TensorType, exp_avg_sq: TensorType,
    lr: TensorType, step: TensorType, **options: float,
) -> tuple[TensorType, TensorType, TensorType, TensorType]:
    """NAdam (``decoupled``: decoupled weight decay): ``(p, g, mu_product, m, v, lr, step) -> (p', mu_product', m', v')``.

    ``mu_product`` is the running product of the momentum schedule, ``mu_1 ... mu_t``; PyTorch keeps it as one
    scalar per parameter, here every element of a parameter-shaped state holds it (``check_scalar_state``).
    """
    check_scalar_state("optim.nadam_update", param, mu_product)
    return update_types("optim.nadam_update", param, grad, (exp_avg, exp_avg_sq), lr, step)[:1] + (mu_product, param, param)


def momentum_schedule(b: "Builder", beta1: "float | Value", momentum_decay: float, step: "Value") -> "Value":
    # mu_t = beta1 (1 - 0.5 * 0.96^(t psi)), in f64 from the f64 step t
    warmup = b.pow(f64(b, 0.96), b.mul(step, f64(b, momentum_decay)))
    return b.mul(host(b, beta1), b.sub(f64(b, 1.0), b.mul(f64(b, 0.5), warmup)))


@register_update("optim.nadam_update")
def nadam_update_decomposition(
    b: "Builder", store: Store, param: "Value", grad: "Value", mu_product: "Value", exp_avg: "Value", exp_avg_sq: "Value",
    lr: "Value", step: "Value", *, beta1: "float | Value", beta2: float, eps: float, weight_decay: float, momentum_decay: float, decoupled: bool,
) -> tuple["Value", ...]:
    param, grad = decay_weights(b, store, param, grad, lr, weight_decay, decoupled)
    t = host_scalar(b, step)
    mu = momentum_schedule(b, beta1, momentum_decay, t)
    mu_next = momentum_schedule(b, beta1, momentum_decay, b.add(t, f64(b, 1.0)))
    # prod' = prod mu, in the state's dtype (float32 for a half parameter, as PyTorch's)   (torch: mu_product *= mu)
    new_mu_product = b.mul(mu_product, as_dtype_of(b, mu, mu_product))
    new_avg = lerp(b, store, exp_avg, grad, complement(b, beta1))
    new_avg_sq = decayed_average_of_squares(b, store, exp_avg_sq, grad, beta2)
    # denom = sqrt(v' / (1 - beta2^t)) + eps
    correction2 = as_dtype_of(b, bias_correction(b, beta2, step), param)
    denom = store(b.add(store(b.sqrt(store(b.div(new_avg_sq, correction2)))), rounded_constant(b, store, eps, param)))
    # p' = p + (-lr (1 - mu) / (1 - prod')) g / denom + (-lr mu_next / (1 - prod' mu_next)) m' / denom, factors in f64
    product = b.cast(new_mu_product, dtype=DType.f64)  # one value repeated: the factors are equal across elements
    negative_lr = b.neg(host_scalar(b, lr))
    grad_scale = b.div(b.mul(negative_lr, b.sub(f64(b, 1.0), mu)), b.sub(f64(b, 1.0), product))
    avg_scale = b.div(b.mul(negative_lr, mu_next), b.sub(f64(b, 1.0), b.mul(product, mu_next)))
    new_param = add_scaled_ratio(b, store(add_scaled_ratio(b, param, grad_scale, grad, denom)), avg_scale, new_avg, denom)
    return new_param, new_mu_product, new_avg, new_avg_sq


# --- RAdam ---------------------------------------------------------------------------------------


@register_op("optim.radam_update", traits=UPDATE, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False)
def radam_update_shape(
    param: TensorType, grad: TensorType, exp_avg: TensorType, exp_avg_sq: TensorType, lr: TensorType, step: TensorType, **options: float
) -> tuple[TensorType, TensorType, TensorType]:
    """RAdam (``decoupled``: decoupled weight decay): ``(p, g, m, v, lr, step) -> (p', m', v')``."""
    return update_types("optim.radam_update", param, grad, (exp_avg, exp_avg_sq), lr, step)


def rectification(b: "Builder", beta2: float, step: "Value", correction2: "Value") -> tuple["Value", "Value"]:
    """``(rho_t > 5, r_t)`` in f64: whether the variance is tractable yet, and the rectification factor (1 until then)."""
    rho_inf = 2 / (1 - beta2) - 1
    t = host_scalar(b, step)
    # rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)
    rho = b.sub(f64(b, rho_inf), b.div(b.mul(b.mul(f64(b, 2.0), t), b.pow(f64(b, beta2), t)), correction2))
    tractable = b.greater(rho, f64(b, 5.0))
    # r_t = ((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))^0.5, of 1 while rho_t <= 5 (keeps it real)
    ratio = b.div(b.mul(b.mul(b.sub(rho, f64(b, 4.0)), b.sub(rho, f64(b, 2.0))), f64(b, rho_inf)),
                  b.mul(f64(b, (rho_inf - 4) * (rho_inf - 2)), rho))
    return tractable, b.pow(b.where(tractable, ratio, f64(b, 1.0)), f64(b, 0.5))


@register_update("optim.radam_update")
def radam_update_decomposition(
    b: "Builder", store: Store, param: "Value", grad: "Value", exp_avg: "Value", exp_avg_sq: "Value", lr: "Value", step: "Value",
    *, beta1: "float | Value", beta2: float, eps: float, weight_decay: float, decoupled: bool,
) -> tuple["Value", "Value", "Value"]:
    param, grad = decay_weights(b, store, param, grad, lr, weight_decay, decoupled)
    new_avg = lerp(b, store, exp_avg, grad, complement(b, beta1))
    new_avg_sq = decayed_average_of_squares(b, store, exp_avg_sq, grad, beta2)
    correction2 = bias_correction(b, beta2, step)
    tractable, rect = rectification(b, beta2, step, correction2)
    # plain = m' / (1 - beta1^t) * lr;  adaptive = (1 / (sqrt(v') + eps)) * sqrt(1 - beta2^t)
    plain = store(b.mul(store(b.div(new_avg, as_dtype_of(b, bias_correction(b, beta1, step), param))), as_dtype_of(b, lr, param)))
    inverse = store(b.div(constant(b, 1.0, param), store(b.add(store(b.sqrt(new_avg_sq)), rounded_constant(b, store, eps, param)))))
    adaptive = store(b.mul(inverse, as_dtype_of(b, b.pow(correction2, f64(b, 0.5)), param)))
    # p' = p - (plain adaptive r_t if rho_t > 5 else plain)
    rectified = store(b.mul(store(b.mul(plain, adaptive)), as_dtype_of(b, rect, param)))
    return b.sub(param, b.where(tractable, rectified, plain)), new_avg, new_avg_sq
