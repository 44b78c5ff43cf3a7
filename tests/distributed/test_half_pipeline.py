"""A float16 model split over 2 ranks by ``PipelineParallel`` (4 micro-batches) trains as one process with gradient
accumulation does: losses and each rank's stage bit for bit (the half updates are written out after
``pipeline-split``, which looks for the ``optim.*`` ops; the lr is fed as the graph's float64 input)."""

from __future__ import annotations

import numpy as np
import pytest

from dist_models import train_single
from mpi_launch import assert_ran, run_mpi

STEPS = 5


@pytest.fixture(scope="module")
def half_pipeline_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("half_pipeline")
    assert_ran(run_mpi("pp_parity_worker.py", str(out), "float16", str(STEPS), timeout=90))
    return out


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_float16_pipeline_matches_gradient_accumulation(half_pipeline_run, optimizer):
    reference = train_single(optimizer, "float16", accumulate=4, steps=STEPS)
    for rank in (0, 1):
        saved = np.load(half_pipeline_run / f"{optimizer}_rank{rank}.npz")
        np.testing.assert_array_equal(saved["losses"], reference["losses"])
        names = set(saved.files) - {"losses", "parameter_bytes", "state_params"}
        assert names
        for name in names:
            assert saved[name].dtype == np.float16
            np.testing.assert_array_equal(saved[name], reference[name], err_msg=f"rank {rank} {name}")
