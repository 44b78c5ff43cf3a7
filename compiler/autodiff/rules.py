"""The VJP table: one short rule per op, written in the IR's own ops.

```python
@vjp_rule("tensor.mul")
def mul_vjp(b: Builder, op: Op, g: Value) -> tuple[Value | None, ...]:
    x, y = op.operands
    return b.mul(g, y), b.mul(g, x)
```

A rule gets the cotangent of the op's result (a tuple of cotangents, with
``None`` for unused results, for multi-result ops) and returns one cotangent
per operand, ``None`` where there is none. Rules may return a cotangent in the
result's broadcast shape: the autodiff pass un-broadcasts it. Rules use only
differentiable ops, so the backward graph can itself be differentiated.
"""

from __future__ import annotations

from typing import Callable

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value
from kiln.compiler.ir.types import normalize_axes
from kiln.compiler.ops.tensor import matmul_shape

Cotangents = tuple["Value | None", ...]
VjpRule = Callable[[Builder, Op, "Value | tuple[Value | None, ...]"], Cotangents]

VJP_RULES: dict[str, VjpRule] = {}


def vjp_rule(*op_names: str) -> Callable[[VjpRule], VjpRule]:
    def decorate(rule: VjpRule) -> VjpRule:
        for name in op_names:
            VJP_RULES[name] = rule
        return rule

    return decorate


def _one(b: Builder, like: Value) -> Value:
    return b.scalar_like(1.0, like)


@vjp_rule("tensor.neg")
def neg_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    return (b.neg(g),)


@vjp_rule("tensor.exp")
def exp_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d exp(x) = exp(x)
    return (b.mul(g, op.result),)


@vjp_rule("tensor.log")
def log_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d log(x) = 1/x
    return (b.div(g, op.operands[0]),)


@vjp_rule("tensor.tanh")
def tanh_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d tanh(x) = 1 - tanh(x)^2
    y = op.result
    return (b.mul(g, b.sub(_one(b, y), b.mul(y, y))),)


@vjp_rule("tensor.sigmoid")
def sigmoid_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d sigmoid(x) = s (1 - s)
    y = op.result
    return (b.mul(g, b.mul(y, b.sub(_one(b, y), y))),)


@vjp_rule("tensor.relu")
def relu_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d relu(x) = [x > 0]
    x = op.operands[0]
    zero = b.scalar_like(0.0, x)
    return (b.where(b.greater(x, zero), g, b.scalar_like(0.0, g)),)


@vjp_rule("tensor.sqrt")
def sqrt_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d sqrt(x) = 1 / (2 sqrt(x))
    return (b.div(b.mul(g, b.scalar_like(0.5, g)), op.result),)


@vjp_rule("tensor.add")
def add_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    return g, g


@vjp_rule("tensor.sub")
def sub_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    return g, b.neg(g)


@vjp_rule("tensor.mul")
def mul_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    x, y = op.operands
    return b.mul(g, y), b.mul(g, x)


@vjp_rule("tensor.div")
def div_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d(x/y) = dx/y - (x/y) dy/y
    _, y = op.operands
    g_over_y = b.div(g, y)
    return g_over_y, b.neg(b.mul(g_over_y, op.result))


@vjp_rule("tensor.pow")
def pow_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d x^y = y x^(y-1) dx + x^y log(x) dy, each 0 where PyTorch's is (pow_backward_self/_exponent): dx where y == 0
    # (x^0 is constant; the formula reads 0 * 0^-1 = NaN at x = 0), dy where x == 0 and y >= 0 (0^y log 0 = 0 * -inf;
    # PyTorch's polynomial features x ** arange(n) rely on both). Written as PyTorch's, a where around the formula, so
    # that higher derivatives match its too (NaN included); a constant operand without zeros needs no mask.
    x, y = op.operands
    zero = b.scalar_like(0.0, g)
    dx = b.mul(g, b.mul(y, b.pow(x, b.sub(y, _one(b, y)))))
    if _may_hold_zero(y):
        dx = b.where(b.equal(y, b.scalar_like(0.0, y)), zero, dx)
    dy = b.mul(op.result, b.log(x))
    if _may_hold_zero(x):
        x_zero = b.equal(x, b.scalar_like(0.0, x))
        dy = b.where(b.where(x_zero, b.greater_equal(y, b.scalar_like(0.0, y)), x_zero), zero, dy)
    return dx, b.mul(g, dy)


def _may_hold_zero(value: Value) -> bool:
    """False only for a constant none of whose elements is 0 (the exponent of ``x ** 2``): its mask would keep all."""
    producer = value.producer
    return producer is None or producer.name != "tensor.constant" or bool((producer.attrs["value"] == 0).any())


def _select_vjp(strict: str):
    """max/min: the cotangent goes to the winner; ties split it evenly, as PyTorch does."""

    def rule(b: Builder, op: Op, g: Value) -> Cotangents:
        x, y = op.operands
        zero, half = b.scalar_like(0.0, g), b.scalar_like(0.5, g)
        tie_share = b.where(b.equal(x, y), b.mul(g, half), g)
        x_wins = b.op(strict, x, y)
        y_wins = b.op(strict, y, x)
        return b.where(y_wins, zero, tie_share), b.where(x_wins, zero, tie_share)

    return rule


vjp_rule("tensor.maximum")(_select_vjp("tensor.greater"))
vjp_rule("tensor.minimum")(_select_vjp("tensor.less"))


@vjp_rule("tensor.where")
def where_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    condition = op.operands[0]
    zero = b.scalar_like(0.0, g)
    return None, b.where(condition, g, zero), b.where(condition, zero, g)


@vjp_rule("tensor.cast")
def cast_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    x = op.operands[0]
    return (b.cast(g, dtype=x.type.dtype) if x.type.dtype.is_float else None,)


@vjp_rule("tensor.matmul")
def matmul_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # C = A B:  dA = dC B^T,  dB = A^T dC   (1-D operands promoted to matrices; the pass sums batch dims)
    a, w = op.operands
    a2 = a if a.type.rank > 1 else b.reshape(a, shape=(1,) + a.type.shape)
    w2 = w if w.type.rank > 1 else b.reshape(w, shape=w.type.shape + (1,))
    g2 = b.reshape(g, shape=matmul_shape(a2.type, w2.type).shape)
    da = b.matmul(g2, _swap_last(b, w2))
    dw = b.matmul(_swap_last(b, a2), g2)
    if w.type.rank == 1:
        dw = b.reshape(dw, shape=dw.type.shape[:-1])
    return da, dw


def _swap_last(b: Builder, x: Value) -> Value:
    perm = tuple(range(x.type.rank - 2)) + (x.type.rank - 1, x.type.rank - 2)
    return b.transpose(x, perm=perm)


def _expand_reduced(b: Builder, g: Value, op: Op) -> Value:
    """Reshape a reduction's cotangent to keepdims form and broadcast it to the operand's shape."""
    x = op.operands[0]
    axes = normalize_axes(op.attrs["axes"], x.type.rank)
    kept = tuple(1 if i in axes else d for i, d in enumerate(x.type.shape))
    if not op.attrs["keepdims"]:
        g = b.reshape(g, shape=kept)
    return b.broadcast_to(g, shape=x.type.shape)


@vjp_rule("tensor.reduce_sum")
def reduce_sum_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    return (_expand_reduced(b, g, op),)


@vjp_rule("tensor.reduce_mean")
def reduce_mean_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # d mean = 1/count
    x = op.operands[0]
    count = b.numel(x, axes=op.attrs["axes"], dtype=x.type.dtype)
    return (b.div(_expand_reduced(b, g, op), count),)


@vjp_rule("tensor.reduce_max")
def reduce_max_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # the cotangent is shared evenly by the positions that attain the max
    x = op.operands[0]
    axes = op.attrs["axes"]
    peak = _expand_reduced(b, op.result, op)
    mask = b.cast(b.equal(x, peak), dtype=x.type.dtype)
    count = b.reduce_sum(mask, axes=axes, keepdims=True)
    return (b.div(b.mul(_expand_reduced(b, g, op), mask), count),)


@vjp_rule("tensor.reshape")
def reshape_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    return (b.reshape(g, shape=op.operands[0].type.shape),)


@vjp_rule("tensor.transpose")
def transpose_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    rank = op.operands[0].type.rank
    perm = op.attrs["perm"] or tuple(reversed(range(rank)))
    inverse = tuple(sorted(range(rank), key=lambda axis: perm[axis]))
    return (b.transpose(g, perm=inverse),)


@vjp_rule("tensor.broadcast_to")
def broadcast_to_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    return (g,)  # the pass sums the broadcast axes away


@vjp_rule("nn.softmax")
def softmax_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # dx = y * (g - sum(g * y)): one op, a row kernel where the backend has one
    return (b.op("nn.softmax_grad", op.result, g, axis=op.attrs["axis"]),)


@vjp_rule("nn.log_softmax")
def log_softmax_vjp(b: Builder, op: Op, g: Value) -> Cotangents:
    # dx = g - softmax(x) * sum(g)
    x, axis = op.operands[0], op.attrs["axis"]
    total = b.reduce_sum(g, axes=(axis,), keepdims=True)
    return (b.sub(g, b.mul(b.softmax(x, axis=axis), total)),)
