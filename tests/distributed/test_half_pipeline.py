"""A float16 or bfloat16 model split over 2 ranks by ``PipelineParallel`` (4 micro-batches) trains as one process with
gradient accumulation does: losses and each rank's stage bit for bit (the half updates are written out after
``pipeline-split``, which looks for the ``optim.*`` ops; the lr is fed as the graph's float64 input). bfloat16
activations and gradients cross MPI as their 16-bit patterns (MPI has no bfloat16 type)."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.compiler.ir.types import DType

from dist_models import train_single
from mpi_launch import assert_ran, run_mpi

STEPS = 5


@pytest.fixture(scope="module", params=["float16", "bfloat16"])
def half_pipeline_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"half_pipeline_{request.param}")
    assert_ran(run_mpi("pp_parity_worker.py", str(out), request.param, str(STEPS), timeout=90))
    return out, request.param


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_half_pipeline_matches_gradient_accumulation(half_pipeline_run, optimizer):
    out, dtype = half_pipeline_run
    reference = train_single(optimizer, dtype, accumulate=4, steps=STEPS)
    for rank in (0, 1):
        saved = np.load(out / f"{optimizer}_rank{rank}.npz")
        np.testing.assert_array_equal(saved["losses"], reference["losses"])
        names = set(saved.files) - {"losses", "parameter_bytes", "state_params"}
        assert names
        for name in names:  # np.savez keeps a half array's 2 bytes an element (bfloat16's as an opaque 'V2')
            assert saved[name].dtype.itemsize == 2 and reference[name].dtype == DType.of(dtype).numpy
            np.testing.assert_array_equal(saved[name].view(np.uint16), reference[name].view(np.uint16), err_msg=f"rank {rank} {name}")
