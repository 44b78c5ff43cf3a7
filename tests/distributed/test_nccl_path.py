"""The NCCL path (``kiln.distributed.init("nccl")``) on 2 MPI ranks, on stand-ins for CuPy and NCCL
(``fake_nccl.py``: NCCL's calls carried out by MPI on the memory at the addresses they are given).

What this covers without GPUs: the unique id's broadcast, the communicator's pointers, counts, dtype and op
enums, device arrays reaching NCCL with no host round trip on the CuPy backend, results coming back to the
NumPy backend, and the pipeline's sends and receives, all checked by training to the single-process result;
and the CuPy backend over MPI, whose comm operands go through host copies.
What it cannot cover is NCCL itself and the GPU kernels (benchmarks/gpu_check.sh on GPUs).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dist_models import train_single
from mpi_launch import assert_ran, run_mpi


@pytest.fixture(scope="module")
def nccl_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nccl")
    result = run_mpi("nccl_worker.py", str(out), timeout=120)
    assert_ran(result)
    return out


def _assert_parameters(saved, reference, names, what: str) -> None:
    np.testing.assert_allclose(saved["losses"], reference["losses"], rtol=1e-9, err_msg=f"{what}: losses")
    for name in names:
        np.testing.assert_allclose(saved[name], reference[name], rtol=1e-9, atol=1e-12, err_msg=f"{what}: {name}")


@pytest.mark.parametrize(("optimizer", "backend", "transport"), [
    ("sgd", "cupy", "nccl"), ("adam", "cupy", "nccl"), ("sgd", "numpy", "nccl"), ("adam", "cupy", "mpi"),
])
def test_data_parallel_matches_one_process_with_the_full_batch(nccl_run, optimizer, backend, transport):
    reference = train_single(optimizer, "float64")
    ranks = [np.load(nccl_run / f"dp_{optimizer}_{backend}_{transport}_rank{r}.npz") for r in (0, 1)]
    _assert_parameters(ranks[0], reference, set(reference) - {"losses"}, f"{optimizer} on {backend} over {transport}")
    for name in ranks[0].files:
        np.testing.assert_array_equal(ranks[0][name], ranks[1][name], err_msg=f"ranks disagree on {name}")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_pipeline_over_nccl_matches_gradient_accumulation(nccl_run, optimizer):
    reference = train_single(optimizer, "float64", accumulate=4)
    for rank in (0, 1):
        saved = np.load(nccl_run / f"pp_{optimizer}_rank{rank}.npz")
        _assert_parameters(saved, reference, set(saved.files) - {"losses"}, f"pipeline {optimizer} rank {rank}")


def test_nccl_moves_device_arrays_and_every_kind_of_call_ran(nccl_run):
    for rank in (0, 1):
        calls = json.loads((nccl_run / f"calls_rank{rank}.json").read_text())
        assert calls["allreduce_operands"] == {"cupy": ["DeviceArray"], "numpy": ["ndarray"]}, "CuPy's gradients stay on the device"
        assert {"allReduce", "bcast", "send", "recv"} <= set(calls["nccl"]), calls


def test_nccl_without_the_library_is_a_clear_error(monkeypatch):
    """CuPy imports without NCCL (``cupy.cuda.nccl.available`` is False and its calls are missing)."""
    import fake_nccl
    from kiln.distributed import DistributedError, NCCLCommunicator
    from one_rank import OneRankMPI

    cupy = fake_nccl.install(monkeypatch)
    cupy.cuda.nccl.available = False
    with pytest.raises(DistributedError, match="no NCCL library: pip install nvidia-nccl-cu12"):
        NCCLCommunicator(comm=OneRankMPI())


class _NodeSplitComm:
    """World rank ``world_rank`` of a job whose ranks sit ``per_node`` to a node round-robin (``mpiexec --map-by
    node``): world ranks 0, 2, 4, 6 on node 0 of two nodes. ``Split_type`` answers as MPI's shared-memory split."""

    def __init__(self, world_rank: int, nodes: int):
        self.world_rank, self.nodes, self.freed = world_rank, nodes, False

    def Get_rank(self):
        return self.world_rank

    def Get_size(self):
        return 8

    def Split_type(self, split_type, key=0):
        from mpi4py import MPI

        assert split_type == MPI.COMM_TYPE_SHARED and key == self.world_rank
        return _NodeComm(self, self.world_rank // self.nodes)

    def Bcast(self, buffer, root=0):
        pass


class _NodeComm:
    def __init__(self, world: _NodeSplitComm, rank: int):
        self.world, self.rank = world, rank

    def Get_rank(self):
        return self.rank

    def Free(self):
        self.world.freed = True


@pytest.mark.parametrize(("world_rank", "device"), [(0, 0), (2, 1), (5, 2), (7, 3)])
def test_each_rank_takes_its_nodes_gpu_by_its_rank_on_the_node(monkeypatch, world_rank, device):
    """Two nodes of four GPUs, ranks placed round-robin: world rank 2 is node 0's second rank, so GPU 1 (``rank % 4``
    would give GPU 2, which world rank 4 also takes)."""
    import fake_nccl
    from kiln.distributed import NCCLCommunicator

    cupy = fake_nccl.install(monkeypatch)
    chosen = []
    monkeypatch.setattr(cupy.cuda, "runtime", type("Runtime", (), {"getDeviceCount": staticmethod(lambda: 4)}))
    monkeypatch.setattr(cupy.cuda, "Device", lambda index: type("Device", (), {"use": lambda self: chosen.append(index)})())
    monkeypatch.setattr(cupy.cuda.nccl, "NcclCommunicator", lambda size, unique_id, rank: (size, rank))
    comm = _NodeSplitComm(world_rank, nodes=2)
    communicator = NCCLCommunicator(comm=comm)
    assert chosen == [device] and comm.freed
    assert communicator.nccl_comm == (8, world_rank)
