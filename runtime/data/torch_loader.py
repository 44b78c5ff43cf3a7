"""``torch.utils.data.DataLoader`` as ``kiln.utils.data.DataLoader``: PyTorch's arguments, checks and semantics,
batches of kiln tensors, so a loop ported from PyTorch runs as written.

```python
from kiln.utils.data import DataLoader, TensorDataset

loader = DataLoader(TensorDataset(kiln.tensor(x), kiln.tensor(y)), batch_size=32, shuffle=True, num_workers=2)
for images, labels in loader:                       # a list of kiln tensors, as torch's default collation gives
    images, labels = images.to(device), labels.to(device)
```

The loader reads indices from a sampler (``shuffle=True``: a ``RandomSampler`` drawing from kiln's generator, which
``kiln.manual_seed`` repeats; ``sampler=``; ``batch_sampler=``), fetches the samples (a ``TensorDataset`` in one
NumPy gather per tensor) and collates them with ``collate_fn`` (``default_collate``; ``batch_size=None`` only
converts each sample, ``default_convert``). An ``IterableDataset`` gives its own samples. With ``num_workers > 0``
batches are made by worker processes (``workers.py``, ``worker_pool.py``) and arrive in order. ``pin_memory`` is
accepted and does nothing: kiln's CPU arrays need no pinning, and a device copy happens at ``.to(device)``.
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any, Callable, Iterable, Iterator

from kiln.runtime.data.collate import default_collate, default_convert
from kiln.runtime.data.fetch import Fetcher
from kiln.runtime.data.samplers import (
    BatchSampler, DataValueError, InfiniteConstantSampler, RandomSampler, SequentialSampler, numpy_generator,
)
from kiln.runtime.data.torch_datasets import IterableDataset
from kiln.runtime.data.worker_pool import WorkerPool, default_context

_FROZEN_AFTER_INIT = frozenset({"batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers"})


class DataLoader:
    """``torch.utils.data.DataLoader``'s arguments; iterating gives batches of kiln tensors (see the module docstring)."""

    def __init__(self, dataset: Any, batch_size: int | None = 1, shuffle: bool | None = None, sampler: Any = None,
                 batch_sampler: Any = None, num_workers: int = 0, collate_fn: Callable[[Any], Any] | None = None,
                 pin_memory: bool = False, drop_last: bool = False, timeout: float = 0,
                 worker_init_fn: Callable[[int], None] | None = None, multiprocessing_context: Any = None,
                 generator: Any = None, *, prefetch_factor: int | None = None, persistent_workers: bool = False,
                 pin_memory_device: str = "", in_order: bool = True) -> None:
        _check_worker_options(num_workers, timeout, prefetch_factor, persistent_workers, multiprocessing_context)
        iterable = isinstance(dataset, IterableDataset)
        _check_sampling_options(iterable, shuffle, sampler, batch_sampler, batch_size, drop_last)
        if batch_sampler is not None:
            batch_size, drop_last = None, False
        if sampler is None:
            sampler = _default_sampler(dataset, iterable, bool(shuffle), generator)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.dataset, self.batch_size, self.drop_last, self.sampler, self.batch_sampler = dataset, batch_size, drop_last, sampler, batch_sampler
        self.num_workers, self.prefetch_factor = num_workers, (2 if num_workers > 0 and prefetch_factor is None else prefetch_factor)
        self.persistent_workers, self.timeout, self.worker_init_fn = persistent_workers, timeout, worker_init_fn
        self.multiprocessing_context = default_context(multiprocessing_context) if num_workers > 0 else None
        self.pin_memory, self.pin_memory_device, self.in_order, self.generator = pin_memory, pin_memory_device, in_order, generator
        self.collate_fn = collate_fn or (default_collate if self.auto_collation else default_convert)
        self._pool: WorkerPool | None = None
        self._initialized = True
        _warn_if_more_workers_than_cores(num_workers)

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_initialized", False) and name in _FROZEN_AFTER_INIT:
            raise DataValueError(f"{name} attribute should not be set after DataLoader is initialized; make a new DataLoader")
        super().__setattr__(name, value)

    @property
    def auto_collation(self) -> bool:
        """Samples are collated into batches (a ``batch_size`` or ``batch_sampler``); else each is only converted."""
        return self.batch_sampler is not None

    @property
    def index_sampler(self) -> Iterable[Any]:
        """What each fetch is given: the batch sampler's lists of indices, or the sampler's single indices."""
        return self.batch_sampler if self.auto_collation else self.sampler

    def __len__(self) -> int:
        if isinstance(self.dataset, IterableDataset):
            length = len(self.dataset)
            if self.batch_size is None:
                return length
            return length // self.batch_size if self.drop_last else math.ceil(length / self.batch_size)
        return len(self.index_sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        if self.num_workers == 0:
            self.draw_base_seed()  # drawn whether or not workers use it, so a seed gives one order for any num_workers
            return self._in_process()
        if not self.persistent_workers:
            return WorkerPool(self)
        if self._pool is None or self._pool.closed:
            self._pool = WorkerPool(self)
        else:
            self._pool.reset()
        return self._pool

    def _in_process(self) -> Iterator[Any]:
        fetcher = Fetcher(self.dataset, self.auto_collation, self.collate_fn, self.drop_last)
        for index in self.index_sampler:
            try:
                batch = fetcher.fetch(index)
            except StopIteration:
                if fetcher.iterable:
                    return
                raise
            yield batch

    def draw_base_seed(self) -> int:
        """The seed of a pass's workers (worker ``i`` seeds its generators with ``base_seed + i``), drawn from
        ``generator`` or kiln's global generator, as PyTorch draws it from its own."""
        return int(numpy_generator(self.generator).integers(0, 2**62))


def _check_worker_options(num_workers: int, timeout: float, prefetch_factor: int | None, persistent_workers: bool,
                          multiprocessing_context: Any) -> None:
    if num_workers < 0:
        raise DataValueError("num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.")
    if timeout < 0:
        raise DataValueError("timeout option should be non-negative")
    if num_workers == 0 and timeout > 0:
        raise DataValueError(f"timeout={timeout} applies to worker processes only; pass num_workers > 0 or timeout=0")
    if num_workers == 0 and prefetch_factor is not None:
        raise DataValueError("prefetch_factor option could only be specified in multiprocessing. let num_workers > 0 to "
                             "enable multiprocessing, otherwise set prefetch_factor to None.")
    if prefetch_factor is not None and prefetch_factor <= 0:
        raise DataValueError(f"prefetch_factor option should be positive, got {prefetch_factor}")
    if persistent_workers and num_workers == 0:
        raise DataValueError("persistent_workers option needs num_workers > 0")
    if multiprocessing_context is not None and num_workers == 0:
        raise DataValueError("multiprocessing_context can only be used with multi-process loading (num_workers > 0), but "
                             "got num_workers=0")


def _check_sampling_options(iterable: bool, shuffle: bool | None, sampler: Any, batch_sampler: Any, batch_size: int | None,
                            drop_last: bool) -> None:
    if iterable:
        for name, value, unset in (("shuffle", shuffle, shuffle in (None, False)), ("sampler", sampler, sampler is None),
                                   ("batch_sampler", batch_sampler, batch_sampler is None)):
            if not unset:
                raise DataValueError(f"DataLoader with IterableDataset: expected unspecified {name} option, but got "
                                     f"{name}={value}; an IterableDataset decides its own order")
    if sampler is not None and shuffle:
        raise DataValueError("sampler option is mutually exclusive with shuffle")
    if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or drop_last):
        raise DataValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last")
    if batch_sampler is None and batch_size is None and drop_last:
        raise DataValueError("batch_size=None option disables auto-batching and is mutually exclusive with drop_last")


def _default_sampler(dataset: Any, iterable: bool, shuffle: bool, generator: Any) -> Any:
    if iterable:
        return InfiniteConstantSampler()
    return RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)


def _warn_if_more_workers_than_cores(num_workers: int) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if num_workers > 0 and cores is not None and num_workers > cores:
        warnings.warn(f"This DataLoader will create {num_workers} worker processes in total. Our suggested max number of "
                      f"worker in current system is {cores}, which is smaller than what this DataLoader is going to create. "
                      "Please be aware that excessive worker creation might get DataLoader running slow or even freeze, "
                      "lower the worker number to avoid potential slowness/freeze if necessary.", stacklevel=3)


__all__ = ["DataLoader"]
