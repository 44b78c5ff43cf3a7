"""The main-process side of ``DataLoader(num_workers=n)``: worker processes fed round-robin, batches delivered in order.

The main process draws the indices (the sampler runs here, so orders are the same as with ``num_workers=0``) and
keeps ``prefetch_factor * num_workers`` tasks in flight; batch ``k`` goes to worker ``k % n`` (skipping workers
whose ``IterableDataset`` copy has ended) and results that arrive early wait until their turn. Workers stop at the
end of the pass, on ``break`` (the iterator is dropped), on an error, and at interpreter exit; a persistent pool
is kept for the next pass instead. Batches come back pickled (kiln tensors travel as their arrays).
"""

from __future__ import annotations

import atexit
import itertools
import multiprocessing
import multiprocessing.queues  # noqa: F401  (registers multiprocessing's exit hook before ours, so ours runs first)
import queue
import weakref
from typing import Any

from kiln.runtime.data.workers import IterableEnd, Resume, WorkerFailure, WorkerSetup, worker_loop

POLL_SECONDS = 0.5
"""How often the main process, waiting for a batch, checks that the workers are alive."""
JOIN_SECONDS = 5.0
"""How long shutdown waits for a worker to exit before terminating it."""

_live_pools: "weakref.WeakSet[WorkerPool]" = weakref.WeakSet()


def default_context(requested: Any = None) -> Any:
    """The multiprocessing context: ``requested`` (a start-method name or a context), else 'fork' where the platform
    has it (the dataset is not pickled and nothing is re-imported), else 'spawn'."""
    if requested is None:
        requested = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    if isinstance(requested, str):
        methods = multiprocessing.get_all_start_methods()
        if requested not in methods:
            from kiln.runtime.data.samplers import DataValueError

            raise DataValueError(f"multiprocessing_context option should specify a valid start method in {methods!r}, "
                                 f"but got multiprocessing_context={requested!r}")
        return multiprocessing.get_context(requested)
    return requested


class WorkerPool:
    """An iterator over one pass of a loader's batches, computed by worker processes (see the module docstring)."""

    def __init__(self, loader: Any) -> None:
        self._loader, self._num_workers, self._shutdown = loader, loader.num_workers, False
        self._prefetch, self._timeout, self._persistent = loader.prefetch_factor, loader.timeout, loader.persistent_workers
        self._in_order = loader.in_order
        context = default_context(loader.multiprocessing_context)
        self._results, self._done = context.Queue(), context.Event()
        self._index_queues, self._workers = [], []
        base_seed = loader.draw_base_seed()
        for worker_id in range(self._num_workers):
            index_queue = context.Queue()
            index_queue.cancel_join_thread()
            setup = WorkerSetup(loader.dataset, loader.auto_collation, loader.collate_fn, loader.drop_last, base_seed,
                                loader.worker_init_fn, worker_id, self._num_workers)
            worker = context.Process(target=worker_loop, args=(setup, index_queue, self._results, self._done),
                                     name=f"kiln-data-worker-{worker_id}", daemon=True)
            self._index_queues.append(index_queue)
            self._workers.append(worker)
            worker.start()
        _live_pools.add(self)
        self._start_pass(first=True)

    @property
    def closed(self) -> bool:
        """The workers are stopped (the pass ended, failed, or was abandoned)."""
        return self._shutdown

    @property
    def worker_pids(self) -> list[int]:
        return [worker.pid for worker in self._workers]

    def __iter__(self) -> "WorkerPool":
        return self

    def __len__(self) -> int:
        return len(self._loader)

    def reset(self) -> None:
        """Begin another pass on the same (persistent) workers."""
        self._start_pass(first=False)

    def _start_pass(self, first: bool) -> None:
        self._indices = iter(self._loader.index_sampler)
        self._sent = self._delivered = 0
        self._owner: dict[int, int] = {}  # task -> worker, for tasks not delivered yet
        self._arrived: dict[int, Any] = {}  # task -> batch that came before its turn
        self._active = [True] * self._num_workers
        self._next_worker = itertools.cycle(range(self._num_workers))
        if not first:
            self._resume_workers()
        for _ in range(self._prefetch * self._num_workers):
            self._dispatch()

    def _resume_workers(self) -> None:
        """Tell every worker a new pass begins; drop what the last pass left in flight (a ``break``)."""
        for index_queue in self._index_queues:
            index_queue.put(Resume())
        waiting = self._num_workers
        while waiting:
            task, _ = self._receive()
            waiting -= isinstance(task, Resume)

    def _dispatch(self) -> None:
        """Send the sampler's next index to the next worker still producing (nothing when either runs out)."""
        try:
            index = next(self._indices)
        except StopIteration:
            return
        for _ in range(self._num_workers):
            worker = next(self._next_worker)
            if self._active[worker]:
                self._index_queues[worker].put((self._sent, index))
                self._owner[self._sent] = worker
                self._sent += 1
                return

    def __next__(self) -> Any:
        if self._shutdown:
            raise StopIteration
        while True:
            self._skip_tasks_of_ended_workers()
            if self._delivered >= self._sent:
                if not self._persistent:
                    self.shutdown()
                raise StopIteration
            if self._delivered in self._arrived:
                return self._deliver(self._delivered)
            if self._arrived and not self._in_order:
                return self._deliver(next(iter(self._arrived)))
            task, batch = self._receive()
            if isinstance(batch, IterableEnd):
                self._end_worker(batch.worker_id)
            else:
                self._arrived[task] = batch

    def _skip_tasks_of_ended_workers(self) -> None:
        """Tasks sent to a worker after its stream ended get no answer: pass over them."""
        while self._delivered < self._sent and self._delivered not in self._arrived:
            owner = self._owner.get(self._delivered)
            if owner is not None and self._active[owner]:
                return
            self._owner.pop(self._delivered, None)
            self._delivered += 1

    def _deliver(self, task: int) -> Any:
        batch = self._arrived.pop(task)
        del self._owner[task]
        self._delivered = min(self._owner, default=self._sent)  # the oldest task not delivered yet
        self._dispatch()
        if isinstance(batch, WorkerFailure):
            self.shutdown()
            batch.reraise()
        return batch

    def _end_worker(self, worker_id: int) -> None:
        self._active[worker_id] = False
        if not self._persistent:
            self._index_queues[worker_id].put(None)
        self._dispatch()

    def _receive(self) -> tuple[Any, Any]:
        """The next ``(task, batch)`` from any worker; a clear error when one died or ``timeout`` passed."""
        waited = 0.0
        while True:
            wait = POLL_SECONDS if self._timeout <= 0 else min(POLL_SECONDS, self._timeout - waited)
            try:
                return self._results.get(timeout=wait)
            except queue.Empty:
                waited += wait
            self._check_workers_alive()
            if 0 < self._timeout <= waited:
                self.shutdown()
                raise RuntimeError(f"DataLoader timed out after {self._timeout} seconds waiting for batch {self._delivered} "
                                   f"from its {self._num_workers} workers; raise timeout= (0 waits forever) or look at what "
                                   "the dataset's __getitem__/__iter__ is doing")

    def _check_workers_alive(self) -> None:
        dead = [worker for worker, active in zip(self._workers, self._active) if active and not worker.is_alive()]
        if dead:
            details = ", ".join(f"pid {worker.pid} exit code {worker.exitcode}" for worker in dead)
            self.shutdown()
            raise RuntimeError(f"DataLoader worker ({details}) exited unexpectedly; a negative exit code is the signal "
                               "that killed it (-9: out of memory?). Run with num_workers=0 to see the error in-process")

    def shutdown(self) -> None:
        """Stop every worker: signal, wait up to ``JOIN_SECONDS`` each, then terminate; close the queues."""
        if self._shutdown:
            return
        self._shutdown = True
        _live_pools.discard(self)
        try:
            self._done.set()
            for worker, index_queue in zip(self._workers, self._index_queues):
                if worker.is_alive():
                    index_queue.put(None)
            for worker in self._workers:
                worker.join(timeout=JOIN_SECONDS)
        finally:
            for worker in self._workers:
                if worker.is_alive():
                    worker.terminate()
                    worker.join(timeout=JOIN_SECONDS)
            for channel in (*self._index_queues, self._results):
                channel.cancel_join_thread()
                channel.close()

    def __del__(self) -> None:
        if hasattr(self, "_shutdown"):
            self.shutdown()

    def __getstate__(self) -> None:
        raise TypeError("a DataLoader iterator with worker processes cannot be pickled; pickle the DataLoader's arguments")


@atexit.register
def _shutdown_live_pools() -> None:
    """At interpreter exit stop the workers of every pass still open (a persistent pool, an unfinished loop)."""
    for pool in list(_live_pools):
        pool.shutdown()


__all__ = ["WorkerPool", "default_context"]
