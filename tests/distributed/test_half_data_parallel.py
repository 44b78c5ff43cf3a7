"""Data parallelism of a float16 or bfloat16 model on 2 MPI ranks: the start-up broadcast and the bucketed gradient
allreduce move half arrays (bfloat16 as its 16-bit patterns: MPI has no bfloat16 type; the sum in float32, rounded
once), so both ranks end with the same parameters, those of one process on the full batch up to half rounding (each
rank's gradient is rounded to half before the average, the full batch's once)."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.compiler.ir.types import DType

from dist_models import STEPS, train_single
from mpi_launch import assert_ran, run_mpi


@pytest.fixture(scope="module")
def half_data_parallel_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("half_data_parallel")
    assert_ran(run_mpi("dp_half_worker.py", str(out), timeout=90))
    return out


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_two_ranks_on_half_batches_train_as_one_process_up_to_half_rounding(half_data_parallel_run, dtype):
    half = DType.of(dtype).numpy
    ranks = [np.load(half_data_parallel_run / f"{dtype}_rank{rank}.npz") for rank in (0, 1)]
    reference = train_single("sgd", dtype, steps=STEPS)
    np.testing.assert_array_equal(ranks[0]["losses"], ranks[1]["losses"])
    eps = float(np.finfo(np.float16).eps if dtype == "float16" else 2.0**-7)
    np.testing.assert_allclose(ranks[0]["losses"], reference["losses"], rtol=4 * eps)
    for name, want in reference.items():
        if name == "losses":
            continue
        got = [saved[name].view(half) for saved in ranks]
        np.testing.assert_array_equal(got[0].view(np.uint16), got[1].view(np.uint16), err_msg=f"{name}: the ranks differ")
        scale = np.abs(want.astype(np.float64)).max()
        np.testing.assert_allclose(got[0].astype(np.float64), want.astype(np.float64), rtol=0, atol=8 * eps * scale, err_msg=name)
