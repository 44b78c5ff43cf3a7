"""``kiln.set_float32_matmul_precision`` reaches the CuPy backend (on the NumPy stand-in): a backend made after
``"high"`` or ``"medium"`` compiles with TF32 on, so its float32 GEMMs reach cuBLAS with the TF32 compute type; after
``"highest"`` (the default) they use full float32. ``CupyBackend(tf32=)`` and ``KILN_CUPY_TF32`` still decide where
given."""

from __future__ import annotations

import numpy as np
import pytest

import fake_cublas
import kiln
from kiln.backends.cupy import CupyBackend
from kiln.compiler.ir import Builder, DType, Graph, TensorType


@pytest.fixture(autouse=True)
def default_precision(monkeypatch):
    monkeypatch.delenv("KILN_CUPY_TF32", raising=False)
    yield
    kiln.set_float32_matmul_precision("highest")


def _batched_matmul_graph() -> Graph:
    graph = Graph("bmm")
    a = graph.add_input(TensorType((2, 3, 4), DType.f32), "a")
    b = graph.add_input(TensorType((2, 4, 5), DType.f32), "b")
    graph.outputs = [Builder(graph).op("tensor.matmul", a, b)]
    return graph


def _compute_type_of_a_compiled_matmul(backend: CupyBackend) -> int:
    executable = backend.compile(_batched_matmul_graph())
    fake_cublas.CALLS.clear()
    rng = np.random.default_rng(0)
    (product,) = executable(rng.normal(size=(2, 3, 4)).astype(np.float32), rng.normal(size=(2, 4, 5)).astype(np.float32))
    assert np.asarray(product).shape == (2, 3, 5)
    (call,) = fake_cublas.CALLS
    return call["compute"]


@pytest.mark.parametrize(("precision", "compute"), [
    ("highest", fake_cublas.CUBLAS_COMPUTE_32F),
    ("high", fake_cublas.CUBLAS_COMPUTE_32F_FAST_TF32),
    ("medium", fake_cublas.CUBLAS_COMPUTE_32F_FAST_TF32),
])
def test_compiles_after_the_call_follow_the_precision(fake, precision, compute):
    kiln.set_float32_matmul_precision(precision)
    backend = CupyBackend()
    assert backend.tf32 is (precision != "highest")
    assert _compute_type_of_a_compiled_matmul(backend) == compute


def test_the_default_stays_full_float32_and_highest_turns_tf32_off_again(fake):
    assert kiln.get_float32_matmul_precision() == "highest"
    assert _compute_type_of_a_compiled_matmul(CupyBackend()) == fake_cublas.CUBLAS_COMPUTE_32F
    kiln.set_float32_matmul_precision("high")
    assert _compute_type_of_a_compiled_matmul(CupyBackend()) == fake_cublas.CUBLAS_COMPUTE_32F_FAST_TF32
    kiln.set_float32_matmul_precision("highest")
    assert _compute_type_of_a_compiled_matmul(CupyBackend()) == fake_cublas.CUBLAS_COMPUTE_32F


def test_the_argument_and_the_environment_variable_come_first(fake, monkeypatch):
    kiln.set_float32_matmul_precision("high")
    assert _compute_type_of_a_compiled_matmul(CupyBackend(tf32=False)) == fake_cublas.CUBLAS_COMPUTE_32F
    monkeypatch.setenv("KILN_CUPY_TF32", "0")
    assert CupyBackend().tf32 is False
    kiln.set_float32_matmul_precision("highest")
    monkeypatch.setenv("KILN_CUPY_TF32", "1")
    assert CupyBackend().tf32 is True
    assert _compute_type_of_a_compiled_matmul(CupyBackend(tf32=True)) == fake_cublas.CUBLAS_COMPUTE_32F_FAST_TF32


def test_kiln_compile_for_cupy_reads_the_setting_at_compile_time(fake):
    """``kiln.compile(fn, backend="cupy")`` makes its backend when it first compiles: a setting before that call counts."""
    compiled = kiln.compile(lambda a, b: a @ b, backend="cupy", batch_dim=None)
    kiln.set_float32_matmul_precision("medium")
    fake_cublas.CALLS.clear()
    compiled(np.ones((2, 3, 4), np.float32), np.ones((2, 4, 5), np.float32))
    assert [call["compute"] for call in fake_cublas.CALLS] == [fake_cublas.CUBLAS_COMPUTE_32F_FAST_TF32]
