"""conv-to-gemm: the GEMMs over im2col columns compute what the convolution kernels compute, across geometries."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from kiln.compiler.ir import Builder, Graph
from kiln.compiler.ir.core import clone_graph
from kiln.compiler.ir.types import TensorType
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.passes import PassManager


def _conv_and_weight_grad(channels: int, out_channels: int, side: int, kernel: tuple[int, int], **geometry) -> Graph:
    graph = Graph("conv")
    x = graph.add_input(TensorType(("N", channels, side, side + 1), "f64"), "x")
    w = graph.add_input(TensorType((out_channels, channels // geometry["groups"]) + kernel, "f64"), "w")
    b = Builder(graph)
    y = b.conv2d(x, w, **geometry)
    g = graph.add_input(y.type, "g")
    graph.outputs = [y, b.conv2d_weight_grad(x, g, weight_shape=w.type.shape, **geometry)]
    return graph


@pytest.mark.parametrize(("stride", "padding", "dilation", "groups"), list(itertools.product(((1, 1), (2, 1)), ((0, 0), (1, 2)), ((1, 1), (2, 1)), (1, 2))))
def test_the_gemms_equal_the_convolution_kernels(stride, padding, dilation, groups):
    graph = _conv_and_weight_grad(4, 6, 7, (3, 2), stride=stride, padding=padding, dilation=dilation, groups=groups)
    rewritten = clone_graph(graph)
    PassManager("conv-to-gemm,cse,dce").run(rewritten)
    names = [op.name for op in rewritten.ops]
    assert names.count("tensor.conv2d_columns") == 1 and "tensor.conv2d" not in names and "tensor.conv2d_weight_grad" not in names
    kernels = NumpyBackend()
    kernels.plan_memory = False  # the unplanned path calls the convolution kernels as they are
    rng = np.random.default_rng(0)
    for batch in (1, 3):
        arrays = [rng.standard_normal(tuple(batch if d == "N" else d for d in v.type.shape)) for v in graph.inputs]
        want, got = kernels.compile(graph)(*arrays), NumpyBackend().compile(rewritten)(*arrays)
        for w, g in zip(want, got):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
