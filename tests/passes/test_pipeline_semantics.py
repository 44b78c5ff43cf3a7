"""Semantics preservation: the full pipeline's output computes what the unoptimized graph computes."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kiln_random_graphs import FULL_PIPELINE, random_graph, random_inputs

from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir.core import clone_graph
from kiln.compiler.ir.parser import parse
from kiln.compiler.ir.printer import print_graph
from kiln.compiler.passes.manager import PassManager


def reference_backend() -> NumpyBackend:
    backend = NumpyBackend()
    backend.plan_memory = False  # one allocating kernel call per op: the plain reference
    return backend


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_full_pipeline_computes_the_same_values(data: st.DataObject):
    graph = random_graph(data)
    optimized = clone_graph(graph)
    PassManager(FULL_PIPELINE, verify_each=True).run(optimized)
    assert print_graph(parse(print_graph(optimized))) == print_graph(optimized)
    expected = reference_backend().compile(graph)
    actual = NumpyBackend().compile(optimized)
    for batch, seed in ((3, 0), (5, 1), (3, 2)):  # a new batch size, then the first again: pooled buffers are reused
        arrays = random_inputs(graph, batch, seed)
        for want, got in zip(expected(*arrays), actual(*arrays)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-12)


def test_outputs_of_one_call_survive_the_next():
    """Outputs get fresh storage: the caller may keep them while the step runs again."""
    graph = parse(
        """func @f(%x: tensor<Nx4xf64>) {
  %a = "tensor.exp"(%x) : (tensor<Nx4xf64>) -> tensor<Nx4xf64>
  %b = "tensor.neg"(%a) : (tensor<Nx4xf64>) -> tensor<Nx4xf64>
  %t = "tensor.transpose"(%b) {perm = [1, 0]} : (tensor<Nx4xf64>) -> tensor<4xNxf64>
  return %t, %a : tensor<4xNxf64>, tensor<Nx4xf64>
}"""
    )
    PassManager(FULL_PIPELINE).run(graph)
    run = NumpyBackend().compile(graph)
    x = np.ones((2, 4))
    first = [np.array(out) for out in run(x)]
    kept = run(x)
    run(2 * x)
    for want, got in zip(first, kept):
        np.testing.assert_array_equal(got, want)
