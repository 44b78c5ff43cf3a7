"""The data-moving canonicalize rules compute what the graph they replace computes (the golden .ir files pin their
shape; these run both graphs on random inputs)."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir import Builder, Graph, TensorType
from kiln.compiler.ir.core import clone_graph
from kiln.compiler.passes.canonicalize import Canonicalize


def _same_values(graph: Graph, shapes: list[tuple[int, ...]], removed: str | None = None) -> Graph:
    """Canonicalize a copy (no ``removed`` op may remain in it); both graphs give the same outputs. Returns the copy."""
    canonical = clone_graph(graph)
    assert Canonicalize().run(canonical)
    assert not any(op.name == removed for op in canonical.ops), str(canonical)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(shape) for shape in shapes]
    for want, got in zip(NumpyBackend().compile(graph)(*inputs), NumpyBackend().compile(canonical)(*inputs)):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    return canonical


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1), (1, 2, 0)])
def test_summed_adjacent_pads_are_a_concat(axis, order):
    """Three slices' gradients padded back into place and summed, in any order of the sum."""
    widths = (2, 3, 1)
    shapes = [tuple(w if a == axis else 4 for a in range(3)) for w in widths]
    graph = Graph("pads")
    parts = [graph.add_input(TensorType(shape, "f64"), f"p{i}") for i, shape in enumerate(shapes)]
    b = Builder(graph)
    padded = []
    for index, part in enumerate(parts):
        low, high = [0, 0, 0], [0, 0, 0]
        low[axis], high[axis] = sum(widths[:index]), sum(widths[index + 1 :])
        padded.append(b.pad(part, low=tuple(low), high=tuple(high), interior=(0, 0, 0), value=0.0))
    first, second, third = (padded[i] for i in order)
    graph.outputs = [b.add(b.add(first, second), third)]
    _same_values(graph, shapes, "tensor.pad")


def test_transposed_sum_of_batched_products_keeps_its_value():
    graph = Graph("summed")
    x, dy = graph.add_input(TensorType((5, 4, 3), "f64"), "x"), graph.add_input(TensorType((5, 4, 6), "f64"), "dy")
    b = Builder(graph)
    product = b.matmul(b.transpose(x, perm=(0, 2, 1)), dy)
    graph.outputs = [b.transpose(b.reduce_sum(product, axes=(0,), keepdims=False), perm=(1, 0))]
    canonical = _same_values(graph, [(5, 4, 3), (5, 4, 6)])
    assert canonical.outputs[0].producer.name == "tensor.reduce_sum"  # the gradient comes out in its own layout
