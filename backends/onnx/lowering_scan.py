"""ONNX emitters of the running scans ONNX has no operator for: ``tensor.logcumsumexp``, ``tensor.decayed_cumsum``
and ``tensor.cumargmax``/``cumargmin`` (``compiler/ops/scan.py``), each one ``Scan`` that walks the scanned axis.

``scan_along_axis`` does the walking for all of them, as ``tensor.cumprod``'s emitter (``lowering_nn.py``) does: the
axis moved first (what the reference evaluator's Scan supports), reversed by a negative-step Slice, one padding slice
appended (a Scan of no iterations fails in onnxruntime) and its result dropped. A step is a function of the carried
states and the current slices, written with ``ctx.node`` like any emitter; ``scan_body`` collects its nodes into the
body graph::

    logcumsumexp: total = logaddexp(total, x_i)                           (total starts at -inf)
    cumargmax:    takes = x_i >= best or isnan(x_i); best, index = where(takes, (x_i, i), (best, index))
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from kiln.backends.onnx.lowering import ONNX
from kiln.backends.onnx.lowering_nn import _reversed_first_axis
from kiln.compiler.ir.core import Op
from kiln.compiler.ir.types import DType, normalize_axis

Step = Callable[[list[str], list[str]], tuple[list[str], list[str]]]
"""``(states, slices) -> (new states, per-step outputs)``, emitting nodes with ``ctx.node``."""


def scan_along_axis(ctx, op: Op, scanned: list[str], states: list[tuple[str, DType]], step: Step,
                    outputs: list[DType], reverse: bool = False) -> list[str]:
    """Run ``step`` over the slices of ``scanned`` (one type each, that of ``op``'s first operand) along ``op``'s axis
    from ``states`` (names with their dtypes); the per-step outputs stacked back into ``op``'s shape."""
    operand = op.operands[0].type
    axis = normalize_axis(op.attrs["axis"], operand.rank)
    order = [axis, *(i for i in range(operand.rank) if i != axis)]
    moved = [_reversed_first_axis(ctx, m) if reverse else m for m in (ctx.node("Transpose", [x], perm=order) if axis else x for x in scanned)]
    first_axis = ctx.constant(np.array([0], np.int64))
    padded = [ctx.node("Concat", [m, ctx.node("Unsqueeze", [_filled(ctx, m, 0, operand.dtype), first_axis])], axis=0) for m in moved]
    slice_types = [(name, operand.dtype) for name in scanned]
    body = scan_body(ctx, states, slice_types, step, outputs, operand.rank - 1)
    results = ctx.node("Scan", [name for name, _ in states] + padded, outputs=len(states) + len(outputs), body=body,
                       num_scan_inputs=len(scanned))
    stacked = [ctx.node("Slice", [r, *_range_1d(ctx, 0, -1)]) for r in results[len(states):]]
    stacked = [_reversed_first_axis(ctx, s) if reverse else s for s in stacked]
    return [ctx.node("Transpose", [s], perm=[int(i) for i in np.argsort(order)]) if axis else s for s in stacked]


def _range_1d(ctx, start: int, stop: int) -> list[str]:
    """``starts, ends, axes`` of a Slice of the first axis."""
    return [ctx.constant(np.array([value], np.int64)) for value in (start, stop, 0)]


def scan_body(ctx, states: list[tuple[str, DType]], slices: list[tuple[str, DType]], step: Step, outputs: list[DType], rank: int):
    """The Scan's body graph: fresh inputs for the states and slices, ``step``'s nodes (collected from ``ctx.node``
    while it runs), the new states and an ``Identity`` per step output (body output names must differ)."""
    helper = ctx.onnx.helper

    def typed(name: str, dtype: DType, rank: int | None):
        return helper.make_tensor_value_info(name, ctx.onnx_dtype(dtype), None if rank is None else [None] * rank)

    state_inputs = [ctx.fresh("state") for _ in states]
    slice_inputs = [ctx.fresh("slice") for _ in slices]
    outer, ctx.nodes = ctx.nodes, []
    try:
        new_states, step_outputs = step(state_inputs, slice_inputs)
        step_outputs = [ctx.node("Identity", [name]) for name in step_outputs]
        nodes = ctx.nodes
    finally:
        ctx.nodes = outer
    inputs = [typed(n, d, None) for n, (_, d) in zip(state_inputs, states)] + [typed(n, d, rank) for n, (_, d) in zip(slice_inputs, slices)]
    results = [typed(n, d, None) for n, (_, d) in zip(new_states, states)] + [typed(n, d, rank) for n, d in zip(step_outputs, outputs)]
    return helper.make_graph(nodes, ctx.fresh("scan_step"), inputs, results)


def _filled(ctx, like: str, value: float | int, dtype: DType) -> str:
    """A tensor of ``value`` shaped as one slice of ``like`` along its first axis (the scanned one, moved first)."""
    shape = ctx.node("Shape", [like], start=1)
    return ctx.node("ConstantOfShape", [shape], value=ctx.onnx.numpy_helper.from_array(np.array([value], dtype.numpy)))


def _first_slice_shape_source(ctx, op: Op, x: str) -> str:
    """``x`` with the scanned axis moved first: ``_filled`` reads a slice's shape from it."""
    rank, axis = op.operands[0].type.rank, normalize_axis(op.attrs["axis"], op.operands[0].type.rank)
    return ctx.node("Transpose", [x], perm=[axis, *(i for i in range(rank) if i != axis)]) if axis else x


def logaddexp(ctx, a: str, b: str) -> str:
    """``max + log(1 + exp(-|a - b|))``; equal arguments give ``a + log 2`` (so equal infinities stay that infinity)."""
    larger = ctx.node("Max", [a, b])
    gap = ctx.node("Neg", [ctx.node("Abs", [ctx.node("Sub", [a, b])])])
    gap = ctx.node("Where", [ctx.node("Equal", [a, b]), _zero_like(ctx, gap), gap])
    one = ctx.node("CastLike", [ctx.constant(np.array(1.0)), a])
    return ctx.node("Add", [larger, _log1p(ctx, ctx.node("Exp", [gap]), one)])


def _zero_like(ctx, x: str) -> str:
    return ctx.node("CastLike", [ctx.constant(np.array(0.0)), x])


def _log1p(ctx, u: str, one: str) -> str:
    """``log(1 + u)`` for ``u`` in [0, 1] to full precision: ``log(w) * u / (w - 1)`` with ``w = 1 + u`` (Goldberg), ``u``
    itself where ``w`` rounds to 1."""
    w = ctx.node("Add", [one, u])
    exact = ctx.node("Equal", [w, one])
    denominator = ctx.node("Where", [exact, one, ctx.node("Sub", [w, one])])
    return ctx.node("Where", [exact, u, ctx.node("Div", [ctx.node("Mul", [ctx.node("Log", [w]), u]), denominator])])


@ONNX.register("tensor.logcumsumexp")
def logcumsumexp(ctx, op: Op, inputs: list[str]) -> list[str]:
    dtype = op.result.type.dtype
    start = _filled(ctx, _first_slice_shape_source(ctx, op, inputs[0]), -np.inf, dtype)

    def step(states: list[str], slices: list[str]) -> tuple[list[str], list[str]]:
        total = logaddexp(ctx, states[0], slices[0])
        return [total], [total]

    return scan_along_axis(ctx, op, inputs, [(start, dtype)], step, [dtype], op.attrs["reverse"])


@ONNX.register("tensor.decayed_cumsum")
def decayed_cumsum(ctx, op: Op, inputs: list[str]) -> list[str]:
    """``t_i = g_i + exp(y_prev - y_i) t_prev``, ``prev`` the slice before in the scan's direction: weights at most 1
    for a ``y`` that never decreases along the scan, the running total carried with the last ``y``; a zero total stays
    zero (no ``0 * inf``)."""
    dtype, reverse = op.result.type.dtype, op.attrs["reverse"]
    moved = _first_slice_shape_source(ctx, op, inputs[0])
    start_total, start_log = _filled(ctx, moved, 0.0, dtype), _filled(ctx, moved, 0.0, dtype)

    def step(states: list[str], slices: list[str]) -> tuple[list[str], list[str]]:
        (total, last), (g, y) = states, slices
        gap = ctx.node("Sub", [last, y])
        carried = ctx.node("Where", [ctx.node("Equal", [total, _zero_like(ctx, total)]), total, ctx.node("Mul", [total, ctx.node("Exp", [gap])])])
        new_total = ctx.node("Add", [g, carried])
        return [new_total, ctx.node("Identity", [y])], [new_total]

    return scan_along_axis(ctx, op, inputs, [(start_total, dtype), (start_log, dtype)], step, [dtype], reverse)


def _running_index(largest: bool):
    def emit(ctx, op: Op, inputs: list[str]) -> list[str]:
        """Carry the extreme so far, its index and a counter; the slice takes over when it is at least (at most) the
        extreme, or NaN."""
        dtype = op.operands[0].type.dtype
        moved = _first_slice_shape_source(ctx, op, inputs[0])
        worst = -np.inf if dtype.is_float else np.iinfo(dtype.numpy).min
        worst = worst if largest else (np.inf if dtype.is_float else np.iinfo(dtype.numpy).max)
        states = [(_filled(ctx, moved, worst, dtype), dtype), (_filled(ctx, moved, 0, DType.i64), DType.i64),
                  (ctx.constant(np.array(0, np.int64)), DType.i64)]

        def step(states: list[str], slices: list[str]) -> tuple[list[str], list[str]]:
            (best, index, counter), (x,) = states, slices
            takes = ctx.node("GreaterOrEqual" if largest else "LessOrEqual", [x, best])
            takes = ctx.node("Or", [takes, ctx.node("IsNaN", [x])]) if dtype.is_float else takes
            new_index = ctx.node("Where", [takes, counter, index])
            following = ctx.node("Add", [counter, ctx.constant(np.array(1, np.int64))])
            return [ctx.node("Where", [takes, x, best]), new_index, following], [new_index]

        return scan_along_axis(ctx, op, inputs, states, step, [DType.i64])

    return emit


ONNX.register("tensor.cumargmax")(_running_index(largest=True))
ONNX.register("tensor.cumargmin")(_running_index(largest=False))
