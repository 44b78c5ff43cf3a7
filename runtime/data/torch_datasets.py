"""``torch.utils.data``'s datasets: ``Dataset``, ``IterableDataset``, ``TensorDataset``, ``StackDataset``,
``ConcatDataset``, ``ChainDataset``, ``Subset`` and ``random_split``, with PyTorch's indexing, lengths and errors.

A ``TensorDataset`` (and a ``Subset`` of one) also has ``batch(indices)``, one NumPy gather per tensor, which the
``DataLoader`` reads instead of collating samples one by one.
"""

from __future__ import annotations

import bisect
import itertools
import math
import warnings
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from kiln.runtime.data.collate import kiln_array
from kiln.runtime.data.samplers import DataValueError, numpy_generator


class Dataset:
    """A map-style dataset to subclass: ``__getitem__(i)`` is one sample; ``dataset + other`` concatenates."""

    def __getitem__(self, index: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} subclasses Dataset without a __getitem__")

    def __add__(self, other: "Dataset") -> "ConcatDataset":
        return ConcatDataset([self, other])


class IterableDataset(Dataset):
    """A stream of samples to subclass: ``__iter__`` yields them. Under ``num_workers > 0`` every worker iterates its
    own copy, so shard it with ``get_worker_info()`` (its ``id`` and ``num_workers``) to avoid duplicates."""

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError(f"{type(self).__name__} subclasses IterableDataset without an __iter__")

    def __add__(self, other: Dataset) -> "ChainDataset":  # type: ignore[override]
        return ChainDataset([self, other])


class TensorDataset(Dataset):
    """Samples are rows of equally long tensors (or arrays): ``dataset[i] == (a[i], b[i], ...)``."""

    def __init__(self, *tensors: Any):
        self.arrays = tuple(np.asarray(tensor) for tensor in tensors)
        lengths = [len(array) for array in self.arrays]
        if not lengths or len(set(lengths)) != 1:
            raise DataValueError(f"TensorDataset: size mismatch between tensors (first dims {lengths}); each needs one row per sample")

    @property
    def tensors(self) -> tuple[Any, ...]:
        """The tensors, as kiln tensors (``torch.utils.data.TensorDataset.tensors``)."""
        return tuple(_as_tensors(array) for array in self.arrays)

    def __len__(self) -> int:
        return len(self.arrays[0])

    def __getitem__(self, index: Any) -> tuple[Any, ...]:
        return tuple(_as_tensors(array[index]) for array in self.arrays)

    def batch(self, indices: np.ndarray) -> list[np.ndarray]:
        """The rows at ``indices`` of every tensor: one gather each (what the ``DataLoader`` reads)."""
        return [array[indices] for array in self.arrays]


class StackDataset(Dataset):
    """Equally long datasets side by side: ``StackDataset(a, b)[i] == (a[i], b[i])``, ``StackDataset(x=a)[i] == {"x": a[i]}``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if args and kwargs:
            raise DataValueError("StackDataset: pass the datasets either positionally (samples are tuples) or by keyword "
                                 "(samples are dicts), not both")
        if not args and not kwargs:
            raise DataValueError("StackDataset: at least one dataset should be passed")
        self.datasets: tuple[Any, ...] | dict[str, Any] = args or kwargs
        lengths = [len(dataset) for dataset in (args or tuple(kwargs.values()))]
        if len(set(lengths)) != 1:
            raise DataValueError(f"StackDataset: size mismatch between datasets (lengths {lengths})")
        self._length = lengths[0]

    def __getitem__(self, index: int) -> Any:
        if isinstance(self.datasets, dict):
            return {key: dataset[index] for key, dataset in self.datasets.items()}
        return tuple(dataset[index] for dataset in self.datasets)

    def __len__(self) -> int:
        return self._length


class ConcatDataset(Dataset):
    """Map-style datasets one after another; ``cumulative_sizes[k]`` is where dataset ``k`` ends."""

    def __init__(self, datasets: Iterable[Any]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise DataValueError("ConcatDataset: datasets should not be an empty iterable")
        if any(isinstance(dataset, IterableDataset) for dataset in self.datasets):
            raise DataValueError("ConcatDataset does not support IterableDataset; chain streams with ChainDataset")
        self.cumulative_sizes = list(itertools.accumulate(len(dataset) for dataset in self.datasets))

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, index: int) -> Any:
        if index < 0:
            if -index > len(self):
                raise DataValueError(f"ConcatDataset: index {index} is out of range for length {len(self)}")
            index += len(self)
        part = bisect.bisect_right(self.cumulative_sizes, index)
        return self.datasets[part][index - (self.cumulative_sizes[part - 1] if part else 0)]


class ChainDataset(IterableDataset):
    """Streams one after another, read lazily."""

    def __init__(self, datasets: Iterable[Any]) -> None:
        self.datasets = datasets

    def __iter__(self) -> Iterator[Any]:
        for dataset in self.datasets:
            _require_iterable(dataset)
            yield from dataset

    def __len__(self) -> int:
        total = 0
        for dataset in self.datasets:
            _require_iterable(dataset)
            total += len(dataset)
        return total


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset: Any, indices: Sequence[int]):
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, list):
            return self.dataset[[self.indices[i] for i in index]]
        return self.dataset[self.indices[index]]

    @property
    def batch(self) -> Callable[[np.ndarray], Any]:
        """The underlying dataset's one-gather batch (a ``TensorDataset``'s); absent when it has none, so the loader
        collates samples instead."""
        gather = getattr(self.dataset, "batch", None)
        if not callable(gather):
            raise AttributeError(f"{type(self.dataset).__name__} has no batch gather")
        indices = np.asarray(self.indices, dtype=np.int64)
        return lambda positions: gather(indices[positions])


def random_split(dataset: Any, lengths: Sequence[int | float], generator: Any = None) -> list[Subset]:
    """``dataset`` split into disjoint random ``Subset``s of ``lengths``: counts that sum to its length, or fractions
    that sum to 1 (each ``floor(fraction * len)``, the remainder handed out one by one from the first, as PyTorch's).
    The permutation comes from ``generator`` (a ``kiln.Generator`` or NumPy ``Generator``) or kiln's global one
    (``kiln.manual_seed`` repeats it)."""
    counts = _split_counts(len(dataset), list(lengths))
    order, splits, start = numpy_generator(generator).permutation(len(dataset)), [], 0
    for count in counts:
        splits.append(Subset(dataset, order[start : start + count].tolist()))
        start += count
    return splits


def _split_counts(total: int, lengths: list[int | float]) -> list[int]:
    counts = lengths
    if lengths and math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        for position, fraction in enumerate(lengths):
            if not 0 <= fraction <= 1:
                raise DataValueError(f"random_split: fraction at index {position} is not between 0 and 1")
        counts = [math.floor(total * fraction) for fraction in lengths]
        for i in range(total - sum(counts)):
            counts[i % len(counts)] += 1
        for position, count in enumerate(counts):
            if count == 0:
                warnings.warn(f"Length of split at index {position} is 0. This might result in an empty dataset.", stacklevel=3)
    if sum(counts) != total or any(n < 0 for n in counts):
        raise DataValueError(f"random_split: lengths {list(lengths)} neither sum to the dataset's length {total} nor are "
                             "fractions summing to 1")
    return [int(count) for count in counts]


def _require_iterable(dataset: Any) -> None:
    if not isinstance(dataset, IterableDataset):
        raise DataValueError(f"ChainDataset only supports IterableDataset, got {type(dataset).__name__}; concatenate "
                             "map-style datasets with ConcatDataset")


def _as_tensors(value: Any) -> Any:
    from kiln.frontend.torch_functions import from_numpy  # lazily: the runtime builds on the frontend

    return from_numpy(kiln_array(np.asarray(value)))


__all__ = ["ChainDataset", "ConcatDataset", "Dataset", "IterableDataset", "StackDataset", "Subset", "TensorDataset", "random_split"]
