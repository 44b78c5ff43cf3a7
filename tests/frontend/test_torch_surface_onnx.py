"""The ``torch.*`` surface exported to ONNX: a program mixing the new functions and methods (joins, scatter
reductions, NaN statistics, special functions, recurrent cells, windows) runs in onnxruntime and onnx's reference
evaluator with the NumPy backend's values, which the other ``test_torch_surface*`` files check against PyTorch."""

from __future__ import annotations

import numpy as np

import kiln
from onnx_nodes import assert_exported_graph_matches_numpy

RNG = np.random.default_rng(51)


def _program(x, y):
    index = kiln.tensor(np.array([[0, 1, 1, 3], [2, 2, 0, 1], [3, 0, 2, 2]]))
    nans = kiln.where(x > 1.0, float("nan"), y)
    h, c = kiln.lstm_cell(x[:, :2], (y[:, :3], x[:, 1:]), kiln.tensor(np.linspace(-1, 1, 24).reshape(12, 2)),
                          kiln.tensor(np.linspace(1, -1, 36).reshape(12, 3)))
    return (kiln.hstack([x, y]), kiln.block_diag(x, y[0]), kiln.tensordot(x, y, ([1], [1])), x.renorm(2, 0, 1.0),
            x.scatter_reduce(1, index, y, "amax", include_self=False), x.index_reduce(0, kiln.tensor([2, 2]), y[:2], "mean"),
            nans.nanquantile(0.3, 1), nans.nanmedian(0).values, x.i0(), (x.abs() + 1).polygamma(2),
            (x.abs() + 0.5).detach().igamma(y.abs()), x.nextafter(y), x.round().mode(1).values, x.diagonal_scatter(y.diagonal()),
            h, c, kiln.gradient(x, edge_order=2)[1], kiln.isin(x.round(), [0.0, 1.0]), kiln.cumulative_trapezoid(x),
            kiln.vander(x[0], 3), x * kiln.hann_window(4, dtype=kiln.float64), kiln.std_mean(x, 1)[0], x.frexp().mantissa)


def test_the_surface_exports_and_runs_in_onnxruntime():
    graph = kiln.trace(_program, kiln.TensorSpec((3, 4), "float64"), kiln.TensorSpec((3, 4), "float64"))
    feeds = [(RNG.standard_normal((3, 4)) * scale, RNG.standard_normal((3, 4))) for scale in (1.0, 3.0)]
    assert_exported_graph_matches_numpy(graph, feeds, rtol=1e-10, atol=1e-12)


def test_integer_surface_exports():
    graph = kiln.trace(lambda a, b: (a.gcd(b), a.lcm(b), a.bitwise_left_shift(2), a.bitwise_right_shift(1)),
                       kiln.TensorSpec((2, 3), "int64"), kiln.TensorSpec((2, 3), "int64"))
    feeds = [(np.array([[12, -18, 0], [7, 1071, 9]]), np.array([[8, 27, 5], [0, 462, -6]]))]
    assert_exported_graph_matches_numpy(graph, feeds, rtol=0, atol=0)
