"""The ``linalg`` kernels on the CuPy table: NumPy's kernels re-bound, so ``np.linalg`` is ``cupy.linalg`` (cuSOLVER).

The fake CuPy (``fake_cupy.py``) gets a recording ``linalg`` namespace; the results must equal the NumPy backend's.
"""

from __future__ import annotations

import types

import numpy as np

import fake_cupy
from kiln.backends.cupy import CupyBackend
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir import Builder, DType, Graph, TensorType


def test_cupy_table_calls_cupy_linalg(fake):
    """On the device the re-bound kernels call ``cupy.linalg`` (cuSOLVER); recorded here through the fake CuPy."""
    calls = []
    recorded = lambda name: lambda *arrays: calls.append(name) or fake_cupy._on_device(getattr(np.linalg, name))(*arrays)
    fake.linalg = types.SimpleNamespace(**{name: recorded(name) for name in ("inv", "solve", "det", "slogdet", "cholesky")})
    graph = Graph("g")
    a = graph.add_input(TensorType(("N", 3, 3), DType.f64), "a")
    b = Builder(graph)
    spd = b.add(b.matmul(a, b.transpose(a, perm=(0, 2, 1))), b.constant(np.eye(3)))
    graph.outputs = [b.op(name, spd) for name in ("linalg.inv", "linalg.det", "linalg.logabsdet", "linalg.cholesky")]
    graph.outputs.append(b.op("linalg.solve", spd, a))
    graph.outputs.append(b.op("linalg.solve_triangular", spd, a, upper=False, unitriangular=False))  # substitution
    x = np.random.default_rng(0).standard_normal((2, 3, 3))
    got = CupyBackend().compile(graph)(x)
    expected = NumpyBackend().compile(graph)(x)
    assert sorted(set(calls)) == ["cholesky", "det", "inv", "slogdet", "solve"]
    for ours, theirs in zip(got, expected):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
