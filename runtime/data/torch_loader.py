"""``torch.utils.data`` as ``kiln.utils.data``: ``Dataset``, ``TensorDataset``, ``Subset``, ``random_split`` and a
``DataLoader`` with PyTorch's signature whose batches are kiln tensors, so a loop ported from PyTorch runs as written.

```python
from kiln.utils.data import DataLoader, TensorDataset

loader = DataLoader(TensorDataset(kiln.tensor(x), kiln.tensor(y)), batch_size=32, shuffle=True)
for images, labels in loader:                       # a list of kiln tensors, as torch's default collation gives
    images, labels = images.to(device), labels.to(device)
```

Batching and collation are ``kiln.runtime.data.DataLoader``'s (one NumPy gather for a ``TensorDataset``; samples
stacked field by field otherwise); each array of the batch then becomes a tensor, with PyTorch's dtypes: arrays keep
theirs, Python floats are float64 and ints int64. A tuple sample gives a list, as torch's ``default_collate``. With
``shuffle=True`` every pass draws a new order from kiln's generator (``kiln.manual_seed`` repeats it); torch's own
generator is another stream, so the orders differ from torch's. Batches are loaded on the caller's thread
(``num_workers`` and ``pin_memory`` are accepted and change nothing); ``sampler`` and ``batch_sampler`` are refused
with what to use instead.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from kiln.runtime.data.datasets import DataError
from kiln.runtime.data.loader import DataLoader as BatchLoader


class Dataset:
    """A map-style dataset to subclass, as ``torch.utils.data.Dataset``: ``__getitem__(i)`` is one sample."""

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} subclasses Dataset without a __getitem__")


class TensorDataset(Dataset):
    """Samples are rows of equally long tensors (or arrays): ``dataset[i] == (a[i], b[i], ...)``."""

    def __init__(self, *tensors: Any):
        self.arrays = tuple(np.asarray(tensor) for tensor in tensors)
        lengths = [len(array) for array in self.arrays]
        if not lengths or len(set(lengths)) != 1:
            raise DataError(f"TensorDataset: size mismatch between tensors (first dims {lengths}); each needs one row per sample")

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        return tuple(_tensors(array[index]) for array in self.arrays)

    def batch(self, indices: np.ndarray) -> list[np.ndarray]:
        """The rows at ``indices`` of every tensor: one gather each (what the ``DataLoader`` reads)."""
        return [array[indices] for array in self.arrays]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order (``torch.utils.data.Subset``)."""

    def __init__(self, dataset: Any, indices: Sequence[int]):
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.dataset[self.indices[index]]

    @property
    def batch(self) -> Callable[[np.ndarray], Any]:
        """The underlying dataset's one-gather batch (a ``TensorDataset``'s); absent when it has none, so the loader
        collates samples instead."""
        gather = getattr(self.dataset, "batch", None)
        if gather is None:
            raise AttributeError(f"{type(self.dataset).__name__} has no batch gather")
        indices = np.asarray(self.indices, dtype=np.int64)
        return lambda positions: gather(indices[positions])


def random_split(dataset: Any, lengths: Sequence[int | float], generator: np.random.Generator | None = None) -> list[Subset]:
    """``dataset`` split into disjoint random ``Subset``s of ``lengths``: counts that sum to its length, or fractions
    that sum to 1 (each ``floor(fraction * len)``, the remainder handed out one by one from the first, as PyTorch's).
    The permutation comes from ``generator`` (a NumPy ``Generator``) or kiln's (``kiln.manual_seed`` repeats it)."""
    total = len(dataset)
    counts = list(lengths)
    if counts and all(isinstance(n, float) for n in counts) and math.isclose(sum(counts), 1.0):
        counts = [math.floor(total * fraction) for fraction in counts]
        for i in range(total - sum(counts)):
            counts[i % len(counts)] += 1
    if sum(counts) != total or any(n < 0 for n in counts):
        raise DataError(f"random_split: lengths {list(lengths)} neither sum to the dataset's length {total} nor are fractions "
                        "summing to 1")
    if generator is None:
        from kiln.frontend import init  # lazily: the generator kiln.manual_seed replaces

        generator = init._generator
    order, splits, start = generator.permutation(total), [], 0
    for count in counts:
        splits.append(Subset(dataset, order[start : start + count].tolist()))
        start += count
    return splits


class DataLoader:
    """``torch.utils.data.DataLoader``'s arguments; iterating gives batches of kiln tensors (see the module docstring)."""

    def __init__(self, dataset: Any, batch_size: int | None = 1, shuffle: bool | None = None, sampler: Any = None,
                 batch_sampler: Any = None, num_workers: int = 0, collate_fn: Callable[[list[Any]], Any] | None = None,
                 pin_memory: bool = False, drop_last: bool = False, timeout: float = 0, worker_init_fn: Any = None,
                 generator: Any = None, **options: Any):
        for name, value in (("sampler", sampler), ("batch_sampler", batch_sampler)):
            if value is not None:
                raise DataError(f"DataLoader: {name}= is not supported; pass shuffle=True for a random order, or reorder the "
                                "dataset (torch.utils.data.Subset-style indexing) before loading")
        if batch_size is None:
            raise DataError("DataLoader: batch_size=None (unbatched samples) is not supported; iterate the dataset itself")
        self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, bool(shuffle), drop_last
        self.collate_fn = collate_fn
        self._batches = BatchLoader(dataset, batch_size, bool(shuffle), drop_last=drop_last, collate_fn=collate_fn, prefetch=0)
        self.generator = generator  # a kiln.Generator: the shuffling's seeds come from it (frontend/torch_generator.py)

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self) -> Iterator[Any]:
        if self.shuffle:
            from kiln.frontend import init  # lazily: the generator kiln.manual_seed replaces

            self._batches.seed = int((self.generator or init._generator).integers(0, 2**62))
        for batch in self._batches.iterate(0):
            yield batch if self.collate_fn is not None else _tensors(batch)


def _tensors(batch: Any) -> Any:
    """Every array in a collated batch as a kiln tensor; tuples become lists, as torch's ``default_collate``."""
    from kiln.frontend.torch_functions import from_numpy  # lazily: the runtime builds on the frontend

    if isinstance(batch, (tuple, list)):
        return [_tensors(item) for item in batch]
    if isinstance(batch, dict):
        return {key: _tensors(item) for key, item in batch.items()}
    return from_numpy(np.asarray(batch))


__all__ = ["DataLoader", "Dataset", "Subset", "TensorDataset", "random_split"]
