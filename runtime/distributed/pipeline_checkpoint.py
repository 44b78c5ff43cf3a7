"""Checkpoints of a ``PipelineParallel``: one file in ``TrainStep.save``'s format, gathered on rank 0.

```python
pipe.save("run.npz")    # every rank calls it: the stages' state goes to rank 0, which writes the file
pipe.load("run.npz")    # every rank calls it: rank 0 reads the file and broadcasts it; each rank keeps its stage
step.load("run.npz")    # a single-process TrainStep of the same model and optimizer resumes from it too
```

Each rank holds the newest values only of its stage's parameters, their
optimizer state and the buffers its stage updates. ``gather_state`` finds,
for every entry of ``model.state_dict()``, the lowest rank that holds it (one
allreduce), moves each entry and its optimizer state from that rank to rank 0
in one fixed order (point to point, so rank 0 alone holds the whole state),
and rank 0 writes ``{"model": ..., "optimizer": ...}`` with
``kiln.runtime.checkpoint.save``: a temporary file, fsync, rename, so a
failed save leaves the previous file whole. The file does not depend on the
stage count: ``load`` gives every rank the whole state (rank 0 reads the
bytes and broadcasts them, so the ranks need no shared file system), every
rank checks it alike (a mismatch raises the same ``CheckpointError`` on all
ranks; none is left waiting), and each rank then keeps the optimizer state of
its own stage only: at once when the pipeline has compiled, else when it
compiles, so until the first step after a load every rank briefly holds all
of it.

Two transfers here serve the other distributed checkpoints too:
``move_to_rank0`` (one array from its owner to rank 0; tensor parallelism
joins its shards with it) and ``read_on_rank0`` (a file's bytes read by rank 0
and broadcast, so only rank 0 needs to see the file).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from kiln.runtime import checkpoint
from kiln.runtime.distributed.communicator import Communicator, broadcast_arrays, on_rank0, to_host
from kiln.runtime.train_step import parameter_names

if TYPE_CHECKING:
    from kiln.runtime.distributed.pipeline_parallel import PipelineParallel

GATHER_TAG = 16384
"""The tag of the checkpoint transfers (no step is in flight while they run; MPI keeps one sender's messages in order)."""
CHUNK_BYTES = 2**30
"""The file is broadcast in pieces of at most this many bytes (MPI counts are 32-bit)."""


def save(pipe: "PipelineParallel", path: str | os.PathLike) -> None:
    """Gather the whole training state on rank 0 and write it there atomically; every rank raises if the write failed."""
    tree = gather_state(pipe)
    on_rank0(pipe.comm, lambda: checkpoint.save(path, tree), f"write {os.fspath(path)}")


def load(pipe: "PipelineParallel", path: str | os.PathLike) -> None:
    """Read ``path`` on rank 0, broadcast it, and load it on every rank (``pipe.load_state_dict``)."""
    pipe.load_state_dict(load_on_rank0(pipe.comm, path))


def load_on_rank0(comm: Communicator, path: str | os.PathLike) -> Any:
    """``checkpoint.load(path)`` on every rank, rank 0 reading the file for all (``read_on_rank0``)."""
    return checkpoint.loads(memoryview(read_on_rank0(comm, os.fspath(path))), os.fspath(path))


def gather_state(pipe: "PipelineParallel") -> dict[str, Any] | None:
    """``TrainStep.state_dict()`` of the whole model on rank 0, ``None`` on the other ranks; every rank must call it."""
    comm, model, optimizer = pipe.comm, pipe.model, pipe.optimizer
    owners = entry_owners(pipe)
    model_state = {name: move_to_rank0(comm, owners[name], lambda a=array: a, array) for name, array in model.state_dict().items()}
    names = parameter_names(model)
    stage_states = _other_stages_optimizer_state(pipe, owners, names)
    if comm.rank != 0:
        return None
    optimizer_state = optimizer.kiln_state_dict(names)  # rank 0's own stage, the groups and the step counter
    merged = optimizer_state["state"] | stage_states
    optimizer_state["state"] = {key: merged[key] for key in (names.get(id(p)) for p in optimizer.parameters()) if key in merged}
    return {"model": model_state, "optimizer": optimizer_state}


def _other_stages_optimizer_state(pipe: "PipelineParallel", owners: dict[str, int], names: dict[int, str]) -> dict[str, Any]:
    """On rank 0, ``{parameter name: {state name: array}}`` of the parameters other ranks train, sent by them."""
    comm, optimizer = pipe.comm, pipe.optimizer
    gathered = {}
    for param in optimizer.parameters():
        name = names.get(id(param))
        owner = owners.get(name, 0) if name is not None else 0
        if owner != 0:  # optimizer state has its parameter's dtype, and its shape unless factored (Optimizer.state_shape)
            state_names = optimizer.param_state_names(param, optimizer.group_of(param))
            gathered[name] = {key: move_to_rank0(comm, owner, lambda p=param, k=key: optimizer.state_of(p)[k],
                                                 np.empty(optimizer.state_shape(param, key), param.data.dtype)) for key in state_names}
    return gathered


def entry_owners(pipe: "PipelineParallel") -> dict[str, int]:
    """Per ``model.state_dict()`` name, the lowest rank holding its newest value; 0 for what no stage updates."""
    comm = pipe.comm
    entries = [*pipe.model.named_parameters(), *pipe.model.named_buffers()]
    held = {id(p) for p in pipe.local + pipe.local_buffers}
    claims = np.array([comm.rank if id(p) in held else comm.size for _, p in entries], dtype=np.int64)
    lowest = to_host(comm.allreduce(claims, "min"))
    return {name: int(rank) if rank < comm.size else 0 for (name, _), rank in zip(entries, lowest)}


def move_to_rank0(comm: Communicator, owner: int, read: Callable[[], np.ndarray], like: np.ndarray) -> np.ndarray | None:
    """Rank ``owner``'s array on rank 0 (shape and dtype of ``like``), ``None`` on the other ranks; every rank calls it.

    ``read`` runs on the owner only, which sends the result to rank 0 point to point (``GATHER_TAG``); rank 0, when it
    owns the array, reads it itself. Call it in the same order on every rank: MPI keeps one sender's messages in order.
    """
    if owner == 0:
        return read() if comm.rank == 0 else None
    if comm.rank == owner:
        comm.send(read(), 0, GATHER_TAG)
    elif comm.rank == 0:
        return to_host(comm.recv(like.shape, like.dtype, owner, GATHER_TAG))
    return None


def read_on_rank0(comm: Communicator, path: str) -> np.ndarray:
    """The bytes of the file ``path`` on every rank (``uint8``): rank 0 reads them, then broadcasts the length and the
    bytes in pieces of at most ``CHUNK_BYTES``, so only rank 0 needs to see the file. Every rank calls it; if rank 0
    cannot read the file, it raises its own error (``FileNotFoundError``...) and the other ranks ``DistributedError``."""
    content = np.empty(0, np.uint8)

    def read() -> None:
        nonlocal content
        content = np.fromfile(path, dtype=np.uint8)

    on_rank0(comm, read, f"read {path}")
    length = np.array([content.size], dtype=np.int64)
    broadcast_arrays([length], root=0, comm=comm)
    if comm.rank != 0:
        content = np.empty(int(length[0]), np.uint8)
    for start in range(0, content.size, CHUNK_BYTES):
        broadcast_arrays([content[start : start + CHUNK_BYTES]], root=0, comm=comm)
    return content
