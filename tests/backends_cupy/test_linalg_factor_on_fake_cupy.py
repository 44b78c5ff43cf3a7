"""The factorization kernels (``backends/numpy/lowering_linalg_factor.py``) on the CuPy table: re-bound, so
``np.linalg.qr`` is ``cupy.linalg.qr`` (cuSOLVER) and the LU, Cholesky-info and matrix-exponential loops run on
device arrays. Recorded through the fake CuPy; the results must equal the NumPy backend's.
"""

from __future__ import annotations

import types

import numpy as np

import fake_cupy
from kiln.backends.cupy import CupyBackend
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir import Builder, DType, Graph, TensorType


def _factor_graph() -> Graph:
    graph = Graph("g")
    a = graph.add_input(TensorType(("N", 4, 3), DType.f64), "a")
    b = Builder(graph)
    square = b.matmul(b.transpose(a, perm=(0, 2, 1)), a)
    pivots = b.op("linalg.lu_pivots", square)
    info = b.op("linalg.cholesky_info", square)
    graph.outputs = [b.op("linalg.qr_q", a, mode="complete"), b.op("linalg.qr_r", a, mode="reduced"), b.op("linalg.qr_r", a, mode="r"),
                     b.op("linalg.lu_factor", a), pivots, b.op("linalg.pivots_to_permutation", pivots, size=3),
                     b.op("linalg.matrix_exp", square), info, b.op("linalg.checked", square, info)]
    return graph


def test_cupy_table_calls_cupy_linalg_and_matches_numpy(fake):
    calls = []
    recorded = lambda name: lambda *arrays, **kwargs: calls.append(name) or fake_cupy._on_device(getattr(np.linalg, name))(*arrays, **kwargs)
    fake.linalg = types.SimpleNamespace(**{name: recorded(name) for name in ("qr", "solve")})
    graph = _factor_graph()
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    got = CupyBackend().compile(graph)(x)
    expected = NumpyBackend().compile(graph)(x)
    assert sorted(set(calls)) == ["qr", "solve"]  # solve: the Pade approximant's denominator
    for ours, theirs in zip(got, expected):
        assert ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
