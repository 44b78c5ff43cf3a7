"""The pieces the optim ops' decompositions are built from, in PyTorch's arithmetic: Python-scalar constants read in
the dtype an op computes in (``constant``), host scalars in float64 (``host_scalar``, ``bias_correction``), the fused
``addcmul``/``lerp`` (``multiply_add``, ``lerp``), weight decay (``decay_weights``), and ``in_opmath``, which runs a
half parameter's update as PyTorch's CPU kernels do (float32 compute, one rounding to half per op: ``Store``).
``register_update`` registers an update rule as its op's decomposition; ``emit_decomposed`` writes one out in place of
the op (for a hyper-parameter fed each step)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable

from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ops.registry import lookup, register_decomposition

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Value


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
    emulated in float64 (where the product of two float32 is exact); in a float32 or float64 update two ops. PyTorch's
    float32 and float64 kernels fuse it too (and ``add_``'s ``alpha``), so Adam's ``exp_avg`` is a float32 ulp off
    torch's in about one element in five from the second step; the float64 emulation made W3's step a third slower
    and its memory plan 2.6 times larger (``tests/optim/test_float32_updates_vs_torch.py``)."""
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


def lerp_by(b: "Builder", store: Store, start: "Value", end: "Value", weight: "Value") -> "Value":
    """``torch.lerp`` with a weight computed in f64 (0-d), read in ``start``'s dtype as PyTorch reads a scalar weight;
    its two formulas selected on the weight."""
    w = as_dtype_of(b, weight, start)
    low = multiply_add(b, store, w, b.sub(end, start), start)
    high = multiply_add(b, store, b.sub(w, constant(b, 1.0, start)), b.sub(end, start), end)
    return store(b.where(b.less(b.abs(w), constant(b, 0.5, start)), low, high))


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
