"""The CuPy backend's setup without a GPU: registration, availability reasons, packaging, the lowering table's reuse of
NumPy's kernels (checked by re-binding them to NumPy itself), the lazy loss and copies back from the device."""

from __future__ import annotations

import pathlib
import sys
import tomllib
import types

import numpy as np
import pytest

import kiln.backends as backends
from kiln.backends.cupy import device_problem
from kiln.backends.cupy.lowering import CUPY_OP_NAMES, ArrayModule, _rebound_kernels, static_table
from kiln.backends.numpy import NUMPY
from kiln.compiler.errors import KilnError
from kiln.compiler.ops import OPS
from kiln.runtime.lazy import LazyScalar
from kiln.runtime.resident import _copy_back

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_cupy_is_registered_and_available_says_why_not(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # as on a machine without CuPy (None makes the import fail)
    report = backends.available()
    assert set(report) >= {"numpy", "onnxruntime", "cupy"}
    assert report["numpy"] is None
    assert "cupy is not importable" in report["cupy"] and "kiln[cuda12]" in report["cupy"]
    with pytest.raises(KilnError, match="the cupy backend cannot run here: cupy is not importable"):
        backends.get_backend("cupy")


def fake_cupy(count=None, error: Exception | None = None) -> types.ModuleType:
    def get_device_count():
        if error:
            raise error
        return count

    module = types.ModuleType("cupy")
    module.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=get_device_count))
    return module


def test_device_problem_reports_a_missing_driver_or_device_without_raising(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(error=RuntimeError("cudaErrorInsufficientDriver")))
    assert "no usable CUDA driver" in device_problem() and "cudaErrorInsufficientDriver" in device_problem()
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(count=0))
    assert "no CUDA device" in device_problem()
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(count=1))
    assert device_problem() is None


def test_pyproject_has_gpu_extras_outside_the_test_extra_and_lists_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = project["project"]["optional-dependencies"]
    assert extras["cuda12"] == ["cupy-cuda12x>=13"] and extras["cuda13"] == ["cupy-cuda13x>=13"]
    assert not [r for r in extras["test"] if "cupy" in r], "CuPy must stay out of the test extra (a huge CUDA wheel)"
    assert "kiln.backends.cupy" in project["tool"]["setuptools"]["packages"]


def test_importing_the_backend_does_not_import_cupy():
    import kiln.backends.cupy.codegen  # noqa: F401
    import kiln.backends.cupy.plan  # noqa: F401

    assert "cupy" not in sys.modules or sys.modules["cupy"] is None or hasattr(sys.modules["cupy"], "ndarray")


def test_table_covers_every_op_the_numpy_backend_runs():
    assert set(NUMPY.names()) <= CUPY_OP_NAMES
    assert {"fused.elementwise", "fused.matmul"} <= CUPY_OP_NAMES
    assert set(static_table().names()) == CUPY_OP_NAMES
    missing = {name for name in OPS if not OPS[name].is_composite and name not in CUPY_OP_NAMES and not name.startswith("fused.")}
    assert not missing, f"primitive ops without a CuPy lowering: {sorted(missing)}"


def test_rebinding_numpy_kernels_to_an_array_module_keeps_their_results():
    """The mechanism CuPy's table uses, with NumPy standing in for CuPy: every re-bound kernel computes the same."""
    rebound = _rebound_kernels(ArrayModule(np, np.lib.stride_tricks))
    assert {"tensor.conv2d", "nn.cross_entropy", "optim.adam_update", "nn.layer_norm", "tensor.sigmoid"} <= set(rebound)
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 6, 6)).astype(np.float32), rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    attrs = {"stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1}
    np.testing.assert_array_equal(rebound["tensor.conv2d"](x, w, **attrs), NUMPY.get("tensor.conv2d")(x, w, **attrs))
    logits, labels = rng.standard_normal((5, 4)).astype(np.float32), rng.integers(0, 4, 5)
    assert rebound["nn.cross_entropy"](logits, labels, reduction="mean") == NUMPY.get("nn.cross_entropy")(logits, labels, reduction="mean")
    assert rebound["nn.cross_entropy"].__globals__["np"].__class__ is ArrayModule


def test_lazy_scalar_reads_once_and_behaves_as_a_float():
    class Handle:
        reads = 0

        def get(self):
            Handle.reads += 1
            return np.asarray(2.5, dtype=np.float32)

    loss = LazyScalar(Handle())
    assert not loss.ready and Handle.reads == 0
    assert f"{loss:.2f}" == "2.50" and float(loss) == 2.5 and loss < 3 and loss >= 2.5 and loss == 2.5
    assert loss + 1 == 3.5 and 1 + loss == 3.5 and loss * 2 == 5.0 and loss / 5 == 0.5 and -loss == -2.5
    assert np.mean([loss, LazyScalar(np.asarray(0.5))]) == 1.5 and np.isfinite(loss)
    assert Handle.reads == 1 and loss.ready


def test_copy_back_reads_cupy_like_arrays_through_get():
    class DeviceArray:
        def get(self):
            return np.arange(3, dtype=np.float32)

    target = np.zeros(3, dtype=np.float32)
    _copy_back(target, DeviceArray())
    np.testing.assert_array_equal(target, [0, 1, 2])
    _copy_back(target, np.ones(3, dtype=np.float32))
    np.testing.assert_array_equal(target, [1, 1, 1])
