"""The worker-process side of ``DataLoader(num_workers=n)``: ``get_worker_info()`` and the loop each worker runs.

A worker holds its own copy of the dataset (forked, or pickled under spawn), seeds Python's ``random``, NumPy's
legacy global generator and kiln's generator from ``base_seed + id``, runs ``worker_init_fn(id)``, then answers
``(task, index)`` messages from its index queue with ``(task, batch)`` on the shared result queue until told to stop
(``None``), until the loader's done event is set, or until its parent process is gone. An exception becomes a
``WorkerFailure`` carrying the worker id and the formatted traceback, re-raised by the main process.
"""

from __future__ import annotations

import os
import pickle
import queue
import random
import traceback
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

POLL_SECONDS = 0.2
"""How often a waiting worker checks the done event and that its parent is alive."""


@dataclass(frozen=True)
class WorkerInfo:
    """What ``get_worker_info()`` gives inside a worker: its ``id`` (0..num_workers-1), ``num_workers``, the ``seed``
    its generators were seeded with, and its own copy of the ``dataset``."""

    id: int
    num_workers: int
    seed: int
    dataset: Any


_worker_info: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """This worker's ``WorkerInfo``; ``None`` in the main process (``torch.utils.data.get_worker_info``)."""
    return _worker_info


@dataclass(frozen=True)
class IterableEnd:
    """Worker ``worker_id``'s copy of an ``IterableDataset`` is exhausted."""

    worker_id: int


@dataclass(frozen=True)
class Resume:
    """Start a new pass over the dataset (persistent workers); the worker echoes it back."""


@dataclass
class WorkerFailure:
    """An exception raised in a worker, as the main process re-raises it (PyTorch's ``ExceptionWrapper``)."""

    error_type: type[BaseException] | None
    type_name: str
    where: str
    traceback_text: str

    @classmethod
    def caught(cls, error: BaseException, where: str) -> "WorkerFailure":
        error_type: type[BaseException] | None = type(error)
        try:
            pickle.dumps(error_type)
        except Exception:  # a class defined in a function cannot travel; the main process raises RuntimeError
            error_type = None
        return cls(error_type, type(error).__name__, where, "".join(traceback.format_exception(error)))

    def reraise(self) -> None:
        message = f"Caught {self.type_name} {self.where}.\nOriginal {self.traceback_text}"
        if self.error_type is KeyError:  # KeyError shows its argument's repr: keep the traceback readable
            message = _ReadableMessage(message)
        try:
            error = self.error_type(message) if self.error_type is not None else None
        except Exception:
            error = None
        raise error if error is not None else RuntimeError(message)


class _ReadableMessage(str):
    """A message whose repr is itself (PyTorch's ``KeyErrorMessage``)."""

    def __repr__(self) -> str:
        return str(self)


@dataclass(frozen=True)
class WorkerSetup:
    """Everything a worker process needs, sent once when it starts."""

    dataset: Any
    auto_collation: bool
    collate_fn: Callable[[Any], Any]
    drop_last: bool
    base_seed: int
    worker_init_fn: Callable[[int], None] | None
    worker_id: int
    num_workers: int


def worker_loop(setup: WorkerSetup, index_queue: Any, result_queue: Any, done_event: Any) -> None:
    """A worker process's main function (see the module docstring)."""
    from kiln.runtime.data.fetch import Fetcher

    parent, where = os.getppid(), f"in DataLoader worker process {setup.worker_id}"
    failure, fetcher, ended = None, None, False
    try:
        _seed_and_register(setup)
        if setup.worker_init_fn is not None:
            setup.worker_init_fn(setup.worker_id)
        fetcher = Fetcher(setup.dataset, setup.auto_collation, setup.collate_fn, setup.drop_last)
    except Exception as error:  # reported with the first task, where the main process is listening
        failure = WorkerFailure.caught(error, where)
    try:
        while os.getppid() == parent and not done_event.is_set():
            try:
                message = index_queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                continue
            if message is None:
                break
            if isinstance(message, Resume):
                result_queue.put((message, None))
                ended = False
                if fetcher is not None:
                    fetcher.restart()
                continue
            if ended:
                continue  # this copy of the stream is exhausted: later tasks get no answer (the main process knows)
            task, index = message
            reply = failure if failure is not None else _answer(fetcher, index, setup.worker_id, where)
            failure, ended = None, isinstance(reply, IterableEnd)
            result_queue.put((task, reply))
            del reply, message, index
    except KeyboardInterrupt:  # the main process handles Ctrl-C; a worker just stops
        pass
    if done_event.is_set():
        result_queue.cancel_join_thread()  # nobody reads any more: exit without flushing the pipe


def _answer(fetcher: Any, index: Any, worker_id: int, where: str) -> Any:
    """The reply to one task: the batch, the end of an iterable dataset, or the failure."""
    try:
        return fetcher.fetch(index)
    except StopIteration:
        if fetcher.iterable:
            return IterableEnd(worker_id)
        return WorkerFailure.caught(RuntimeError("the dataset's __getitem__ raised StopIteration"), where)
    except Exception as error:
        return WorkerFailure.caught(error, where)


def _seed_and_register(setup: WorkerSetup) -> None:
    """Seed this process's generators from ``base_seed + id`` and publish its ``WorkerInfo``."""
    global _worker_info
    seed = setup.base_seed + setup.worker_id
    random.seed(seed)
    np.random.seed(np.random.SeedSequence([setup.worker_id, setup.base_seed]).generate_state(4))
    from kiln.frontend import init

    init.manual_seed(seed)
    _worker_info = WorkerInfo(setup.worker_id, setup.num_workers, seed, setup.dataset)


__all__ = ["IterableEnd", "Resume", "WorkerFailure", "WorkerInfo", "WorkerSetup", "get_worker_info", "worker_loop"]
