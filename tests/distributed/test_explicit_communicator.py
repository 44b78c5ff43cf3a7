"""A step's collectives run on the communicator its wrapper or layers were given, not on whatever ``init``/``use``
set (or on nothing, when distributed mode was never started)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.distributed as dist
import kiln.nn as nn
import kiln.nn.functional as F
from one_rank import OneRank


@pytest.fixture
def no_current_communicator():
    dist.shutdown()
    yield
    dist.shutdown()


def _batch():
    rng = np.random.default_rng(0)
    return rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 2, 8)


def _sgd_step(model):
    return kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))


def _split_mlp(comm):
    return nn.Sequential(dist.ColumnParallelLinear(4, 6, comm=comm), nn.ReLU(), dist.RowParallelLinear(6, 2, comm=comm))


def test_data_parallel_runs_its_allreduce_on_the_communicator_it_was_given(no_current_communicator):
    comm = OneRank(size=2)  # one rank inserts no allreduce
    step = dist.DataParallel(_sgd_step(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))), comm=comm)
    assert np.isfinite(step(*_batch())) and "allreduce mean" in comm.calls and not dist.is_initialized()


def test_tensor_parallel_layers_run_their_collectives_on_their_communicator(no_current_communicator):
    comm = OneRank()
    assert np.isfinite(_sgd_step(_split_mlp(comm))(*_batch())) and "allreduce sum" in comm.calls and not dist.is_initialized()


def test_fit_evaluates_a_tensor_parallel_model_on_its_layers_communicator(no_current_communicator):
    from kiln.runtime.data import ArrayDataset, DataLoader

    step = _sgd_step(_split_mlp(OneRank()))
    x, y = _batch()
    history = kiln.fit(step, DataLoader(ArrayDataset(x, y), batch_size=4, prefetch=0), epochs=1,
                       eval_loader=DataLoader(ArrayDataset(x, y), batch_size=4, prefetch=0), progress=False)
    assert np.isfinite(history.epochs[-1]["val_loss"]) and not dist.is_initialized()


def test_mpi_collectives_keep_a_0_d_operand_0_d():
    """``np.ascontiguousarray`` makes a 0-d array 1-d; a comm op on a scalar (a loss, a counter) must stay a scalar."""
    from one_rank import OneRankMPI

    comm = dist.MPICommunicator(comm=OneRankMPI())
    assert comm.allreduce(np.array(3.0), "sum").shape == () and comm.allreduce(np.array(3.0), "mean").shape == ()
