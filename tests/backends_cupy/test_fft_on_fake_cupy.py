"""The ``fft`` dialect on the CuPy table: NumPy's kernels re-bound, so the transforms are ``cupy.fft``'s (cuFFT).

The fake CuPy (``fake_cupy.py``) gets a recording ``fft`` namespace: the kernels must call ``cupy.fft.fft``, ``ifft``,
``rfft`` and ``irfft`` on device arrays with the ops' attributes (never SciPy on the host), and the step (values and
gradients through every VJP) must equal the NumPy backend's.
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
        def call(array, **attrs):
            assert isinstance(array, fake_cupy.DeviceArray), f"cupy.fft.{name} got a host array"
            calls.append((name, attrs))
            return fake_cupy._on_device(getattr(np.fft, name))(array, **attrs)

        return call

    return types.SimpleNamespace(**{name: recorded(name) for name in ("fft", "ifft", "rfft", "irfft")})


def _fft_graph() -> Graph:
    """``irfft(ifft(fft(x + i y)) * rfft(x))`` pieces, a weighted loss and its gradients w.r.t. both parts."""
    graph = Graph("g")
    xr, xi = (graph.add_input(TensorType(("N", 6), DType.f64), name) for name in ("xr", "xi"))
    b = Builder(graph)
    yr, yi = b.op("fft.c2c", xr, xi, axis=1, n=8, inverse=False, norm="ortho")
    zr, zi = b.op("fft.c2c", yr, yi, axis=1, n=8, inverse=True, norm="backward")
    sr, si = b.op("fft.r2c", xr, axis=1, n=6, norm="forward")
    signal = b.op("fft.c2r", sr, si, axis=1, n=6, norm="forward")
    loss = b.add(b.reduce_sum(b.mul(zr, zi)), b.reduce_sum(b.mul(signal, b.constant(np.arange(6.0)))))
    graph.outputs = [zr, zi, signal, *differentiate(graph, loss, [xr, xi])]
    return graph


def test_cupy_table_calls_cupy_fft(fake):
    calls = []
    fake.fft = _recording(calls)
    x = np.random.default_rng(0).standard_normal((2, 2, 6))
    got = CupyBackend().compile(_fft_graph())(*x)
    expected = NumpyBackend().compile(_fft_graph())(*x)
    assert ("fft", {"n": 8, "axis": 1, "norm": "ortho"}) in calls and ("irfft", {"n": 6, "axis": 1, "norm": "forward"}) in calls
    assert {name for name, _ in calls} == {"fft", "ifft", "rfft", "irfft"}
    for ours, theirs in zip(got, expected):
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-12, atol=1e-13)
