"""``DistributedDataParallel`` inside a ``kiln.compile(fullgraph=True)``'d training step on 2 MPI ranks
(compiled_ddp_worker.py), against one process with the full batch in float64: the step's graph averages the gradients
with one ``comm.allreduce`` per bucket and broadcasts rank 0's buffers at every call, as the eager wrapper does after
each backward and before each forward. Before, the compiled step called neither: each rank stepped on its own
gradients and the ranks' parameters drifted apart silently."""

from __future__ import annotations

import pytest

from mpi_launch import assert_ran, run_mpi
from test_eager_ddp import assert_accumulated_as_one_process, assert_ranks_trained_as_one_process


@pytest.fixture(scope="module")
def compiled_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compiled_ddp")
    result = run_mpi("compiled_ddp_worker.py", str(out), timeout=180)
    assert_ran(result)
    return out, result.stdout


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_two_ranks_in_a_compiled_step_train_as_one_process_with_the_full_batch(compiled_run, name):
    assert_ranks_trained_as_one_process(compiled_run[0], name)


def test_the_step_holds_one_allreduce_per_bucket(compiled_run):
    _, stdout = compiled_run
    # the worker's 4 KiB buckets over fc1.weight (5120 bytes), fc1.bias (256), fc2.weight (8192), fc2.bias, fc3.weight
    # (6144), then fc3.bias + fc4.weight + fc4.bias (1192): a weight past the cap goes alone, as torch's buckets
    for rank in (0, 1):
        assert f"rank {rank}: 6 allreduces in the step" in stdout


def test_no_sync_in_compiled_backwards_accumulates_locally_then_averages(compiled_run):
    assert_accumulated_as_one_process(compiled_run[0])


def test_buffers_are_broadcast_at_every_compiled_call_as_eagerly(compiled_run):
    _, stdout = compiled_run
    for rank in (0, 1):
        assert f"rank {rank}: BatchNorm compiled matches eager: True" in stdout
