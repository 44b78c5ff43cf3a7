"""The CuPy backend on a GPU: every op of the op table, the fused groups, and training parity with NumPy.

Without CuPy and a CUDA device every test here skips with one line saying why (``KILN_REQUIRE_GPU=1``, as
benchmarks/gpu_check.sh sets it, turns that skip into a failure).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import kiln

from cupy_groups import (GROUPS, HALF_GROUPS, HALF_ROW_OPS, HALF_TOLERANCE, LAYER_NORM_GRAD_CASES, LAYER_NORM_GRAD_TOLERANCE, assert_graph_matches_numpy,
                         assert_group_matches_numpy, half_rows, layer_norm_grad, random_inputs)
from cupy_models import MODELS, batch_in, comparable, step_for
from gemm_layouts import LAYOUTS
from kiln.backends.cupy import CupyBackend, device_problem, kernel_plan
from kiln.compiler.ir import DType
from kiln.compiler.passes import chunk_causal_attention
from kiln.runtime.lazy import LazyScalar
from ops.op_table import cases, concrete, make_inputs, op_graph, reference, size_bindings

PROBLEM = device_problem()
if PROBLEM and os.environ.get("KILN_REQUIRE_GPU") == "1":
    raise RuntimeError(f"KILN_REQUIRE_GPU=1 but the cupy backend cannot run: {PROBLEM}")
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"needs a GPU: {PROBLEM}")

TOLERANCES = {np.dtype("float32"): {"rtol": 2e-5, "atol": 2e-5}, np.dtype("float64"): {"rtol": 1e-10, "atol": 1e-10}}
STEPS = 50
# Tests run in file order: the training parity and runtime tests first, the ~1500 op-table cases last, so a device
# check that runs out of time has still run the tests that say most.


@pytest.mark.parametrize("stem", sorted(GROUPS))
def test_fused_groups_match_numpy(stem):
    assert_group_matches_numpy(stem, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("x_shape", "weight_shape"), LAYER_NORM_GRAD_CASES, ids=["two-rows-a-block", "two-axis-weight", "empty"])
@pytest.mark.parametrize("dtype", [DType.f32, DType.f64])
def test_layer_norm_grad_matches_numpy(x_shape, weight_shape, dtype):
    tolerance = LAYER_NORM_GRAD_TOLERANCE[dtype]
    assert_graph_matches_numpy(layer_norm_grad(x_shape, weight_shape, dtype), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_training_matches_numpy_for_50_steps(name):
    runs = {}
    for backend in ("numpy", "cupy"):
        model, step, rng = step_for(name, backend)
        losses = [float(step(*MODELS[name][1](rng))) for _ in range(STEPS)]
        runs[backend] = (losses, comparable({k: v.copy() for k, v in model.state_dict().items()}))
    np.testing.assert_allclose(runs["cupy"][0], runs["numpy"][0], rtol=2e-3, atol=1e-4)
    for key, value in runs["numpy"][1].items():
        np.testing.assert_allclose(runs["cupy"][1][key], value, rtol=2e-3, atol=2e-4, err_msg=key)


HALF_STEPS = 10


def test_f16_training_matches_numpy_for_10_steps():
    """The MLP in float16 (``model.half()``, float16 batches): every op computed in float32 and rounded to half on
    both sides, so the two differ only where a float32 result (cuBLAS's summation order against OpenBLAS's, CUDA's
    ``expf`` against NumPy's) rounds to the neighbouring half: a float16 ulp here and there (HALF_TOLERANCE: 2**-9
    relative). A float16 accumulation in cuBLAS (K = 784) or a missed rounding would be off by several ulps."""
    runs = {}
    for backend in ("numpy", "cupy"):
        model, step, rng = step_for("mlp", backend, dtype=kiln.float16)
        losses = [float(step(*batch_in("mlp", rng, kiln.float16))) for _ in range(HALF_STEPS)]
        runs[backend] = (losses, {k: v.copy() for k, v in model.state_dict().items()})
    assert np.isfinite(runs["cupy"][0]).all() and all(v.dtype == np.float16 for v in runs["cupy"][1].values())
    np.testing.assert_allclose(runs["cupy"][0], runs["numpy"][0], **HALF_TOLERANCE)
    for key, value in runs["numpy"][1].items():
        np.testing.assert_allclose(runs["cupy"][1][key], value, **HALF_TOLERANCE, err_msg=key)


@pytest.mark.parametrize("stem", sorted(HALF_GROUPS))
def test_f16_fused_groups_match_numpy(stem):
    assert_graph_matches_numpy(HALF_GROUPS[stem](), **HALF_TOLERANCE)


@pytest.mark.parametrize("name", HALF_ROW_OPS)
def test_f16_row_kernels_match_numpy(name):
    assert_graph_matches_numpy(half_rows(name), **HALF_TOLERANCE)


@pytest.mark.parametrize("shape", [((64, 4096), (4096, 64)), ((3, 64, 4096), (3, 4096, 64))], ids=["2-d", "batched"])
def test_f16_matmul_accumulates_in_float32(shape):
    """4096 products of about 0.25 summed: a float16 accumulator (10 bits) would be off by about 2**-11 relative per
    addition once the sum passes 512; cuBLAS with CUBLAS_COMPUTE_32F rounds only the float32 sum."""
    import cupy

    from kiln.backends.cupy.gemm import batched_matmul

    rng = np.random.default_rng(0)
    a, b = (rng.random(s, dtype=np.float32).astype(np.float16) for s in shape)
    want = (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float16)
    got = cupy.asnumpy(batched_matmul(cupy, cupy.asarray(a), cupy.asarray(b)))
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=2.0 ** -10, atol=0)


def test_chunked_causal_attention_matches_numpy_for_50_steps(monkeypatch):
    monkeypatch.setattr(chunk_causal_attention, "CAUSAL_CHUNK", 3)  # the tiny GPT's 8 positions in query chunks of 3, 3 and 2
    test_training_matches_numpy_for_50_steps("gpt")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_batched_matmul_reads_each_layout_as_cupy_matmul_computes_it(name, dtype):
    import cupy

    from kiln.backends.cupy.gemm import batched_matmul

    a, b = LAYOUTS[name][0](cupy, np.random.default_rng(0), dtype)
    np.testing.assert_allclose(cupy.asnumpy(batched_matmul(cupy, a, b)), cupy.asnumpy(cupy.matmul(a, b)), **TOLERANCES[np.dtype(dtype)])


def test_step_returns_a_lazy_loss_and_keeps_parameters_on_the_device():
    model, step, rng = step_for("mlp", "cupy")
    loss = step(*MODELS["mlp"][1](rng))
    assert isinstance(loss, LazyScalar) and np.isfinite(float(loss))
    executable = list(step.compiled.values())[-1].executable
    assert executable.resident, "donated parameters stay on the device"
    before = next(iter(model.parameters())).data.copy()  # reading .data syncs
    step(*MODELS["mlp"][1](rng))
    assert not np.array_equal(next(iter(model.parameters())).data, before)


def test_executable_lists_the_kernels_it_launches():
    _, step, rng = step_for("mlp", "cupy")
    step(*MODELS["mlp"][1](rng))
    executable = list(step.compiled.values())[-1].executable
    assert executable.kernels == kernel_plan(executable.graph) and len(executable.kernels) <= 30


def test_tf32_option_compiles_and_stays_close():
    graph = GROUPS["matmul_epilogue"]()
    arrays = random_inputs(graph)
    (strict,), (tf32,) = CupyBackend(tf32=False).compile(graph)(*arrays), CupyBackend(tf32=True).compile(graph)(*arrays)
    CupyBackend(tf32=False).compile(graph)  # back to full float32 for later tests
    np.testing.assert_allclose(tf32, strict, rtol=2e-2)


def test_labels_outside_the_classes_raise_before_the_step_from_the_host_and_when_read_from_the_device():
    import cupy

    from kiln.compiler.errors import InputError

    _, step, rng = step_for("mlp", "cupy")
    x, y = MODELS["mlp"][1](rng)
    y[7] = 10
    with pytest.raises(InputError, match=r"label 10 at \(7,\)"):
        step(x, y)
    loss = step(x, cupy.asarray(y))
    with pytest.raises(InputError, match=r"label 10 at \(7,\)"):
        float(loss)


def test_data_parallel_over_nccl_on_one_gpu_matches_the_plain_step():
    """The real NCCL calls (unique id, communicator, allreduce and broadcast on device pointers) with one rank: the
    device machine has one GPU, and NCCL puts one rank on a GPU. DataParallel over it (one rank: no gradient
    allreduce in the graph) equals the plain step. The two-rank logic is tested on stand-ins
    (tests/distributed/test_nccl_path.py)."""
    import kiln.distributed as dist
    from cupy.cuda import nccl
    from one_rank import OneRankMPI

    if not getattr(nccl, "available", True):
        pytest.skip("CuPy finds no NCCL library here (pip install nvidia-nccl-cu12 or -cu13)")
    comm = dist.use(dist.NCCLCommunicator(comm=OneRankMPI()))
    try:
        np.testing.assert_array_equal(comm.allreduce(np.arange(4.0), "sum").get(), np.arange(4.0))
        np.testing.assert_array_equal(comm.broadcast(np.arange(3, dtype=np.float32), 0).get(), np.arange(3, dtype=np.float32))
        runs = {}
        for wrapped in (False, True):
            model, step, rng = step_for("mlp", "cupy")
            step = dist.DataParallel(step, comm=comm) if wrapped else step
            runs[wrapped] = ([float(step(*MODELS["mlp"][1](rng))) for _ in range(5)], {k: v.copy() for k, v in model.state_dict().items()})
        np.testing.assert_allclose(runs[True][0], runs[False][0], rtol=1e-6)
        for key, value in runs[False][1].items():
            np.testing.assert_allclose(runs[True][1][key], value, rtol=1e-5, atol=1e-7, err_msg=key)
    finally:
        dist.shutdown()

@pytest.mark.parametrize(("row", "case", "dtype"), cases())
def test_forward_matches_reference_on_cupy(row, case, dtype):
    graph, _, result = op_graph(row, case, dtype)
    executable = CupyBackend().compile(graph)
    for sizes in size_bindings(case):
        arrays = make_inputs(row, case, dtype, sizes)
        expected = reference(row, case, arrays, sizes)
        (actual,) = executable(*arrays)
        assert concrete(result.type.shape, sizes) == np.shape(actual)
        assert np.asarray(actual).dtype == result.type.dtype.numpy
        if np.asarray(actual).dtype in TOLERANCES:
            np.testing.assert_allclose(actual, expected, **TOLERANCES[np.asarray(actual).dtype])
        else:
            np.testing.assert_array_equal(actual, expected)

