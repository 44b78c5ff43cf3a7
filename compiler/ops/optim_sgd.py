"""The SGD family of optim ops: plain SGD, SGD with a momentum buffer (Nesterov's too) and averaged SGD (ASGD), each
``torch.optim``'s single-tensor update op by op."""

from __future__ import annotations

from typing import TYPE_CHECKING

from kiln.compiler.ir.types import TensorType
from kiln.compiler.ops.optim_opmath import Store, as_dtype_of, constant, f64, host_scalar, register_update, rounded_constant, with_l2
from kiln.compiler.ops.optim_types import UPDATE, check_scalar_state, update_types
from kiln.compiler.ops.registry import register_op

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Value


# --- SGD -----------------------------------------------------------------------------------------


@register_op("optim.sgd_update", traits=UPDATE, weight_decay=0.0)
def sgd_update_shape(param: TensorType, grad: TensorType, lr: TensorType, *, weight_decay: float) -> TensorType:
    """Plain SGD: ``p - lr * (g + weight_decay * p)``."""
    return update_types("optim.sgd_update", param, grad, (), lr)[0]


@register_update("optim.sgd_update")
def sgd_update_decomposition(b: "Builder", store: Store, param: "Value", grad: "Value", lr: "Value", *, weight_decay: float) -> "Value":
    # p' = p - lr * g   (torch: param.add_(grad, alpha=-lr))
    return b.sub(param, b.mul(store(as_dtype_of(b, lr, param)), with_l2(b, store, grad, param, weight_decay)))


@register_op("optim.sgd_momentum_update", traits=UPDATE, momentum=0.9, dampening=0.0, nesterov=False, weight_decay=0.0)
def sgd_momentum_update_shape(
    param: TensorType, grad: TensorType, buf: TensorType, lr: TensorType, step: TensorType, **options: float
) -> tuple[TensorType, TensorType]:
    """SGD with a momentum buffer: ``(p, g, buf, lr, step) -> (p', buf')``."""
    return update_types("optim.sgd_momentum_update", param, grad, (buf,), lr, step)


@register_update("optim.sgd_momentum_update")
def sgd_momentum_update_decomposition(
    b: "Builder", store: Store, param: "Value", grad: "Value", buf: "Value", lr: "Value", step: "Value",
    *, momentum: "float | Value", dampening: float, nesterov: bool, weight_decay: float,
) -> tuple["Value", "Value"]:
    grad = with_l2(b, store, grad, param, weight_decay)
    # buf' = g on the first step (torch clones the gradient), else buf m + (1 - dampening) g
    running = store(b.add(store(b.mul(buf, constant(b, momentum, buf))), b.mul(rounded_constant(b, store, 1 - dampening, grad), grad)))
    new_buf = b.where(b.equal(step, b.constant(1, step.type.dtype)), grad, running)
    # d = g + m buf' (nesterov) or buf';  p' = p - lr d
    direction = store(b.add(grad, b.mul(rounded_constant(b, store, momentum, new_buf), new_buf))) if nesterov else new_buf
    return b.sub(param, b.mul(store(as_dtype_of(b, lr, param)), direction)), new_buf


# --- ASGD ----------------------------------------------------------------------------------------


@register_op("optim.asgd_update", traits=UPDATE, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0)
def asgd_update_shape(
    param: TensorType, grad: TensorType, eta: TensorType, mu: TensorType, ax: TensorType, lr: TensorType, step: TensorType, **options: float
) -> tuple[TensorType, TensorType, TensorType, TensorType]:
    """Averaged SGD: ``(p, g, eta, mu, ax, lr, step) -> (p', eta', mu', ax')``.

    ``eta`` (this update's step) and ``mu`` (the averaging weight) are one scalar per parameter in PyTorch; here every
    element of a parameter-shaped state holds it, as NAdam's ``mu_product`` (``check_scalar_state``).
    """
    check_scalar_state("optim.asgd_update", param, eta, mu)
    return update_types("optim.asgd_update", param, grad, (ax,), lr, step)[:1] + (eta, mu, param)


def filled_like(b: "Builder", scalar: "Value", like: "Value") -> "Value":
    """A 0-d f64 host scalar rounded to ``like``'s dtype and broadcast to its shape (a scalar kept per element)."""
    return b.broadcast_to(as_dtype_of(b, scalar, like), shape=like.type.shape)


@register_update("optim.asgd_update")
def asgd_update_decomposition(
    b: "Builder", store: Store, param: "Value", grad: "Value", eta: "Value", mu: "Value", ax: "Value", lr: "Value", step: "Value",
    *, lambd: float, alpha: float, t0: float, weight_decay: float,
) -> tuple["Value", "Value", "Value", "Value"]:
    grad = with_l2(b, store, grad, param, weight_decay)
    # p' = p (1 - lambd eta) + (-eta) g, the factor in f64   (torch: param.mul_(1 - lambd * eta); param.add_(grad, alpha=-eta))
    decay = b.sub(f64(b, 1.0), b.mul(f64(b, lambd), host_scalar(b, eta)))
    new_param = store(b.add(store(b.mul(param, as_dtype_of(b, decay, param))), b.mul(store(as_dtype_of(b, b.neg(eta), param)), grad)))
    # ax' = p' while mu is 1 (before t0), else ax + (p' - ax) mu
    averaged = store(b.add(ax, store(b.mul(store(b.sub(new_param, ax)), as_dtype_of(b, mu, ax)))))
    new_ax = b.where(b.equal(mu, constant(b, 1.0, mu)), new_param, averaged)
    # eta' = lr / (1 + lambd lr t)^alpha;  mu' = 1 / max(1, t - t0), in f64
    t = host_scalar(b, step)
    rate = host_scalar(b, lr)
    new_eta = b.div(rate, b.pow(b.add(f64(b, 1.0), b.mul(b.mul(f64(b, lambd), rate), t)), f64(b, alpha)))
    new_mu = b.div(f64(b, 1.0), b.maximum(f64(b, 1.0), b.sub(t, f64(b, t0))))
    return new_param, filled_like(b, new_eta, eta), filled_like(b, new_mu, mu), new_ax
