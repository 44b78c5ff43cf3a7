"""canonicalize: local algebraic rewrites to a fixed point, then dead ops go.

```
%one = "tensor.constant"() {value = dense<1.0>} : () -> tensor<f32>
%a = "tensor.mul"(%x, %one) ...                            // x * 1
%t = "tensor.transpose"(%a) {perm = [1, 0]} ...
%u = "tensor.transpose"(%t) {perm = [1, 0]} ...            // transpose of transpose
%r = "tensor.reshape"(%u) {shape = [2, 3]} : (tensor<2x3xf32>) -> tensor<2x3xf32>
return %r                                      ->          return %x
```

Each rule takes the op and a builder placed before it and returns the value
that replaces the op's result, or ``None`` when it does not apply. A rule
never changes a result type, so rewrites are local and always well typed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import TensorType, normalize_axes
from kiln.compiler.ops.registry import has_trait, infer_types
from kiln.compiler.passes.dce import DCE
from kiln.compiler.passes.manager import Pass, register_pass
from kiln.compiler.passes.rewrite import replace_uses

Rewrite = Callable[[Builder, Op], "Value | None"]


def splat_value(value: Value) -> float | None:
    """The repeated element of a constant whose elements are all equal, else ``None``."""
    producer = value.producer
    if producer is None or producer.name != "tensor.constant":
        return None
    array = producer.attrs["value"]
    if array.size == 0 or not (array == array.flat[0]).all():
        return None
    return array.flat[0].item()


def _same_type(op: Op, value: Value) -> Value | None:
    """``value`` if it can stand for ``op``'s result (same type), else ``None``."""
    return value if value.type == op.result.type else None


def drop_identity(element: float, positions: tuple[int, ...]) -> Rewrite:
    """``x (op) e -> x`` where the operand at one of ``positions`` is a splat of ``element``."""

    def rewrite(b: Builder, op: Op) -> Value | None:
        for position in positions:
            if splat_value(op.operands[position]) == element:
                kept = op.operands[1 - position]
                if _same_type(op, kept) is not None:
                    return kept
        return None

    return rewrite


def double_negation(b: Builder, op: Op) -> Value | None:
    inner = op.operands[0].producer
    return inner.operands[0] if inner is not None and inner.name == "tensor.neg" else None


def _perm(op: Op) -> tuple[int, ...]:
    rank = op.operands[0].type.rank
    return tuple(reversed(range(rank))) if op.attrs["perm"] is None else tuple(op.attrs["perm"])


def identity_transpose(b: Builder, op: Op) -> Value | None:
    return op.operands[0] if _perm(op) == tuple(range(op.operands[0].type.rank)) else None


def transpose_of_transpose(b: Builder, op: Op) -> Value | None:
    inner = op.operands[0].producer
    if inner is None or inner.name != "tensor.transpose":
        return None
    outer, first = _perm(op), _perm(inner)
    composed = tuple(first[axis] for axis in outer)
    source = inner.operands[0]
    return source if composed == tuple(range(source.type.rank)) else b.transpose(source, perm=composed)


def transpose_of_matmul(b: Builder, op: Op) -> Value | None:
    """Only when an operand is itself a transpose, so the rewrite cancels one and moves no data."""
    inner = op.operands[0].producer
    if inner is None or inner.name != "tensor.matmul" or _perm(op) != (1, 0):
        return None
    left, right = inner.operands
    if left.type.rank != 2 or right.type.rank != 2 or len(op.operands[0].uses) != 1:
        return None
    if not any(v.producer is not None and v.producer.name == "tensor.transpose" for v in (left, right)):
        return None
    return b.matmul(b.transpose(right, perm=(1, 0)), b.transpose(left, perm=(1, 0)))


def _produced_by(value: Value, name: str, single_use: bool = True) -> Op | None:
    producer = value.producer
    if producer is None or producer.name != name or (single_use and len(value.uses) != 1):
        return None
    return producer


def transpose_of_summed_matmul(b: Builder, op: Op) -> Value | None:
    """``(sum_n A_n @ B_n)^T -> sum_n B_n^T @ A_n^T`` when ``A`` or ``B`` is a transpose (it cancels): the weight
    gradient of a Linear on ``(N, T, d)`` comes out in the weight's layout, not as a strided view that every
    optimizer statement then reads 16x slower."""
    summed = _produced_by(op.operands[0], "tensor.reduce_sum")
    if _perm(op) != (1, 0) or summed is None or summed.attrs["keepdims"] or summed.operands[0].type.rank != 3:
        return None
    product = _produced_by(summed.operands[0], "tensor.matmul")
    if product is None or normalize_axes(summed.attrs["axes"], 3) != (0,) or product.operands[1].type.rank != 3:
        return None
    left, right = product.operands
    if not any(_produced_by(v, "tensor.transpose", single_use=False) for v in (left, right)):
        return None
    swap = (0, 2, 1)
    return b.reduce_sum(b.matmul(b.transpose(right, perm=swap), b.transpose(left, perm=swap)), axes=(0,), keepdims=False)


def same_shape(b: Builder, op: Op) -> Value | None:
    return _same_type(op, op.operands[0])


def reshape_of_reshape(b: Builder, op: Op) -> Value | None:
    inner = op.operands[0].producer
    if inner is None or inner.name != "tensor.reshape":
        return None
    return b.reshape(inner.operands[0], shape=op.result.type.shape)


def same_dtype_cast(b: Builder, op: Op) -> Value | None:
    return _same_type(op, op.operands[0])


def fold_broadcast_operands(b: Builder, op: Op) -> Value | None:
    """Read an operand's source instead of its ``broadcast_to`` (or a splat's 0-d form) when the result type stays."""
    for index, operand in enumerate(op.operands):
        smaller = _unbroadcast_type(operand)
        if smaller is None:
            continue
        types = [v.type for v in op.operands]
        types[index] = smaller
        if infer_types(op.name, types, op.attrs) == (op.result.type,):
            producer = operand.producer
            source = producer.operands[0] if producer.name == "tensor.broadcast_to" else b.constant(splat_value(operand), smaller.dtype)
            op.set_operand(index, source)
            return op.result
    return None


def _unbroadcast_type(operand: Value) -> TensorType | None:
    producer = operand.producer
    if producer is not None and producer.name == "tensor.broadcast_to":
        return producer.operands[0].type
    if operand.type.rank > 0 and splat_value(operand) is not None:
        return TensorType((), operand.type.dtype)
    return None


def _zero_pad_axis(value: Value) -> int | None:
    """The one axis a zero-valued ``tensor.pad`` without interior fill widens, else ``None``."""
    producer = _produced_by(value, "tensor.pad", single_use=False)
    if producer is None or producer.attrs["value"] != 0 or any(producer.attrs["interior"]):
        return None
    widened = [axis for axis, (lo, hi) in enumerate(zip(producer.attrs["low"], producer.attrs["high"])) if lo or hi]
    return widened[0] if len(widened) == 1 else None


def sum_of_adjacent_pads(b: Builder, op: Op) -> Value | None:
    """Two zero pads along one axis whose data ranges meet (the gradient of slices of one tensor: a fused QKV
    weight) are one pad of their concatenation: one copy instead of two zero-filled arrays and an add. Also through
    one inner add, ``(a + pad_q) + pad_p -> a + pad(concat)``, so a sum of such pads in any order folds."""
    left, right = op.operands
    joined = _joined_pads(b, left, right, op.result.type)
    if joined is not None:
        return joined
    for pad, other in ((left, right), (right, left)):
        inner = _produced_by(other, "tensor.add")
        for index in (0, 1) if inner is not None and _zero_pad_axis(pad) is not None else ():
            joined = _joined_pads(b, pad, inner.operands[index], op.result.type)
            if joined is not None:
                return b.add(inner.operands[1 - index], joined)
    return None


def _joined_pads(b: Builder, p: Value, q: Value, result: TensorType) -> Value | None:
    """``pad(concat(a, b))`` for zero pads ``p`` of ``a`` and ``q`` of ``b`` (either order) that meet along their one
    widened axis, both of type ``result``; else ``None``."""
    axis = _zero_pad_axis(p)
    if axis is None or axis != _zero_pad_axis(q) or not p.type == q.type == result:
        return None
    first, second = sorted((p.producer, q.producer), key=lambda pad: pad.attrs["low"][axis])
    if first.attrs["low"][axis] + first.operands[0].type.shape[axis] != second.attrs["low"][axis]:
        return None
    joined = b.concat(first.operands[0], second.operands[0], axis=axis)
    return b.pad(joined, low=first.attrs["low"], high=second.attrs["high"], interior=first.attrs["interior"], value=0.0)


def no_padding(b: Builder, op: Op) -> Value | None:
    return op.operands[0] if not any(op.attrs["low"] + op.attrs["high"] + op.attrs["interior"]) else None


def concat_of_concat(b: Builder, op: Op) -> Value | None:
    """Splice an operand that is a concat along the same axis into this one."""
    axis = op.attrs["axis"] % op.result.type.rank
    parts, spliced = [], False
    for operand in op.operands:
        inner = _produced_by(operand, "tensor.concat", single_use=False)
        if inner is not None and inner.attrs["axis"] % op.result.type.rank == axis:
            parts += inner.operands
            spliced = True
        else:
            parts.append(operand)
    return b.concat(*parts, axis=op.attrs["axis"]) if spliced else None


ELEMENTWISE_RULES: tuple[Rewrite, ...] = (fold_broadcast_operands,)
"""Rules every elementwise op gets, after its own."""

RULES: tuple[tuple[str, Rewrite], ...] = (
    ("tensor.add", drop_identity(0.0, (0, 1))),        # x + 0 -> x,  0 + x -> x
    ("tensor.sub", drop_identity(0.0, (1,))),          # x - 0 -> x
    ("tensor.mul", drop_identity(1.0, (0, 1))),        # x * 1 -> x,  1 * x -> x
    ("tensor.div", drop_identity(1.0, (1,))),          # x / 1 -> x
    ("tensor.pow", drop_identity(1.0, (1,))),          # x ** 1 -> x
    ("tensor.neg", double_negation),                   # -(-x) -> x
    ("tensor.transpose", identity_transpose),          # transpose(x, identity) -> x
    ("tensor.transpose", transpose_of_transpose),      # transpose(transpose(x, p), q) -> transpose(x, p . q)
    ("tensor.transpose", transpose_of_matmul),         # (A @ B^T)^T -> B @ A^T   (one transpose cancels)
    ("tensor.transpose", transpose_of_summed_matmul),  # (sum_n A_n @ B_n^T)^T -> sum_n B_n @ A_n^T
    ("tensor.reshape", same_shape),                    # reshape(x, shape(x)) -> x
    ("tensor.reshape", reshape_of_reshape),            # reshape(reshape(x, s), t) -> reshape(x, t)
    ("tensor.broadcast_to", same_shape),               # broadcast_to(x, shape(x)) -> x
    ("tensor.cast", same_dtype_cast),                  # cast(x: T, T) -> x
    ("tensor.add", sum_of_adjacent_pads),              # pad(a, [l, ...]) + pad(b, [l + |a|, ...]) -> pad(concat(a, b))
    ("tensor.pad", no_padding),                        # pad(x, 0, 0, 0) -> x
    ("tensor.concat", concat_of_concat),               # concat(concat(a, b), c) -> concat(a, b, c)  (same axis)
)
"""Op-specific rules, one a line; ``ELEMENTWISE_RULES`` add: f(broadcast_to(x), y) -> f(x, y), f(splat c, y) -> f(c 0-d, y)."""


def rules_for(name: str) -> list[Rewrite]:
    own = [rule for op_name, rule in RULES if op_name == name]
    return own + list(ELEMENTWISE_RULES) if has_trait(name, "elementwise") else own


@register_pass
@dataclass(frozen=True)
class Canonicalize(Pass):
    name = "canonicalize"
    max_iterations: int = 16
    """Sweeps before giving up on a fixed point (each sweep visits every op)."""

    def run(self, graph: Graph) -> bool:
        changed = False
        rules: dict[str, list[Rewrite]] = {}  # per op name, looked up once a run (not once per op per sweep)
        for _ in range(self.max_iterations):
            if not self._sweep(graph, rules):
                break
            changed = True
            DCE().run(graph)
        return changed

    def _sweep(self, graph: Graph, rules: dict[str, list[Rewrite]]) -> bool:
        changed = False
        for op in list(graph.ops):  # rules insert replacements and rewire uses; none erases an op (DCE does, after)
            if len(op.results) == 1:
                own = rules.get(op.name)
                if own is None:
                    own = rules[op.name] = rules_for(op.name)
                changed |= bool(own) and apply_rules(graph, op, own)
        return changed


def apply_rules(graph: Graph, op: Op, rules: list[Rewrite] | None = None) -> bool:
    """Apply the first rule (of ``rules``, by default ``op``'s) that fires on ``op``; True when the graph changed."""
    builder = Builder(graph, insert_before=op, location=op.location)  # a rule that does not fire builds nothing
    for rule in rules_for(op.name) if rules is None else rules:
        replacement = rule(builder, op)
        if replacement is None:
            continue
        if replacement is not op.result:
            if replacement.name_hint is None and replacement.producer is not None:
                replacement.name_hint = op.result.name_hint
            replace_uses(graph, op.result, replacement)
        return True
    return False
