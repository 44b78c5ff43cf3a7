"""``DataLoader(num_workers=n)``: real worker processes give the in-process batches in order (and torch's, for a
sharded ``IterableDataset``), seed themselves and run ``worker_init_fn``, keep ``prefetch_factor`` batches per worker
in flight, persist when asked, re-raise a worker's error with its id and traceback, time out, and leave no process
behind after the pass, a ``break``, an error, interpreter exit, or the death of the main process."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import kiln
import kiln.utils.data as data
from oracles import require
from test_torch_collate import assert_same

pytestmark = pytest.mark.filterwarnings("ignore:This DataLoader will create 3 worker processes")  # 3 workers, 2 cores

class Uneven(data.Dataset):
    """Sample ``i`` is ``(i, pid of the process that read it)``; every 4th sample is slow, so batches finish out of order."""

    def __init__(self, count=23):
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, i):
        time.sleep(0.03 if i % 4 == 0 else 0.0)
        return np.full(2, i, np.float32), os.getpid()


def _sharded_class(base, info):
    class Sharded(base):
        """``range(n)`` split between the workers by ``info()`` (every worker's share is a different length)."""

        def __init__(self, n):
            self.n = n

        def __iter__(self):
            worker = info()
            if worker is None:
                return iter(range(self.n))
            return iter(range(worker.id, self.n, worker.num_workers))

    return Sharded


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except FileNotFoundError:
        return False


def _wait_gone(pids, seconds=30.0):
    """The pids that are still running after waiting up to ``seconds`` for them to exit (empty when all exited)."""
    deadline = time.monotonic() + seconds
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if _running(pid)]


def _values(batches):
    return [batch[0].numpy().tolist() for batch in batches]


@pytest.mark.parametrize("num_workers, prefetch_factor, batch_size", [(1, 1, 4), (2, 2, 4), (3, 1, 3), (2, 3, None)])
def test_workers_give_the_in_process_batches_in_order(num_workers, prefetch_factor, batch_size):
    def loader(workers, **options):
        return data.DataLoader(Uneven(), batch_size=batch_size, shuffle=True, generator=kiln.Generator().manual_seed(7),
                               num_workers=workers, **options)

    in_process = list(loader(0))
    batches = list(loader(num_workers, prefetch_factor=prefetch_factor))
    assert _values(batches) == _values(in_process)
    pids = {int(pid) for batch in batches for pid in np.atleast_1d(np.asarray(batch[1]))}
    assert os.getpid() not in pids and len(pids) == num_workers and not _wait_gone(pids)


@pytest.mark.parametrize("options", [{"batch_size": 4}, {"batch_size": 4, "drop_last": True}, {"batch_size": None}])
def test_a_sharded_iterable_dataset_arrives_as_torchs_workers_deliver_it(options):
    torch = require("torch")
    ours = data.DataLoader(_sharded_class(data.IterableDataset, data.get_worker_info)(23), num_workers=3, **options)
    theirs = torch.utils.data.DataLoader(_sharded_class(torch.utils.data.IterableDataset, torch.utils.data.get_worker_info)(23),
                                         num_workers=3, **options)
    assert_same(list(ours), list(theirs), torch)


class Seeds(data.Dataset):
    """Each sample reports the worker's info and a draw from every generator a worker seeds."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        info = data.get_worker_info()
        return (info.id, info.num_workers, info.seed, info.dataset.tag, info.dataset is self, random.random(),
                float(np.random.rand()), float(kiln.rand(1).numpy()[0]))


def _tag_dataset(worker_id):
    data.get_worker_info().dataset.tag = 100 + worker_id


def _seeds(seed):
    kiln.manual_seed(seed)
    dataset = Seeds()
    dataset.tag = -1
    return [tuple(np.asarray(field.numpy()).tolist() for field in batch)
            for batch in data.DataLoader(dataset, batch_size=2, num_workers=2, worker_init_fn=_tag_dataset)]


def test_workers_are_seeded_per_worker_and_run_worker_init_fn():
    (ids0, counts0, seeds0, tags0, own0, *draws0), (ids1, counts1, seeds1, tags1, own1, *draws1) = first = _seeds(3)
    assert ids0 == [0, 0] and ids1 == [1, 1] and counts0 == counts1 == [2, 2] and own0 == own1 == [True, True]
    assert tags0 == [100, 100] and tags1 == [101, 101]  # worker_init_fn ran in each worker, on its own copy
    assert seeds1[0] == seeds0[0] + 1  # worker i is seeded with base_seed + i
    assert all(a != b for a, b in zip(draws0, draws1))  # each generator gives each worker its own stream
    assert _seeds(3) == first and _seeds(4) != first  # kiln.manual_seed repeats the base seed
    assert data.get_worker_info() is None


def test_prefetch_factor_bounds_the_batches_in_flight():
    counter = multiprocessing.get_context("fork").Value("i", 0)

    class Counted(data.Dataset):
        def __len__(self):
            return 40

        def __getitem__(self, i):
            with counter.get_lock():
                counter.value += 1
            return i

    iterator = iter(data.DataLoader(Counted(), batch_size=2, num_workers=2, prefetch_factor=3))
    next(iterator)
    expected = (3 * 2 + 1) * 2  # 6 batches in flight at the start, one more sent when the first is taken
    deadline = time.monotonic() + 30
    while counter.value < expected and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # time for a worker to read further, were it allowed to
    assert counter.value == expected
    del iterator


def test_persistent_workers_serve_every_pass_and_survive_a_break():
    loader = data.DataLoader(Uneven(13), batch_size=3, num_workers=2, persistent_workers=True)
    first = list(loader)
    for batch in loader:  # abandon the second pass after one batch: its batches in flight are dropped
        break
    second = list(loader)
    assert _values(first) == _values(second) == [[[i, i] for i in range(s, min(s + 3, 13))] for s in range(0, 13, 3)]
    pids = {int(p) for b in first + second for p in b[1].numpy()}
    assert len(pids) == 2 and all(_running(pid) for pid in pids)  # the same two processes served every pass
    del loader, batch
    import gc

    gc.collect()
    assert not _wait_gone(pids)


class Failing(data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        if i == 5:
            raise KeyError(f"no sample {i} in the index file")
        return os.getpid()


def test_a_worker_error_is_reraised_with_its_worker_and_traceback_and_stops_the_workers():
    torch = require("torch")
    with pytest.raises(KeyError) as theirs:
        list(torch.utils.data.DataLoader(Failing(), batch_size=2, num_workers=2))
    pids = set()
    with pytest.raises(KeyError) as raised:
        for batch in data.DataLoader(Failing(), batch_size=2, num_workers=2):
            pids.update(batch.numpy().tolist())
    message = str(raised.value)
    assert "Caught KeyError in DataLoader worker process 0." in str(theirs.value)  # batch 2 (samples 4, 5) is worker 0's
    assert "Caught KeyError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):" in message
    assert 'raise KeyError(f"no sample {i} in the index file")' in message and "no sample 5 in the index file" in message
    assert len(pids) == 2 and not _wait_gone(pids)


def test_an_error_of_a_type_that_cannot_travel_arrives_as_runtime_error():
    class LocalError(Exception):
        pass

    class Raising(data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise LocalError("made in a worker")

    with pytest.raises(RuntimeError, match=r"(?s)Caught LocalError in DataLoader worker process 0\..*made in a worker"):
        list(data.DataLoader(Raising(), num_workers=1))


def _failing_init(worker_id):
    raise ZeroDivisionError(f"worker {worker_id} cannot open its shard")


def test_a_failing_worker_init_fn_is_reraised_with_its_worker():
    with pytest.raises(ZeroDivisionError, match=r"(?s)Caught ZeroDivisionError in DataLoader worker process 0\..*cannot open"):
        list(data.DataLoader(Uneven(4), num_workers=2, worker_init_fn=_failing_init))


def test_out_of_order_delivery_gives_every_batch_once():
    loader = data.DataLoader(Uneven(), batch_size=2, num_workers=2, in_order=False)
    assert sorted(_values(loader)) == _values(data.DataLoader(Uneven(), batch_size=2))


def test_a_break_stops_the_workers():
    loader = data.DataLoader(Uneven(40), batch_size=2, num_workers=2)
    pids = set()
    for batch in loader:
        pids.add(int(batch[1].numpy()[0]))
        if len(pids) == 2:
            break
    del batch
    assert len(pids) == 2 and not _wait_gone(pids)


def test_a_worker_that_dies_is_reported_with_its_exit_code():
    class Dying(data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            os._exit(3)

    with pytest.raises(RuntimeError, match=r"DataLoader worker \(pid \d+ exit code 3\) exited unexpectedly"):
        list(data.DataLoader(Dying(), num_workers=1))


def test_a_slow_batch_times_out_with_what_to_do():
    class Stuck(data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            time.sleep(60)

    with pytest.raises(RuntimeError, match=r"DataLoader timed out after 0.5 seconds waiting for batch 0 .*raise timeout="):
        list(data.DataLoader(Stuck(), num_workers=1, timeout=0.5))


_EXIT_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import kiln.utils.data as data

    class Pids(data.Dataset):
        def __len__(self):
            return 64
        def __getitem__(self, i):
            return os.getpid()

    persistent = data.DataLoader(Pids(), batch_size=2, num_workers=2, persistent_workers=True)
    list(persistent)
    unfinished = iter(data.DataLoader(Pids(), batch_size=2, num_workers=2))  # a pass left open at exit
    pids = {int(p) for it in (iter(persistent), unfinished) for _ in range(2) for p in next(it).numpy()}
    print(" ".join(map(str, sorted(pids))), flush=True)
    if sys.argv[1] == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("how", ["exits", "killed"])
def test_no_worker_outlives_the_main_process(how, tmp_path):
    script, out, err = tmp_path / "loader_exit.py", tmp_path / "pids.txt", tmp_path / "stderr.txt"
    script.write_text(_EXIT_SCRIPT)
    with open(out, "w") as stdout, open(err, "w") as stderr:  # files, not pipes: a leftover worker cannot hold them open
        done = subprocess.run([sys.executable, str(script), how], stdout=stdout, stderr=stderr, timeout=300)
    assert done.returncode == (0 if how == "exits" else -9), err.read_text()
    pids = [int(pid) for pid in out.read_text().split()]
    leftover = _wait_gone(pids)
    for pid in leftover:  # do not leave them running when the test fails
        os.kill(pid, signal.SIGKILL)
    assert len(pids) == 4 and not leftover


def test_spawned_workers_load_a_tensor_dataset():
    dataset = data.TensorDataset(np.arange(10.0).reshape(5, 2), np.arange(5))
    spawned = data.DataLoader(dataset, batch_size=2, num_workers=2, multiprocessing_context="spawn")
    assert_same_batches = [b.numpy().tolist() for batch in spawned for b in batch]
    assert assert_same_batches == [b.numpy().tolist() for batch in data.DataLoader(dataset, batch_size=2) for b in batch]


def test_pin_memory_is_accepted_and_changes_nothing():
    dataset = data.TensorDataset(np.arange(6.0))
    pinned = data.DataLoader(dataset, batch_size=4, pin_memory=True)
    assert [b.numpy().tolist() for (b,) in pinned] == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0]]


def test_kiln_multiprocessing_is_pythons():
    import kiln.multiprocessing as mp

    assert mp.get_context is multiprocessing.get_context and "fork" in mp.get_all_start_methods()
