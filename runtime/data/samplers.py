"""``torch.utils.data``'s samplers: the order (or the batches of indices) a ``DataLoader`` reads a map-style dataset in.

```python
sampler = WeightedRandomSampler(class_weights[labels], num_samples=len(labels))   # rebalanced classes
loader = DataLoader(dataset, batch_size=32, sampler=sampler)
batches = BatchSampler(SequentialSampler(range(10)), batch_size=3, drop_last=False)  # [[0, 1, 2], ..., [9]]
```

The arguments, lengths, errors and deterministic orders are PyTorch's. The random draws come from kiln's generator
(``kiln.manual_seed`` repeats them) or the ``generator=`` given (a ``kiln.Generator`` or a NumPy ``Generator``), so
the orders are other permutations than torch's, with the same distribution.
"""

from __future__ import annotations

import itertools
from typing import Any, Generic, Iterable, Iterator, Sequence, Sized, TypeVar

import numpy as np

from kiln.runtime.data.datasets import DataError

Index = TypeVar("Index", covariant=True)


class DataValueError(DataError, ValueError):
    """A data-loading argument has a bad value (a ``ValueError``, as PyTorch raises, and a kiln ``DataError``)."""


class DataTypeError(DataError, TypeError):
    """A data-loading argument has the wrong type (a ``TypeError``, as PyTorch raises, and a kiln ``DataError``)."""


class Sampler(Generic[Index]):
    """Base class of samplers: ``__iter__`` gives indices (or lists of indices); ``__len__`` is optional."""

    def __iter__(self) -> Iterator[Index]:
        raise NotImplementedError(f"{type(self).__name__} subclasses Sampler without an __iter__")


class SequentialSampler(Sampler[int]):
    """``0, 1, ..., len(data_source) - 1``."""

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(Sampler[int]):
    """A fresh permutation per pass; ``replacement=True`` draws ``num_samples`` indices independently instead, and
    without replacement ``num_samples`` past the length chains whole permutations (PyTorch's rule)."""

    def __init__(self, data_source: Sized, replacement: bool = False, num_samples: int | None = None, generator: Any = None) -> None:
        self.data_source, self.replacement, self._num_samples, self.generator = data_source, replacement, num_samples, generator
        if not isinstance(replacement, bool):
            raise DataTypeError(f"replacement should be a boolean value, but got replacement={replacement}")
        if not _positive_int(self.num_samples):
            raise DataValueError(f"num_samples should be a positive integer value, but got num_samples={self.num_samples}")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self) -> Iterator[int]:
        n, count = len(self.data_source), self.num_samples
        generator = _pass_generator(self.generator)
        if self.replacement:
            yield from generator.integers(0, n, size=count).tolist()
            return
        for _ in range(count // n):
            yield from generator.permutation(n).tolist()
        yield from generator.permutation(n)[: count % n].tolist()

    def __len__(self) -> int:
        return self.num_samples


class SubsetRandomSampler(Sampler[int]):
    """The given ``indices`` in a fresh random order per pass."""

    def __init__(self, indices: Sequence[int], generator: Any = None) -> None:
        self.indices, self.generator = indices, generator

    def __iter__(self) -> Iterator[int]:
        for position in numpy_generator(self.generator).permutation(len(self.indices)).tolist():
            yield self.indices[position]

    def __len__(self) -> int:
        return len(self.indices)


class WeightedRandomSampler(Sampler[int]):
    """``num_samples`` indices of ``range(len(weights))`` drawn with probability proportional to ``weights``; without
    replacement an index is drawn at most once (then ``num_samples`` may not exceed the nonzero weights)."""

    def __init__(self, weights: Sequence[float], num_samples: int, replacement: bool = True, generator: Any = None) -> None:
        if not _positive_int(num_samples):
            raise DataValueError(f"num_samples should be a positive integer value, but got num_samples={num_samples}")
        if not isinstance(replacement, bool):
            raise DataValueError(f"replacement should be a boolean value, but got replacement={replacement}")
        weights = np.asarray(weights.numpy() if hasattr(weights, "numpy") else weights, dtype=np.float64)
        if weights.ndim != 1:
            raise DataValueError(f"weights should be a 1d sequence but given weights have shape {tuple(weights.shape)}")
        _check_weights(weights, num_samples, replacement)
        self.weights, self.num_samples, self.replacement, self.generator = weights, num_samples, replacement, generator

    def __iter__(self) -> Iterator[int]:
        drawn = numpy_generator(self.generator).choice(len(self.weights), size=self.num_samples, replace=self.replacement,
                                                       p=self.weights / self.weights.sum())
        yield from drawn.tolist()

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(Sampler[list[int]]):
    """Lists of ``batch_size`` indices from ``sampler`` (any iterable); the last one shorter unless ``drop_last``."""

    def __init__(self, sampler: Sampler[int] | Iterable[int], batch_size: int, drop_last: bool) -> None:
        if not _positive_int(batch_size):
            raise DataValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
        if not isinstance(drop_last, bool):
            raise DataValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self) -> Iterator[list[int]]:
        indices = iter(self.sampler)
        batch = list(itertools.islice(indices, self.batch_size))
        while batch and (len(batch) == self.batch_size or not self.drop_last):
            yield batch
            batch = list(itertools.islice(indices, self.batch_size))

    def __len__(self) -> int:
        count = len(self.sampler)  # type: ignore[arg-type]
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)


class InfiniteConstantSampler(Sampler[None]):
    """``None`` forever: the "indices" of an ``IterableDataset``, which ignores them and yields its next samples."""

    def __iter__(self) -> Iterator[None]:
        return itertools.repeat(None)


def numpy_generator(generator: Any) -> np.random.Generator:
    """The NumPy stream a ``generator=`` argument names: kiln's global one (``kiln.manual_seed``) for ``None``."""
    if generator is None:
        from kiln.frontend import init  # lazily: the generator kiln.manual_seed replaces

        return init._generator
    if isinstance(generator, np.random.Generator):
        return generator
    from kiln.frontend.torch_generator import Generator

    if isinstance(generator, Generator):
        return generator._numpy
    raise DataTypeError(f"generator= takes a kiln.Generator (or a NumPy Generator), got {type(generator).__name__}; make one "
                        "with kiln.Generator().manual_seed(seed)")


def _pass_generator(generator: Any) -> np.random.Generator:
    """The stream of one ``RandomSampler`` pass: the given generator itself, or (none given) a fresh one seeded by one
    draw from kiln's global generator, as PyTorch seeds a pass from its default generator."""
    if generator is not None:
        return numpy_generator(generator)
    return np.random.default_rng(int(numpy_generator(None).integers(0, 2**62)))


def _positive_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0


def _check_weights(weights: np.ndarray, num_samples: int, replacement: bool) -> None:
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise DataValueError("WeightedRandomSampler: weights must be finite, non-negative and not all zero; got "
                             f"{np.array2string(weights, threshold=8)}")
    if not replacement and num_samples > np.count_nonzero(weights):
        raise DataValueError(f"WeightedRandomSampler: cannot draw num_samples={num_samples} without replacement from "
                             f"{np.count_nonzero(weights)} nonzero weights; pass replacement=True or fewer samples")


__all__ = [
    "BatchSampler", "DataTypeError", "DataValueError", "InfiniteConstantSampler", "RandomSampler", "Sampler", "SequentialSampler",
    "SubsetRandomSampler", "WeightedRandomSampler", "numpy_generator",
]
