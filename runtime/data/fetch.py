"""Turning what a sampler gives into one batch, the same way in the main process and in a worker process.

A map-style dataset is indexed (a ``TensorDataset`` gathers a whole batch at once; a dataset with ``__getitems__``
gets the list of indices); an ``IterableDataset`` ignores the index and gives its next samples, ending with
``StopIteration``. ``auto_collation`` (a batch size or batch sampler) collates a list of samples; without it
each sample is only converted (``default_convert``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from kiln.runtime.data.collate import default_collate, kiln_array
from kiln.runtime.data.torch_datasets import IterableDataset


@dataclass
class Fetcher:
    """One batch per ``fetch(index)``; iterable datasets keep their iterator between calls (``restart`` begins anew)."""

    dataset: Any
    auto_collation: bool
    collate_fn: Callable[[Any], Any]
    drop_last: bool
    _samples: Iterator[Any] | None = field(default=None, repr=False)
    _ended: bool = False

    def __post_init__(self) -> None:
        self.restart()

    @property
    def iterable(self) -> bool:
        return isinstance(self.dataset, IterableDataset)

    def restart(self) -> None:
        self._samples, self._ended = (iter(self.dataset), False) if self.iterable else (None, False)

    def fetch(self, index: Any) -> Any:
        """The batch for ``index`` (a list of indices under auto-collation, else one index); ``StopIteration`` when an
        iterable dataset has no more (or, with ``drop_last``, too few) samples."""
        if self.iterable:
            return self.collate_fn(self._next_samples(index))
        if not self.auto_collation:
            return self.collate_fn(self.dataset[index])
        gather = getattr(self.dataset, "batch", None)
        if self.collate_fn is default_collate and callable(gather):
            return _tensors(gather(np.asarray(index, dtype=np.int64)))
        getitems = getattr(self.dataset, "__getitems__", None)
        samples = getitems(index) if callable(getitems) else [self.dataset[i] for i in index]
        return self.collate_fn(samples)

    def _next_samples(self, index: Any) -> Any:
        if self._ended:
            raise StopIteration
        if not self.auto_collation:
            return next(self._samples)  # type: ignore[arg-type]
        samples = []
        for _ in index:
            try:
                samples.append(next(self._samples))  # type: ignore[arg-type]
            except StopIteration:
                self._ended = True
                break
        if not samples or (self.drop_last and len(samples) < len(index)):
            raise StopIteration
        return samples


def _tensors(batch: Any) -> Any:
    """Every array of a gathered batch as a kiln tensor; tuples become lists, as ``default_collate`` gives them."""
    from kiln.frontend.torch_functions import from_numpy  # lazily: the runtime builds on the frontend

    if isinstance(batch, (tuple, list)):
        return [_tensors(item) for item in batch]
    if isinstance(batch, dict):
        return {key: _tensors(item) for key, item in batch.items()}
    return from_numpy(kiln_array(np.asarray(batch)))


__all__ = ["Fetcher"]
