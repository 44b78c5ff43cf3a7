"""NumPy kernels of the ``optim`` dialect: one function per update rule.

Each follows ``torch.optim``'s single-tensor code operation by operation, in
the parameter's dtype; Python floats mix in as that dtype (NumPy 2's weak
scalars), as PyTorch's scalar operands do. Scalar factors PyTorch computes on
the host (bias corrections, Adagrad's decayed lr) are Python floats here too.
"""

from __future__ import annotations

import numpy as np

from kiln.backends.numpy.lowering import NUMPY


def _with_l2(grad, param, weight_decay: float):
    # g + wd p
    return grad + weight_decay * param if weight_decay else grad


def _read(lr, like):
    # a float64 lr as PyTorch's kernel reads its Python float: rounded to the tensor's dtype (add's alpha, addcdiv's value)
    return like.dtype.type(lr)


def _lerp(start, end, weight: float):
    # torch.lerp: start + w (end - start) for w < 0.5, else end - (end - start)(1 - w)
    if weight < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (start.dtype.type(1) - start.dtype.type(weight))


def _decayed_average_of_squares(average, grad, decay: float):
    # a d + (1 - d) g g
    return average * decay + (1 - decay) * grad * grad


@NUMPY.register("optim.sgd_update")
def sgd_update(param, grad, lr, *, weight_decay: float = 0.0):
    return param - _read(lr, param) * _with_l2(grad, param, weight_decay)


@NUMPY.register("optim.sgd_momentum_update")
def sgd_momentum_update(param, grad, buf, lr, step, *, momentum: float, dampening: float, nesterov: bool, weight_decay: float):
    grad = _with_l2(grad, param, weight_decay)
    # buf' = g on the first step, else buf m + (1 - dampening) g
    new_buf = grad if step == 1 else buf * momentum + (1 - dampening) * grad
    direction = grad + momentum * new_buf if nesterov else new_buf
    return param - _read(lr, param) * direction, new_buf


@NUMPY.register("optim.adam_update")
def adam_update(
    param, grad, exp_avg, exp_avg_sq, *rest, beta1: float, beta2: float, eps: float, weight_decay: float, amsgrad: bool, decoupled: bool
):
    *max_sq, lr, step = rest
    if decoupled and weight_decay:
        param = param * (1 - float(lr) * weight_decay)
    else:
        grad = _with_l2(grad, param, weight_decay)
    new_avg = _lerp(exp_avg, grad, 1 - beta1)
    new_avg_sq = _decayed_average_of_squares(exp_avg_sq, grad, beta2)
    step_size = float(lr) / (1 - beta1 ** float(step))
    correction2_sqrt = (1 - beta2 ** float(step)) ** 0.5
    new_max = [np.maximum(max_sq[0], new_avg_sq)] if amsgrad else []
    denom = np.sqrt(new_max[0] if amsgrad else new_avg_sq) / correction2_sqrt + eps
    return (param + -step_size * new_avg / denom, new_avg, new_avg_sq, *new_max)


@NUMPY.register("optim.rmsprop_update")
def rmsprop_update(param, grad, square_avg, *rest, alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool):
    *others, lr = rest
    lr = _read(lr, param)
    grad = _with_l2(grad, param, weight_decay)
    new_square_avg = _decayed_average_of_squares(square_avg, grad, alpha)
    new_states = [new_square_avg]
    variance = new_square_avg
    if centered:
        new_grad_avg = _lerp(others.pop(0), grad, 1 - alpha)
        new_states.append(new_grad_avg)
        variance = new_square_avg + -1.0 * new_grad_avg * new_grad_avg
    avg = np.sqrt(variance) + eps
    if momentum > 0:
        new_buf = others[0] * momentum + grad / avg
        return (param - lr * new_buf, *new_states, new_buf)
    return (param + -lr * grad / avg, *new_states)


@NUMPY.register("optim.adagrad_update")
def adagrad_update(param, grad, state_sum, lr, step, *, lr_decay: float, eps: float, weight_decay: float):
    grad = _with_l2(grad, param, weight_decay)
    clr = float(lr) / (1 + (float(step) - 1) * lr_decay)
    new_sum = state_sum + grad * grad
    return param + -clr * grad / (np.sqrt(new_sum) + eps), new_sum


@NUMPY.register("optim.clip_grad_norm")
def clip_grad_norm(*grads, max_norm: float):
    # coef = min(max_norm / (sqrt(sum_i |g_i|^2) + 1e-6), 1)
    norms = [np.sqrt(np.sum(g * g)) for g in grads]
    total = np.sqrt(sum(norm * norm for norm in norms))
    coefficient = np.minimum(max_norm / (total + 1e-6), 1.0).astype(grads[0].dtype)
    clipped = tuple(g * coefficient for g in grads)
    return clipped[0] if len(clipped) == 1 else clipped


@NUMPY.register("optim.clip_grad_value")
def clip_grad_value(grad, *, clip_value: float):
    return np.clip(grad, -clip_value, clip_value)


@NUMPY.register("optim.unscale_grad")
def unscale_grad(grad, scale):
    return grad * (1 / scale)
