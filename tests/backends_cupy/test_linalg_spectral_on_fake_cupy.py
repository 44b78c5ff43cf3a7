"""``linalg.eigh`` and ``linalg.svd`` on the CuPy table: NumPy's kernels re-bound, so ``np.linalg`` is ``cupy.linalg``.

The fake CuPy (``fake_cupy.py``) gets a recording ``linalg`` namespace: the kernels must call ``cupy.linalg.eigh``
and ``svd`` with the ops' attributes, and the step (values and a gradient through both VJPs) must equal the NumPy
backend's.
"""

from __future__ import annotations

import types

import numpy as np

import fake_cupy
from kiln.backends.cupy import CupyBackend
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.ir import Builder, DType, Graph, TensorType


def _recording(calls: list) -> types.SimpleNamespace:
    def recorded(name):
        def call(*arrays, **attrs):
            calls.append((name, attrs))
            return fake_cupy._on_device(getattr(np.linalg, name))(*arrays, **attrs)

        return call

    return types.SimpleNamespace(eigh=recorded("eigh"), svd=recorded("svd"))


def _spectral_graph() -> Graph:
    """The eigenvalues of ``A^T A`` (upper triangle), the SVD of ``A`` and the gradient of a sign-invariant loss."""
    graph = Graph("g")
    a = graph.add_input(TensorType(("N", 4, 3), DType.f64), "a")
    b = Builder(graph)
    w, v = b.op("linalg.eigh", b.matmul(b.transpose(a, perm=(0, 2, 1)), a), UPLO="U")
    u, s, vh = b.op("linalg.svd", a, full_matrices=False)
    loss = b.add(b.reduce_sum(b.mul(v, v)), b.add(b.reduce_sum(b.mul(u, u)), b.reduce_sum(b.mul(w, s))))
    graph.outputs = [w, s, b.mul(vh, vh), *differentiate(graph, loss, [a])]
    return graph


def test_cupy_table_calls_cupy_linalg(fake):
    calls = []
    fake.linalg = _recording(calls)
    x = np.random.default_rng(0).standard_normal((2, 4, 3))
    got = CupyBackend().compile(_spectral_graph())(x)
    expected = NumpyBackend().compile(_spectral_graph())(x)
    assert ("eigh", {"UPLO": "U"}) in calls and ("svd", {"full_matrices": False}) in calls
    for ours, theirs in zip(got, expected):
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-12, atol=1e-13)
