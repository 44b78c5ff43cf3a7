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
decayed lr, RAdam's rectification, NAdam's momentum schedule) are computed here
in f64 from the ``step`` operand and cast to the parameter's dtype; a choice
PyTorch makes with a Python ``if`` on such a scalar is a ``tensor.where``, so one
compiled step serves every step number.

A half (float16, bfloat16) parameter's update follows PyTorch 2.13's CPU
kernels bit for bit: its state is half (``zeros_like(p)``; per-parameter
scalars float32, ``scalar_state_dtype``), each of PyTorch's ops computes in
float32 from half operands and rounds its result to half once (``in_opmath``;
``addcmul``, ``addcdiv`` and ``lerp`` are one op each, the first and last with
a fused multiply-add: ``multiply_add``), ``lr`` is a float64 operand like
PyTorch's Python float (``hyper_dtype``), and Python scalars are read in
float32 except where PyTorch rounds them to half (``add``'s alpha and added
scalar: ``rounded_constant``). A backend's ``widen-half`` writes these ops out
before it widens half ops one by one (``compiler/passes/widen_half.py``), so the
step's IR keeps one ``optim.*`` op per update (``pipeline-split`` looks for them).

An attribute that changes every step (a momentum a scheduler cycles, fed as a
0-d f64 graph input) cannot be an attribute: such an update is written out as
its decomposition with that value in place of the attribute (``emit_decomposed``).
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any, Callable

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ops.registry import lookup, register_decomposition, register_op

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Value

UPDATE = {"composite", "non_differentiable"}


def check_like(op: str, param: TensorType, *others: TensorType) -> None:
    """Every per-parameter operand (grad, state) has the parameter's type."""
    for other in others:
        if other != param:
            raise ShapeError(f"{op}: expected {param} like the parameter, got {other}")


def hyper_dtype(dtype: DType) -> DType:
    """The dtype of an update's scalar operands (``lr``, the loss scale) for a parameter of ``dtype``: float64 for a
    half parameter, else its own. PyTorch's hyper-parameters are Python floats (doubles): its scalar arithmetic
    (``lr / (1 - beta1^t)``) is in float64 and its half kernels read the result in float32 (their "opmath" type),
    never rounded to half first (an lr of 1e-4 in float16 would be 1.0002e-4). A float32 lr would be close, not
    PyTorch's: NAdam's ``-lr (1 - mu) / (1 - mu_product)`` from ``float32(0.01)`` is one float32 ulp off at step 2."""
    return DType.f64 if dtype.is_half else dtype


def scalar_state_dtype(dtype: DType) -> DType:
    """The dtype of a state that is one number per parameter in PyTorch (NAdam's ``mu_product``, ASGD's ``eta`` and
    ``mu``): float32 for a half parameter (PyTorch's 0-d float32 tensor), else the parameter's."""
    return DType.f32 if dtype.is_half else dtype


def check_scalar(op: str, param: TensorType, *scalars: TensorType) -> None:
    for scalar in scalars:
        if scalar.shape != () or scalar.dtype != hyper_dtype(param.dtype):
            raise ShapeError(f"{op}: hyper-parameter operands are 0-d {hyper_dtype(param.dtype)} scalars, got {scalar}")


def check_scalar_state(op: str, param: TensorType, *states: TensorType) -> None:
    """A state that is one number per parameter in PyTorch (a 0-d float32 tensor for a half parameter): shaped like the
    parameter here, every element that number, in ``scalar_state_dtype`` (float32 for a half parameter)."""
    kept = TensorType(param.shape, scalar_state_dtype(param.dtype))
    for state in states:
        if state != kept:
            raise ShapeError(f"{op}: expected a per-parameter scalar state of type {kept} for a parameter {param}, got {state}")


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


def constant(b: "Builder", value: "float | Value", like: "Value") -> "Value":
    """``value`` in ``like``'s dtype: a Python scalar operand, which PyTorch reads in the dtype an op computes in (the
    opmath dtype, float32, for a half tensor: an update's values are widened before ``value`` meets them). A 0-d f64
    ``Value`` (a hyper-parameter fed each step, such as a cycled momentum) is that Python float, rounded the same way."""
    if isinstance(value, (int, float)):
        return b.scalar_like(value, like)
    return as_dtype_of(b, value, like)


def host(b: "Builder", value: "float | Value") -> "Value":
    """A hyper-parameter as a 0-d f64 value, where PyTorch computes with its Python float: a constant, or a fed input."""
    return f64(b, value) if isinstance(value, (int, float)) else host_scalar(b, value)


def complement(b: "Builder", beta: "float | Value") -> "float | Value":
    # 1 - beta, in f64 as Python computes it (a float stays a float, so a fixed beta still folds into an attribute)
    return 1 - beta if isinstance(beta, (int, float)) else b.sub(f64(b, 1.0), host_scalar(b, beta))


Store = Callable[["Value"], "Value"]
"""Marks the result of one of PyTorch's ops, which PyTorch writes in the parameter's dtype: the value rounded to it (a
half dtype) and read back, or kept as it is (``keep``, for a parameter of float32 or float64)."""


def keep(value: "Value") -> "Value":
    return value


def rounded_constant(b: "Builder", store: Store, value: "float | Value", like: "Value") -> "Value":
    """A Python scalar that PyTorch rounds to a half tensor's dtype before using it: ``add``'s ``alpha`` and the scalar
    it adds (``denom.add_(eps)``), unlike the scalars of ``mul``, ``div``, ``addcmul``, ``addcdiv`` and ``lerp``, read
    in float32."""
    return store(constant(b, value, like))


UPDATE_RULES: dict[str, Callable[..., Any]] = {}
"""Each update op's rule as written (``rule(b, store, *operands, **attrs)``), by op name."""


def register_update(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``register_decomposition`` for a rule ``rule(b, store, *operands, **attrs)`` written in the dtype an update
    computes in, each of PyTorch's ops' results passed through ``store`` (``in_opmath``)."""

    def decorate(rule: Callable[..., Any]) -> Callable[..., Any]:
        UPDATE_RULES[name] = rule
        register_decomposition(name)(functools.wraps(rule)(lambda b, *operands, **attrs: in_opmath(b, name, rule, operands, attrs)))
        return rule

    return decorate


def emit_decomposed(b: "Builder", name: str, *operands: "Value", **attrs: Any) -> Any:
    """Op ``name``'s update written out as its decomposition (PyTorch's op sequence) instead of one ``optim.*`` op:
    for an attribute that is a 0-d f64 ``Value`` fed each step (a momentum a scheduler cycles), which an op's attribute
    cannot be. The rules take such a value wherever they take the hyper-parameter (``constant``, ``lerp``,
    ``bias_correction``), so the arithmetic, half rounding included, is the op's."""
    return in_opmath(b, name, UPDATE_RULES[name], operands, attrs)


def in_opmath(b: "Builder", name: str, rule: Callable[..., Any], operands: "tuple[Value, ...]", attrs: dict[str, Any]) -> Any:
    """Run ``rule`` (of op ``name``) as PyTorch's CPU kernels run an update of a half parameter: each op computes in
    float32 from its half operands and rounds its result to half once (``store``), with the hyper-parameters in
    float32, never rounded. The results are rounded to the op's result dtypes (half, or float32 for a per-parameter
    scalar state); for a float32 or float64 parameter the rule runs as written."""
    dtype = operands[0].type.dtype
    if not dtype.is_half:
        return rule(b, keep, *operands, **attrs)

    def store(value: "Value") -> "Value":
        return b.cast(b.cast(value, dtype=dtype), dtype=value.type.dtype)

    results = rule(b, store, *[b.cast(v, dtype=DType.f32) if v.type.dtype.is_half else v for v in operands], **attrs)
    kept = lookup(name).shape_rule(*[v.type for v in operands], **attrs)
    if isinstance(results, tuple):
        return tuple(as_dtype_of_type(b, r, t) for r, t in zip(results, kept))
    return as_dtype_of_type(b, results, kept)


def as_dtype_of_type(b: "Builder", value: "Value", kept: TensorType) -> "Value":
    return value if value.type.dtype is kept.dtype else b.cast(value, dtype=kept.dtype)


def with_l2(b: "Builder", store: Store, grad: "Value", param: "Value", weight_decay: float) -> "Value":
    # g + wd p   (torch: grad.add(param, alpha=weight_decay))
    return store(b.add(grad, b.mul(rounded_constant(b, store, weight_decay, param), param))) if weight_decay else grad


def multiply_add(b: "Builder", store: Store, x: "Value", y: "Value", z: "Value") -> "Value":
    """``x y + z``: in a half update rounded once, as PyTorch's vectorized ``addcmul`` and ``lerp`` fuse it (``fmadd``),
    emulated in float64 (where the product of two float32 is exact); in a float32 or float64 update two ops."""
    if store is keep:
        return b.add(b.mul(x, y), z)
    wide = [b.cast(v, dtype=DType.f64) for v in (x, y, z)]
    return b.cast(b.add(b.mul(wide[0], wide[1]), wide[2]), dtype=z.type.dtype)


def lerp(b: "Builder", store: Store, start: "Value", end: "Value", weight: "float | Value") -> "Value":
    # torch.lerp: start + w (end - start) for w < 0.5, else end + (w - 1)(end - start), w - 1 in the compute dtype
    if not isinstance(weight, (int, float)):
        return lerp_by(b, store, start, end, weight)  # fed each step: both formulas, one selected on the weight
    dtype = start.type.dtype.numpy
    if weight < 0.5:
        return store(multiply_add(b, store, constant(b, weight, start), b.sub(end, start), start))
    minus_one = float(dtype.type(weight) - dtype.type(1))
    return store(multiply_add(b, store, constant(b, minus_one, start), b.sub(end, start), end))


def decayed_average_of_squares(b: "Builder", store: Store, average: "Value", grad: "Value", decay: float) -> "Value":
    # a d + (1 - d) g g   (torch: avg.mul_(d).addcmul_(g, g, value=1 - d): two ops, two roundings)
    decayed = store(b.mul(average, constant(b, decay, average)))
    return store(multiply_add(b, store, b.mul(constant(b, 1 - decay, grad), grad), grad, decayed))


def host_scalar(b: "Builder", value: "Value") -> "Value":
    """A scalar operand in f64, where PyTorch does its scalar arithmetic (Python floats)."""
    return value if value.type.dtype is DType.f64 else b.cast(value, dtype=DType.f64)


def scaled(b: "Builder", x: "Value", scalar: "Value") -> "Value":
    """``x * scalar`` for a float64 hyper-parameter of a half ``x`` (``hyper_dtype``), as PyTorch multiplies a half
    tensor by a Python float: in float32, the scalar read as float32, the product rounded to ``x``'s dtype once."""
    if x.type.dtype is scalar.type.dtype:
        return b.mul(x, scalar)
    wide = b.cast(x, dtype=DType.f32)
    return b.cast(b.mul(wide, as_dtype_of(b, scalar, wide)), dtype=x.type.dtype)


def f64(b: "Builder", value: float) -> "Value":
    return b.constant(value, DType.f64)


def bias_correction(b: "Builder", beta: "float | Value", step: "Value") -> "Value":
    # 1 - beta^t, in f64 (a fed beta: this step's, as PyTorch's 1 - beta1 ** step reads the group's current beta1)
    return b.sub(f64(b, 1.0), b.pow(host(b, beta), host_scalar(b, step)))


def as_dtype_of(b: "Builder", scalar: "Value", like: "Value") -> "Value":
    return scalar if scalar.type.dtype is like.type.dtype else b.cast(scalar, dtype=like.type.dtype)


def add_scaled_ratio(b: "Builder", param: "Value", scale: "Value", numerator: "Value", denominator: "Value") -> "Value":
    # p + (s n) / d with the f64 scale s rounded to p's dtype   (torch: param.addcdiv_(n, d, value=s))
    return b.add(param, b.div(b.mul(as_dtype_of(b, scale, param), numerator), denominator))


def decay_weights(
    b: "Builder", store: Store, param: "Value", grad: "Value", lr: "Value", weight_decay: float, decoupled: bool
) -> tuple["Value", "Value"]:
    """``(param, grad)`` after weight decay: decoupled ``p (1 - lr wd)`` (AdamW's), else L2 ``g + wd p``."""
    if not (decoupled and weight_decay):
        return param, with_l2(b, store, grad, param, weight_decay)
    # p (1 - lr wd), the factor in f64   (torch: param.mul_(1 - lr * weight_decay))
    factor = b.sub(f64(b, 1.0), b.mul(host_scalar(b, lr), f64(b, weight_decay)))
    return store(b.mul(param, as_dtype_of(b, factor, param))), grad


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


@register_update("optim.rmsprop_update")
def rmsprop_update_decomposition(
    b: "Builder", store: Store, param: "Value", grad: "Value", *rest: "Value",
    alpha: float, eps: float, weight_decay: float, momentum: float, centered: bool,
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
    if momentum > 0:
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


# --- Adafactor -----------------------------------------------------------------------------------


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
    check_scalar("optim.adafactor_update", param, lr)
    check_step("optim.adafactor_update", step)
    return (param, *states)


def lerp_by(b: "Builder", store: Store, start: "Value", end: "Value", weight: "Value") -> "Value":
    """``torch.lerp`` with a weight computed in f64 (0-d), read in ``start``'s dtype as PyTorch reads a scalar weight;
    its two formulas selected on the weight."""
    w = as_dtype_of(b, weight, start)
    low = multiply_add(b, store, w, b.sub(end, start), start)
    high = multiply_add(b, store, b.sub(w, constant(b, 1.0, start)), b.sub(end, start), end)
    return store(b.where(b.less(b.abs(w), constant(b, 0.5, start)), low, high))


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


# --- gradient transforms -------------------------------------------------------------------------


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
