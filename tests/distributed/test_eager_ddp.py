"""Eager ``DistributedDataParallel`` on 2 MPI ranks (eager_ddp_worker.py) against one process with the full batch,
in float64: SGD and Adam loops, ``no_sync`` gradient accumulation, and the torch.distributed-style collectives."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from dist_models import BATCH, dataset, make_model, make_optimizer
from mpi_launch import assert_ran, run_mpi


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("eager_ddp")
    result = run_mpi("eager_ddp_worker.py", str(out), timeout=120)
    assert_ran(result)
    return out, result.stdout


def _one_process(name):
    x, y = dataset(steps=6, dtype="float64")
    model = make_model(seed=0, dtype="float64")
    optimizer = make_optimizer(name, model)
    losses = []
    for start in range(0, len(x), BATCH):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(kiln.tensor(x[start:start + BATCH])), kiln.tensor(y[start:start + BATCH]))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model, np.array(losses)


def assert_ranks_trained_as_one_process(out, name):
    """Both ranks' saved ``{name}_rank{r}.npz`` (half of every batch each): their mean losses and each one's
    parameters those of one process with the full batch."""
    model, losses = _one_process(name)
    ranks = [np.load(out / f"{name}_rank{r}.npz") for r in (0, 1)]
    np.testing.assert_allclose((ranks[0]["losses"] + ranks[1]["losses"]) / 2, losses, rtol=1e-12)
    for key, value in model.state_dict().items():
        for saved in ranks:
            np.testing.assert_allclose(saved[key], value, rtol=1e-10, atol=1e-13)


def assert_accumulated_as_one_process(out):
    """Both ranks' saved ``accumulated_rank{r}.npz`` (two quarters of the first batch each, the first under
    ``no_sync``): the gradient of one process's full first batch."""
    x, y = dataset(steps=6, dtype="float64")
    model = make_model(seed=0, dtype="float64")
    F.cross_entropy(model(kiln.tensor(x[:BATCH])), kiln.tensor(y[:BATCH])).backward()
    for saved in (np.load(out / f"accumulated_rank{r}.npz") for r in (0, 1)):
        for name, parameter in model.named_parameters():
            np.testing.assert_allclose(saved[name], parameter.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_two_ranks_with_half_batches_train_as_one_process_with_the_full_batch(ddp_run, name):
    assert_ranks_trained_as_one_process(ddp_run[0], name)


def test_no_sync_accumulates_locally_and_the_next_backward_averages_the_sum(ddp_run):
    assert_accumulated_as_one_process(ddp_run[0])


def test_collectives_and_state_dict_names_follow_torch(ddp_run):
    _, stdout = ddp_run
    for rank in (0, 1):
        assert f"rank {rank}: all_reduce [3.0, 10.0] broadcast [1.0, 1.0, 1.0] state module.fc1.weight" in stdout
        assert f"rank {rank}: all_reduce of p.grad doubled it: True" in stdout
