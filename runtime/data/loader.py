"""Datasets and the ``DataLoader``: seeded shuffling, batching, collation, per-rank shards, a prefetch thread.

```python
loader = DataLoader(ArrayDataset(x, y), batch_size=32, shuffle=True, seed=0)
for epoch in range(epochs):
    loader.set_epoch(epoch)          # a new, reproducible order per epoch
    for xb, yb in loader:            # the next batch is collated while this one trains
        step(xb, yb)
```

The order of an epoch depends only on ``(seed, epoch)``, so a resumed run
skips to the same batch with ``loader.iterate(epoch, start=k)`` without
replaying the batches before it. With ``world_size > 1`` each rank sees a
disjoint, equally long shard of that order (``DistributedSampler``'s rule).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import numpy as np

from kiln.runtime.data.datasets import DataError

Collate = Callable[[list[Any]], Any]


@runtime_checkable
class Dataset(Protocol):
    """Anything with a length and integer indexing; each item is one sample."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


class ArrayDataset:
    """Samples are rows of equally long arrays: ``dataset[i] == (x[i], y[i])``; batches are fancy-indexed at once."""

    def __init__(self, *arrays: Any):
        if not arrays:
            raise DataError("ArrayDataset needs at least one array, e.g. ArrayDataset(x, y)")
        self.arrays = tuple(np.asarray(array) for array in arrays)
        lengths = [len(array) for array in self.arrays]
        if len(set(lengths)) != 1:
            raise DataError(f"ArrayDataset: the arrays differ in length {lengths}; each needs one row per sample")

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        return tuple(array[index] for array in self.arrays)

    def batch(self, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        """The rows at ``indices`` of every array: one NumPy gather per array, no per-sample loop."""
        return tuple(array[indices] for array in self.arrays)


def default_collate(samples: list[Any]) -> Any:
    """Stack samples: tuples stack field by field, dicts key by key, arrays and numbers along a new first axis."""
    first = samples[0]
    if isinstance(first, tuple):
        return tuple(default_collate([sample[i] for sample in samples]) for i in range(len(first)))
    if isinstance(first, dict):
        return {key: default_collate([sample[key] for sample in samples]) for key in first}
    return np.stack([np.asarray(sample) for sample in samples])


@dataclass
class DataLoader:
    """Batches of ``dataset`` in a seeded order; ``prefetch`` batches are prepared ahead on a background thread."""

    dataset: Any
    batch_size: int = 32
    shuffle: bool = False
    seed: int = 0
    drop_last: bool = False
    collate_fn: Collate | None = None
    """Turns a list of samples into a batch; ``None`` stacks them (and gathers an ``ArrayDataset`` directly)."""
    prefetch: int = 2
    """Batches prepared ahead on a background thread; 0 loads on the caller's thread."""
    rank: int = 0
    world_size: int = 1
    """Per-rank sharding: rank ``r`` of ``world_size`` sees every ``world_size``-th sample of the epoch's order."""
    epoch: int = 0
    """The epoch whose order ``iter(loader)`` follows (``set_epoch``)."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise DataError(f"DataLoader: batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.rank < self.world_size:
            raise DataError(f"DataLoader: rank {self.rank} is outside world_size {self.world_size}; ranks are 0..world_size-1")
        if len(self.dataset) == 0:
            raise DataError("DataLoader: the dataset is empty")

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose order the next iteration follows (call once per epoch, as with PyTorch's sampler)."""
        self.epoch = epoch

    def order(self, epoch: int | None = None) -> np.ndarray:
        """This rank's sample indices for ``epoch``, in the order they are served."""
        epoch = self.epoch if epoch is None else epoch
        count = len(self.dataset)
        order = np.random.default_rng([self.seed, epoch]).permutation(count) if self.shuffle else np.arange(count)
        return shard(order, self.rank, self.world_size, self.drop_last)

    def batch_indices(self, epoch: int | None = None) -> list[np.ndarray]:
        """The index array of each batch of ``epoch``."""
        order = self.order(epoch)
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        return [order[start : start + self.batch_size] for start in range(0, stop, self.batch_size)]

    def __len__(self) -> int:
        return len(self.batch_indices(0))

    def __iter__(self) -> Iterator[Any]:
        return self.iterate(self.epoch)

    def iterate(self, epoch: int, start: int = 0) -> Iterator[Any]:
        """The batches of ``epoch`` from batch number ``start`` on (a resumed run skips without loading)."""
        batches = (self.load(indices) for indices in self.batch_indices(epoch)[start:])
        return _prefetched(batches, self.prefetch) if self.prefetch > 0 else batches

    def load(self, indices: np.ndarray) -> Any:
        """One batch: the dataset's own ``batch`` gather when it has one and no collate_fn is set."""
        if self.collate_fn is None and hasattr(self.dataset, "batch"):
            return self.dataset.batch(indices)
        collate = self.collate_fn or default_collate
        return collate([self.dataset[int(index)] for index in indices])


def shard(order: np.ndarray, rank: int, world_size: int, drop_last: bool = False) -> np.ndarray:
    """Rank ``rank``'s equal share of ``order``: the tail is dropped (``drop_last``) or padded by wrapping around."""
    if world_size == 1:
        return order
    if drop_last:
        order = order[: len(order) - len(order) % world_size]
    else:
        order = np.resize(order, -(-len(order) // world_size) * world_size)  # resize repeats from the start
    return order[rank::world_size]


# --- the prefetch thread ----------------------------------------------------------------------


class _Done:
    """The producer finished the epoch."""


@dataclass
class _Failure:
    """The producer raised; the consumer re-raises it in its own thread."""

    error: BaseException


def _prefetched(batches: Iterator[Any], depth: int) -> Iterator[Any]:
    """Yield ``batches`` produced ``depth`` ahead on a thread that stops and joins on exhaustion, break or error."""
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    thread = threading.Thread(target=_produce, args=(batches, slots, stop), name="kiln-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if isinstance(item, _Done):
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


def _produce(batches: Iterator[Any], slots: queue.Queue[Any], stop: threading.Event) -> None:
    try:
        for batch in batches:
            if not _offer(slots, batch, stop):
                return
        _offer(slots, _Done(), stop)
    except BaseException as error:  # handed to the consumer, which re-raises it where the user sees it
        _offer(slots, _Failure(error), stop)


def _offer(slots: queue.Queue[Any], item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless the consumer stopped listening; polling keeps a full queue from blocking shutdown."""
    while not stop.is_set():
        try:
            slots.put(item, timeout=0.02)
            return True
        except queue.Full:
            continue
    return False


def loader_state(loader: DataLoader, epoch: int, batch: int) -> dict[str, Any]:
    """What a checkpoint records to resume ``loader`` at batch ``batch`` of ``epoch`` (JSON-serialisable)."""
    return {"seed": loader.seed, "shuffle": loader.shuffle, "batch_size": loader.batch_size, "epoch": epoch, "batch": batch,
            "rank": loader.rank, "world_size": loader.world_size, "length": len(loader.dataset)}


def check_loader_state(loader: DataLoader, saved: dict[str, Any], source: str) -> None:
    """Raise ``DataError`` when ``loader`` would not replay the order ``saved`` was recorded with.

    The rank is not compared: under data parallelism rank 0 writes the checkpoint, and every rank of the same
    ``world_size`` resumes its own shard of the same order from it.
    """
    current = loader_state(loader, saved["epoch"], saved["batch"])
    differing = [key for key in current if key != "rank" and saved.get(key) != current[key]]
    if differing:
        details = ", ".join(f"{key}: saved {saved.get(key)!r}, now {current[key]!r}" for key in differing)
        raise DataError(f"{source} was written with a different data loader ({details}); resume with the same loader settings")


__all__ = ["ArrayDataset", "Collate", "DataLoader", "Dataset", "check_loader_state", "default_collate", "loader_state", "shard"]
