"""The LDL^T kernels (``backends/numpy/lowering_linalg_ldl.py``) on the CuPy table: re-bound, so the Bunch-Kaufman
loop and the solve run on device arrays (each pivot test reads one number back). Recorded through the fake CuPy;
the results must equal the NumPy backend's bit for bit."""

from __future__ import annotations

import numpy as np

import fake_cupy
from kiln.backends.cupy import CupyBackend
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir import Builder, DType, Graph, TensorType


def _ldl_graph() -> Graph:
    graph = Graph("g")
    a = graph.add_input(TensorType(("N", 5, 5), DType.f64), "a")
    rhs = graph.add_input(TensorType((5, 2), DType.f64), "b")
    b = Builder(graph)
    ld, pivots = b.op("linalg.ldl_factor", a), b.op("linalg.ldl_pivots", a)
    graph.outputs = [ld, pivots, b.op("linalg.ldl_solve", ld, pivots, rhs)]
    return graph


def test_cupy_table_runs_the_ldl_kernels_and_matches_numpy(fake):
    rng = np.random.default_rng(0)
    m = rng.standard_normal((3, 5, 5))
    a = (m + m.transpose(0, 2, 1)) * (1 - 0.9 * np.eye(5))  # small diagonals: 2x2 blocks and interchanges
    rhs = rng.standard_normal((5, 2))
    executable = CupyBackend().compile(_ldl_graph())
    fake_cupy.SYNCS.clear()
    got = executable(a, rhs)
    assert fake_cupy.SYNCS.count("__float__") >= 3 * 5, fake_cupy.SYNCS  # a pivot test per column, on device data
    expected = NumpyBackend().compile(_ldl_graph())(a, rhs)
    assert (np.asarray(expected[1]) < 0).any()
    for ours, theirs in zip(got, expected):
        assert np.asarray(ours).dtype == np.asarray(theirs).dtype
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
