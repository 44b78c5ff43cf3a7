"""``torch.utils.data.distributed.DistributedSampler``: each rank's share of a map-style dataset, for data-parallel
training (``kiln.distributed``'s ``DistributedDataParallel``).

```python
sampler = DistributedSampler(dataset)            # world size and rank from kiln.distributed's process group
loader = DataLoader(dataset, batch_size=32, sampler=sampler)
for epoch in range(epochs):
    sampler.set_epoch(epoch)                     # a new shuffle each epoch, the same on every rank
```

As torch's: the indices (shuffled by ``seed + epoch`` when ``shuffle``) are padded by repeating the first ones to a
multiple of the world size (or cut to one with ``drop_last``), and rank ``r`` takes every ``num_replicas``-th from
``r``, so the ranks' shares are disjoint and equally long. The shuffle is NumPy's permutation seeded by
``seed + epoch`` (the same on every rank), another permutation than torch's ``randperm``.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Sized

import numpy as np

from kiln.runtime.data.samplers import DataValueError, Sampler


class DistributedSampler(Sampler[int]):
    """Rank ``rank``'s indices of ``dataset`` among ``num_replicas`` (see the module docstring)."""

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False) -> None:
        num_replicas = _from_process_group("num_replicas", "get_world_size") if num_replicas is None else num_replicas
        rank = _from_process_group("rank", "get_rank") if rank is None else rank
        if rank >= num_replicas or rank < 0:
            raise DataValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank, self.epoch = dataset, num_replicas, rank, 0
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        size = len(dataset)
        uneven = drop_last and size % num_replicas != 0
        self.num_samples = math.ceil((size - num_replicas) / num_replicas) if uneven else math.ceil(size / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        size = len(self.dataset)
        order = np.random.default_rng(self.seed + self.epoch).permutation(size) if self.shuffle else np.arange(size)
        indices = order.tolist()
        if self.drop_last:
            indices = indices[: self.total_size]
        elif self.total_size > size:
            indices += (indices * math.ceil((self.total_size - size) / size))[: self.total_size - size]
        return iter(indices[self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose shuffle the next iteration uses (call it before each epoch, on every rank)."""
        self.epoch = epoch


def _from_process_group(argument: str, getter: str) -> int:
    import kiln.distributed as distributed  # lazily: it imports MPI only when asked

    if not distributed.is_initialized():
        raise RuntimeError(f"DistributedSampler: {argument} is not given and no process group is initialized; call "
                           "kiln.distributed.init_process_group() first or pass num_replicas= and rank=")
    return int(getattr(distributed, getter)())


__all__ = ["DistributedSampler"]
