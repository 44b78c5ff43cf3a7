"""The running scans on the CuPy table (fake CuPy): CuPy's ufuncs have no ``accumulate`` for ``maximum``, ``minimum``
and ``logaddexp``, so the table swaps the NumPy kernels' ``running`` for a log-depth scan (``running_scans.py``). Here
the fake's ufuncs lose ``accumulate`` too, and the scans and logcumsumexp's gradient still give NumPy's results."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.backends.cupy import CupyBackend
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.ir import Builder, Graph, TensorType


def without_accumulate(fake, monkeypatch):
    for name in ("maximum", "minimum", "logaddexp"):
        ufunc = getattr(np, name)
        monkeypatch.setattr(fake, name, lambda *args, ufunc=ufunc, **kwargs: ufunc(*args, **kwargs), raising=False)


def scans_graph(dtype: str) -> Graph:
    """``x -> (cumargmax along the symbolic axis, cumargmin, logcumsumexp reversed, its gradient)``."""
    graph = Graph("scans")
    x = graph.add_input(TensorType(("N", 5), dtype), "x")
    b = Builder(graph)
    total = b.logcumsumexp(x, axis=0, reverse=True)
    (gradient,) = differentiate(graph, b.reduce_sum(b.mul(total, b.cos(x)), axes=None), [x])
    graph.outputs = [b.cumargmax(x, axis=0), b.cumargmin(x, axis=1), total, gradient]
    return graph


@pytest.mark.parametrize("rows", [1, 6, 17])
def test_scans_run_on_the_device_without_accumulate(fake, monkeypatch, rows):
    without_accumulate(fake, monkeypatch)
    x = np.random.default_rng(rows).choice([np.nan, -np.inf, 0.0, -0.0, 1.0, 2.5, 300.0], (rows, 5))
    x[:, 0] = np.random.default_rng(0).standard_normal(rows) * 100  # a lane without NaN: finite totals and gradients
    graph = scans_graph("f64")
    got, expected = CupyBackend().compile(graph)(x), NumpyBackend().compile(graph)(x)
    for ours, theirs in zip(got, expected):
        assert np.asarray(ours).dtype == theirs.dtype
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=1e-13, atol=1e-13)


def test_numpys_running_needs_accumulate(fake, monkeypatch):
    """The check above can fail: without the swap, the re-bound NumPy kernel reaches for ``accumulate``."""
    from kiln.backends.cupy import lowering

    without_accumulate(fake, monkeypatch)
    monkeypatch.setattr(lowering, "log_depth_running", lambda cupy: lowering.lowering_scan.running)
    with pytest.raises(AttributeError, match="accumulate"):
        CupyBackend().compile(scans_graph("f64"))(np.ones((3, 5)))
