"""The batching table: one short rule per op, written in the IR's own ops (JAX's ``batching.primitive_batchers``).

```python
@batching_rule("tensor.transpose")
def transpose_batch(b: Builder, op: Op, x: Batched) -> Value:
    perm = op.attrs["perm"] or tuple(reversed(range(x.rank(0))))
    return b.transpose(x.values[0], perm=(0,) + tuple(axis + 1 for axis in perm))
```

A rule sees one op of the per-example graph and its operands in the batched
graph: each either batched, with the batch axis at 0, or unbatched (one value
shared by every example). It is called only when some operand is batched; the
walk (``batch.py``) re-emits an op with no batched operand as it is. It returns
the op's results in the batched graph; a result whose rank is one more than
the per-example result's carries the batch axis at 0, one of equal rank is
unbatched. A rule may return ``None`` for a case it leaves to the op's
decomposition (composite ops only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Op, Value
from kiln.compiler.ir.types import Dim, normalize_axes, normalize_axis


class BatchingError(TraceError):
    """``kiln.vmap`` cannot batch this op (no rule, or a case its rule does not cover); the message says which and where."""


@dataclass(frozen=True)
class Batched:
    """An op's operands in the batched graph."""

    values: tuple[Value, ...]
    """Each operand: with the batch axis at 0 where ``batched``, else the per-example value itself."""
    batched: tuple[bool, ...]
    size: Dim
    """The batch size (an int, or a symbol when the batch axis is a graph's symbolic dim)."""
    op: Op
    """The per-example op: its operand types give each operand's per-example rank."""

    def rank(self, index: int) -> int:
        """Operand ``index``'s per-example rank."""
        return self.op.operands[index].type.rank

    def materialized(self, b: Builder, index: int) -> Value:
        """Operand ``index`` with a batch axis, broadcast along it if the operand is unbatched."""
        value = self.values[index]
        return value if self.batched[index] else materialize(b, value, self.size)

    def aligned(self, b: Builder, index: int, rank: int) -> Value:
        """Operand ``index`` ready to broadcast against a batched value of per-example ``rank`` (``aligned``)."""
        return aligned(b, self.values[index], self.rank(index), rank) if self.batched[index] else self.values[index]


BatchingRule = Callable[[Builder, Op, Batched], "Value | tuple[Value, ...] | None"]

BATCHING_RULES: dict[str, BatchingRule] = {}


def batching_rule(*op_names: str) -> Callable[[BatchingRule], BatchingRule]:
    def decorate(rule: BatchingRule) -> BatchingRule:
        for name in op_names:
            BATCHING_RULES[name] = rule
        return rule

    return decorate


def materialize(b: Builder, value: Value, size: Dim) -> Value:
    """An unbatched value repeated ``size`` times along a new leading axis."""
    return b.broadcast_to(b.expand_dims(value, axes=(0,)), shape=(size,) + value.type.shape)


def aligned(b: Builder, value: Value, rank: int, target_rank: int) -> Value:
    """A batched value of per-example ``rank`` with size-1 axes after the batch axis, up to ``target_rank``: then
    NumPy broadcasting lines its per-example axes up with the target's trailing ones and the batch axes together."""
    missing = target_rank - rank
    return b.expand_dims(value, axes=tuple(range(1, 1 + missing))) if missing > 0 else value


def shifted(axes: int | Sequence[int] | None, rank: int) -> tuple[int, ...]:
    """Per-example ``axes`` (``None``: all, negatives from the end) as axes of the batched value."""
    return tuple(axis + 1 for axis in normalize_axes(axes, rank))


def shifted_axis(axis: int, rank: int) -> int:
    return normalize_axis(axis, rank) + 1


def moved_axis(b: Builder, value: Value, source: int, destination: int) -> Value:
    """``np.moveaxis`` as a transpose (none when the axis stays)."""
    if source == destination:
        return value
    order = [axis for axis in range(value.type.rank) if axis != source]
    order.insert(destination, source)
    return b.transpose(value, perm=tuple(order))


def elementwise_batch(b: Builder, op: Op, x: Batched) -> Value:
    # f(x_i, y) for every i: batched operands get size-1 axes up to the result's rank, then broadcasting does the rest
    rank = op.results[0].type.rank
    return b.op(op.name, *(x.aligned(b, index, rank) for index in range(len(x.values))), **op.attrs)


@batching_rule("tensor.one_hot", "tensor.triu", "tensor.tril", "tensor.stop_gradient", "tensor.check_index")
def trailing_axes_batch(b: Builder, op: Op, x: Batched) -> Value:
    # ops on the trailing axes of one operand: a leading batch axis is one more leading axis
    return b.op(op.name, x.values[0], **op.attrs)


@batching_rule("tensor.reduce_sum", "tensor.reduce_mean", "tensor.reduce_max", "tensor.reduce_min", "tensor.reduce_prod",
               "tensor.numel")
def reduce_batch(b: Builder, op: Op, x: Batched) -> Value:
    # reduce over the per-example axes, one further along (axes=None: every per-example axis, not the batch axis)
    return b.op(op.name, x.values[0], **{**op.attrs, "axes": shifted(op.attrs["axes"], x.rank(0))})


@batching_rule("tensor.argmax", "tensor.cumsum", "tensor.cumprod", "tensor.argsort", "nn.softmax", "nn.log_softmax",
               "tensor.logcumsumexp", "tensor.cumargmax", "tensor.cumargmin")
def axis_batch(b: Builder, op: Op, x: Batched) -> Value:
    return b.op(op.name, x.values[0], **{**op.attrs, "axis": shifted_axis(op.attrs["axis"], x.rank(0))})


@batching_rule("nn.softmax_grad")
def softmax_grad_batch(b: Builder, op: Op, x: Batched) -> Value:
    # both operands must have one type: the unbatched one is repeated
    y, g = x.materialized(b, 0), x.materialized(b, 1)
    return b.softmax_grad(y, g, axis=shifted_axis(op.attrs["axis"], x.rank(0)))


@batching_rule("tensor.decayed_cumsum")
def decayed_cumsum_batch(b: Builder, op: Op, x: Batched) -> Value:
    # both operands must have one type: the unbatched one is repeated
    g, y = x.materialized(b, 0), x.materialized(b, 1)
    return b.decayed_cumsum(g, y, **{**op.attrs, "axis": shifted_axis(op.attrs["axis"], x.rank(0))})


@batching_rule("tensor.matmul")
def matmul_batch(b: Builder, op: Op, x: Batched) -> Value:
    (a, w), (a_batched, w_batched), (a_rank, w_rank) = x.values, x.batched, (x.rank(0), x.rank(1))
    if a_batched and not w_batched and a_rank == 1 and w_rank == 2:
        return b.matmul(a, w)  # one vector per example against one matrix: the rows of one (B, k) @ (k, n)
    # vectors become matrices, (k,) -> (1, k) on the left and (k, 1) on the right, squeezed out of the product
    a = b.expand_dims(a, axes=(-2,)) if a_rank == 1 else a
    w = b.expand_dims(w, axes=(-1,)) if w_rank == 1 else w
    rank = max(a_rank, w_rank, 2)
    a = aligned(b, a, max(a_rank, 2), rank) if a_batched else a
    w = aligned(b, w, max(w_rank, 2), rank) if w_batched else w
    squeezed = ((-2,) if a_rank == 1 else ()) + ((-1,) if w_rank == 1 else ())
    product = b.matmul(a, w)
    return b.squeeze(product, axes=squeezed) if squeezed else product
