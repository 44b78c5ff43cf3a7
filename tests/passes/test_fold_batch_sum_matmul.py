"""fold-batch-sum-matmul gives the sum of the batched products, for one and two batch axes and a symbolic batch."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir import Builder, Graph
from kiln.compiler.ir.core import clone_graph
from kiln.compiler.ir.types import TensorType
from kiln.compiler.passes import PassManager


def _summed_product_graph(batch: tuple, k: int, m: int, f: int, transposed: bool) -> Graph:
    """``sum over batch of a @ b``, with ``a`` given as ``x^T`` (a weight gradient's shape) when ``transposed``."""
    graph = Graph("summed")
    left = graph.add_input(TensorType(batch + ((m, k) if transposed else (k, m)), "f64"), "x")
    right = graph.add_input(TensorType(batch + (m, f), "f64"), "g")
    b = Builder(graph)
    if transposed:
        left = b.transpose(left, perm=tuple(range(len(batch))) + (len(batch) + 1, len(batch)))
    graph.outputs = [b.reduce_sum(b.matmul(left, right), axes=tuple(range(len(batch))), keepdims=False)]
    return graph


@pytest.mark.parametrize(("batch", "sizes"), [(("N",), [(2,), (5,)]), ((3, "N"), [(3, 2), (3, 4)]), ((4,), [(4,)])])
@pytest.mark.parametrize("transposed", [True, False])
def test_the_folded_matmul_equals_the_summed_products(batch, sizes, transposed):
    graph = _summed_product_graph(batch, 6, 5, 3, transposed)
    folded = clone_graph(graph)
    PassManager("fold-batch-sum-matmul,canonicalize,dce").run(folded)
    assert [op.name for op in folded.ops].count("tensor.matmul") == 1 and "tensor.reduce_sum" not in [op.name for op in folded.ops]
    whole, one_gemm = NumpyBackend().compile(graph), NumpyBackend().compile(folded)
    rng = np.random.default_rng(0)
    for shape in sizes:
        arrays = [rng.standard_normal(shape + v.type.shape[len(batch):]) for v in graph.inputs]
        np.testing.assert_allclose(one_gemm(*arrays)[0], whole(*arrays)[0], rtol=1e-12, atol=1e-12)
