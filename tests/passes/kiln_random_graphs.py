"""Random well-typed graphs for property tests: elementwise ops with broadcasting, reductions, matmuls, views, composites."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.ir.types import DType, TensorType

FULL_PIPELINE = "canonicalize,constant-fold,cse,decompose,canonicalize,cse,dce,fuse-elementwise,fuse-epilogue,plan-memory"
INPUT_SHAPES = (("N", 4), (4,), ("N", 1), (4, 4), ("N", 3, 4))
CONSTANT_SHAPES = ((), (4,), (1, 4))
UNARY = ("tensor.neg", "tensor.tanh", "tensor.sigmoid", "tensor.relu", "tensor.exp")
BINARY = ("tensor.add", "tensor.sub", "tensor.mul", "tensor.maximum", "tensor.minimum")
KINDS = ("unary", "binary", "constant", "reduce", "transpose", "reshape", "broadcast", "matmul", "where", "softmax", "split_join", "linear")


def random_graph(data: st.DataObject, max_ops: int = 14) -> Graph:
    graph = Graph("random")
    values = [graph.add_input(TensorType(shape, DType.f64), f"in{i}") for i, shape in enumerate(INPUT_SHAPES)]
    builder = Builder(graph)
    for _ in range(data.draw(st.integers(1, max_ops), label="ops")):
        kind = data.draw(st.sampled_from(KINDS), label="kind")
        try:
            value = _emit(builder, kind, data, values)
        except ShapeError:
            continue
        if value is not None:
            values.append(value)
    computed = values[len(INPUT_SHAPES):] or values[:1]
    count = data.draw(st.integers(1, min(3, len(computed))), label="outputs")
    graph.outputs = data.draw(st.lists(st.sampled_from(computed), min_size=count, max_size=count), label="returned")
    return graph


def _emit(b: Builder, kind: str, data: st.DataObject, values: list[Value]) -> Value | None:
    pick = lambda: data.draw(st.sampled_from(values))  # noqa: E731
    if kind == "unary":
        x = pick()
        # exp only of bounded values, so nothing overflows
        return b.op("tensor.exp", b.tanh(x)) if data.draw(st.sampled_from(UNARY)) == "tensor.exp" else b.op(data.draw(st.sampled_from(UNARY[:-1])), x)
    if kind == "binary":
        return b.op(data.draw(st.sampled_from(BINARY)), pick(), pick())
    if kind == "constant":
        shape = data.draw(st.sampled_from(CONSTANT_SHAPES))
        element = data.draw(st.sampled_from((0.0, 1.0, 2.0, -0.5)))
        return b.constant(np.full(shape, element), DType.f64)
    if kind == "reduce":
        x = pick()
        if x.type.rank == 0:
            return None
        op = data.draw(st.sampled_from(("reduce_sum", "reduce_max", "reduce_mean")))
        axis = data.draw(st.integers(0, x.type.rank - 1))
        return getattr(b, op)(x, axes=(axis,), keepdims=data.draw(st.booleans()))
    if kind == "transpose":
        x = pick()
        return b.transpose(x, perm=tuple(reversed(range(x.type.rank)))) if x.type.rank >= 2 else None
    if kind == "reshape":
        x = pick()
        return b.reshape(x, shape=(-1,)) if x.type.rank >= 1 and x.type.is_static else b.reshape(x, shape=x.type.shape)
    if kind == "broadcast":
        return b.broadcast_to(pick(), shape=("N", 4))
    if kind == "matmul":
        return b.matmul(pick(), pick())
    if kind == "where":
        x, y = pick(), pick()
        return b.where(b.greater(x, y), x, y)
    if kind == "split_join":
        return _split_and_join(b, pick())
    if kind == "linear":  # x @ W for x of any rank >= 2 (a stack of matrices times one: one GEMM in the NumPy code)
        x = pick()
        return b.matmul(x, values[INPUT_SHAPES.index((4, 4))]) if x.type.rank >= 2 and x.type.shape[-1] == 4 else None
    x = pick()
    return b.softmax(x, axis=-1) if x.type.rank >= 1 else None


def _split_and_join(b: Builder, x: Value) -> Value | None:
    """``x`` cut in two along its last axis and put back as the sum of the zero-padded halves (a slice's gradient)."""
    width = x.type.shape[-1] if x.type.rank else None
    if not isinstance(width, int) or width < 2:
        return None
    axis, cut, none = x.type.rank - 1, width // 2, (0,) * x.type.rank
    first, second = (b.slice(x, axis=axis, start=start, stop=stop, step=1) for start, stop in ((0, cut), (cut, width)))
    widen = lambda before, after: (none[:-1] + (before,), none[:-1] + (after,))  # noqa: E731
    (low1, high1), (low2, high2) = widen(0, width - cut), widen(cut, 0)
    return b.add(b.pad(second, low=low2, high=high2, interior=none, value=0.0), b.pad(first, low=low1, high=high1, interior=none, value=0.0))


def random_inputs(graph: Graph, batch: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for value in graph.inputs:
        shape = tuple(batch if isinstance(d, str) else d for d in value.type.shape)
        arrays.append(rng.uniform(-2, 2, size=shape).astype(value.type.dtype.numpy))
    return arrays
