"""Training checkpoints: the step's state plus a manifest and a checksum, kept as a rolling set of files.

```python
manager = CheckpointManager("runs/digits", keep=3)
path = manager.save(step, {"epoch": 2, "batch": 10})   # runs/digits/checkpoint-00000130.npz
progress = manager.restore(step)                        # newest valid checkpoint -> step; returns the progress dict
```

Each file is written by ``kiln.runtime.checkpoint.save`` (NPZ, ``allow_pickle=False``,
temporary file + fsync + rename) and holds ``{"manifest": ..., "train": step.state_dict(),
"progress": ...}``. The manifest records the model and optimizer configuration, the update
count, the initialisation RNG state, the kiln version and a SHA-256 over everything else,
so a truncated file or a flipped byte is reported by name instead of resuming from garbage.
A new checkpoint gets a new name; older ones are pruned only after it is written and read
back, so the last good checkpoint is never lost.

A distributed step (``DataParallel``, ``PipelineParallel``, or a plain step whose model holds
tensor-parallel layers; see ``parallelism``) is checkpointed by rank 0 alone, and every rank
must call ``save``: a pipeline's ``state_dict()`` gathers the stages on rank 0 (a collective),
tensor-parallel shards are joined there into the unsplit layers, and if rank 0 fails to
write, every rank raises. Every rank restores from rank 0's file, and only rank 0 needs to see
the folder: rank 0 picks the newest valid checkpoint and broadcasts its update count
(``resume_point``), then reads the file and broadcasts its bytes; every rank verifies them
(manifest, checksum) alike, so a bad file raises the same error on all, and restores them
(a tensor-parallel rank keeps its shard).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np

from kiln.compiler.errors import CheckpointError
from kiln.frontend import init
from kiln.runtime import checkpoint

FORMAT = "kiln-training-checkpoint"
_NAME = re.compile(r"checkpoint-(\d+)\.npz$")


def kiln_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("kiln")
    except PackageNotFoundError:
        return "unknown"


def manifest_of(step: Any) -> dict[str, Any]:
    """What the checkpoint was made from: configuration, update count, RNG state, kiln version."""
    optimizer = step.optimizer
    return {
        "format": FORMAT,
        "kiln_version": kiln_version(),
        "model": {"class": type(step.model).__name__, "repr": repr(step.model)},
        "optimizer": {"class": type(optimizer).__name__, "defaults": dict(optimizer.defaults)},
        "step": int(optimizer.step_count),
        "step_options": {"seed": getattr(step, "seed", 0), "loss_scale": getattr(step, "loss_scale", None)},
        "rng": init.rng_state(),
    }


def save_training_checkpoint(path: str, step: Any, progress: Mapping[str, Any] | None = None,
                             state: Mapping[str, Any] | None = None) -> None:
    """Write ``step``'s state, its manifest, ``progress`` (JSON-like) and the checksum to ``path`` atomically.

    ``state``: the whole state when it was already gathered on rank 0 by every rank (``gathered_state``: a pipeline's
    stages, tensor-parallel shards).
    """
    train = step.state_dict() if state is None else state
    tree = {"manifest": manifest_of(step), "train": train, "progress": dict(progress or {})}
    tree["manifest"]["sha256"] = checksum(tree)
    checkpoint.save(path, tree)


def load_training_checkpoint(path: str, comm: Any = None) -> dict[str, Any]:
    """The verified tree at ``path``; ``CheckpointError`` names the file when it is missing, truncated or altered.

    ``comm``: a distributed step's communicator (``distributed_comm``; every rank calls this): rank 0 reads the file and
    broadcasts its bytes, so only rank 0 needs to see it, and every rank verifies those bytes alike.
    """
    tree = _read(path) if comm is None else _read_on_rank0(path, comm)
    manifest = tree.get("manifest") if isinstance(tree, dict) else None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a kiln file but not a training checkpoint (no {FORMAT!r} manifest); load it with kiln.runtime.checkpoint.load")
    expected = manifest.pop("sha256", None)
    if expected != checksum(tree):
        raise CheckpointError(f"{path} is corrupted: its SHA-256 does not match the one recorded when it was written; resume from an older checkpoint")
    return tree


def _read(path: str) -> Any:
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path} does not exist")
    return _parsed(path, lambda: checkpoint.load_arrays(path))


def _read_on_rank0(path: str, comm: Any) -> Any:
    """The tree of rank 0's file on every rank (the other ranks need not see it)."""
    from kiln.runtime.distributed.pipeline_checkpoint import read_on_rank0

    try:
        content = read_on_rank0(comm, path)
    except FileNotFoundError:  # rank 0's own error; the other ranks raise DistributedError, "rank 0 could not read ..."
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    return _parsed(path, lambda: checkpoint.loads(memoryview(content), path))


def _parsed(path: str, read: Callable[[], Any]) -> Any:
    try:
        return read()
    except CheckpointError:
        raise
    except Exception as error:  # a damaged zip can raise NotImplementedError, RuntimeError, zlib.error...
        raise CheckpointError(f"{path} is not a readable kiln checkpoint ({type(error).__name__}: {error}); resume from an older checkpoint") from error


def restore_training_checkpoint(path: str, step: Any, tree: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Load ``path`` into ``step`` (parameters, optimizer state, RNG, loss scale); returns the saved progress.

    A distributed step's ranks all call it, and rank 0 reads the file for them (``load_training_checkpoint``).
    ``tree``: the file's verified tree when it was already read (``load_training_checkpoint``), so it is not read twice.
    """
    tree = load_training_checkpoint(path, distributed_comm(step)) if tree is None else tree
    manifest = tree["manifest"]
    if manifest["optimizer"]["class"] != type(step.optimizer).__name__:
        raise CheckpointError(f"{path} was written by a {manifest['optimizer']['class']} optimizer, this step uses {type(step.optimizer).__name__}")
    try:
        step.load_state_dict(_own_part(step, tree["train"]))
    except Exception as error:  # a model or optimizer that does not fit the saved state: say which file
        raise CheckpointError(f"{path} does not fit this model/optimizer: {error}") from error
    init.set_rng_state(manifest["rng"])
    if manifest["step_options"].get("loss_scale") is not None:
        step.loss_scale = manifest["step_options"]["loss_scale"]
    return tree["progress"]


def checksum(tree: Any) -> str:
    """SHA-256 over every array (path, dtype, shape, bytes) and every scalar of ``tree``, in order."""
    digest = hashlib.sha256()
    _feed(digest, tree, "")
    return digest.hexdigest()


def _feed(digest: Any, node: Any, path: str) -> None:
    if isinstance(node, (np.ndarray, np.generic)):
        array = np.ascontiguousarray(node)
        digest.update(f"{path}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    elif isinstance(node, Mapping):
        for key, value in node.items():
            _feed(digest, value, f"{path}/{key}")
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            _feed(digest, value, f"{path}/{index}")
    else:
        digest.update(f"{path}={json.dumps(node)}|".encode())


def distributed_comm(step: Any) -> Any:
    """The communicator of a distributed step, whose rank 0 alone writes checkpoints, logs and plots; None for one process.

    A wrapper's (``DataParallel``, ``PipelineParallel``: those with ``replicated``), else the one the tensor-parallel
    layers of a plain step's model are split over.
    """
    if hasattr(step, "replicated"):
        return step.comm
    from kiln.runtime.distributed.tensor_parallel import tensor_parallel_comm

    return tensor_parallel_comm(getattr(step, "model", None))


def parallelism(step: Any) -> str | None:
    """How a step's state lies across ranks: None for one process, else

    - ``"data"``: ``DataParallel`` (``replicated = True``), every rank holds the whole, identical state;
    - ``"pipeline"``: ``PipelineParallel`` (``replicated = False``), each rank holds its stage; ``state_dict()`` gathers
      the stages on rank 0 and every rank must call it;
    - ``"tensor"``: a plain step whose model holds tensor-parallel layers (``ColumnParallelLinear``...), each rank holds
      its shard of those layers and the whole of the rest; ``gather_training_state`` joins the shards on rank 0.
    """
    if hasattr(step, "replicated"):
        return "data" if step.replicated else "pipeline"
    return None if distributed_comm(step) is None else "tensor"


def gathered_state(step: Any) -> Mapping[str, Any] | None:
    """The whole training state on rank 0 where no rank holds it (every rank must call this); None where
    ``step.state_dict()`` on rank 0 is the whole (one process, data parallel)."""
    kind = parallelism(step)
    if kind == "pipeline":
        return step.state_dict()  # the stages' gather: on every rank, the whole state on rank 0
    if kind == "tensor":
        from kiln.runtime.distributed.tensor_parallel import gather_training_state

        return gather_training_state(step.state_dict(), step.model, distributed_comm(step))
    return None


def _own_part(step: Any, train: Mapping[str, Any]) -> Mapping[str, Any]:
    """What ``step.load_state_dict`` takes from a checkpoint's whole state: a tensor-parallel rank its shards."""
    if parallelism(step) != "tensor":
        return train
    from kiln.runtime.distributed.tensor_parallel import local_training_state

    return local_training_state(train, step.model, distributed_comm(step))


@dataclass
class CheckpointManager:
    """Numbered checkpoints in ``directory``; ``keep`` newest are kept (0 keeps all)."""

    directory: str
    keep: int = 3

    def path_for(self, update: int) -> str:
        return os.path.join(self.directory, f"checkpoint-{update:08d}.npz")

    def checkpoints(self) -> list[str]:
        """Checkpoint files, oldest first (by update count)."""
        paths = [p for p in glob.glob(os.path.join(self.directory, "checkpoint-*.npz")) if _NAME.search(p)]
        return sorted(paths, key=lambda p: int(_NAME.search(p).group(1)))

    def save(self, step: Any, progress: Mapping[str, Any] | None = None) -> str:
        """Write a checkpoint for the step's current update count, verify it, then prune old ones.

        A distributed step is written by rank 0 alone and every rank calls this: a data-parallel step's ranks hold the
        same state; a pipeline's stages and tensor-parallel shards are first gathered on rank 0, every rank sending its
        own. The other ranks wait for the write and raise too if it failed.
        """
        path = self.path_for(int(step.optimizer.step_count))
        comm = distributed_comm(step)
        if comm is None:
            self._write(path, step, progress)
            return path
        from kiln.runtime.distributed.communicator import on_rank0

        state = gathered_state(step)
        on_rank0(comm, lambda: self._write(path, step, progress, state), f"write checkpoint {path}")
        return path

    def _write(self, path: str, step: Any, progress: Mapping[str, Any] | None, state: Mapping[str, Any] | None = None) -> None:
        os.makedirs(self.directory, exist_ok=True)
        save_training_checkpoint(path, step, progress, state)
        load_training_checkpoint(path)  # read back before anything older is removed
        self._prune()

    def latest_valid(self) -> str | None:
        """The newest checkpoint that loads and verifies; a bad newer one is reported with a warning and skipped."""
        for path in reversed(self.checkpoints()):
            try:
                load_training_checkpoint(path)
                return path
            except CheckpointError as error:
                warnings.warn(f"skipping a bad checkpoint: {error}", stacklevel=2)
        return None

    def resume_point(self, step: Any) -> str | None:
        """``latest_valid()``; for a distributed step (every rank calls it) rank 0's, the same on every rank.

        Rank 0 alone looks in the folder and broadcasts the chosen update count (-1: none), so the ranks resume from one
        point even where only rank 0 sees the folder; the other ranks name the file by that count (``path_for``).
        """
        comm = distributed_comm(step)
        if comm is None:
            return self.latest_valid()
        from kiln.runtime.distributed.communicator import broadcast_arrays, on_rank0

        chosen: str | None = None  # on rank 0
        update = np.array([-1], dtype=np.int64)

        def choose() -> None:
            nonlocal chosen
            chosen = self.latest_valid()
            update[0] = -1 if chosen is None else int(_NAME.search(chosen).group(1))

        on_rank0(comm, choose, f"find the newest valid checkpoint in {self.directory}")
        broadcast_arrays([update], root=0, comm=comm)
        if comm.rank == 0 or update[0] < 0:
            return chosen
        return self.path_for(int(update[0]))

    def restore(self, step: Any, path: str | None = None) -> dict[str, Any] | None:
        """Restore ``path`` (default: ``resume_point``, the newest valid checkpoint) into ``step``; None when there is none.

        A distributed step's ranks all call it; rank 0 reads the file for them.
        """
        path = path or self.resume_point(step)
        return None if path is None else restore_training_checkpoint(path, step)

    def _prune(self) -> None:
        if self.keep > 0:
            for path in self.checkpoints()[: -self.keep]:
                os.unlink(path)
