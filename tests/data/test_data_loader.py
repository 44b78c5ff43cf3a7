"""DataLoader: each sample once per epoch, seeded order, per-rank shards, and a prefetch thread that always stops."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from kiln.runtime.data import ArrayDataset, DataError, DataLoader, default_collate


def prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "kiln-prefetch" and t.is_alive()]


def dataset(count: int = 103) -> ArrayDataset:
    return ArrayDataset(np.arange(count, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32), np.arange(count))


@pytest.mark.parametrize("batch_size", [1, 7, 32, 103, 500])
@pytest.mark.parametrize("prefetch", [0, 2])
def test_every_sample_appears_exactly_once_per_epoch(batch_size, prefetch):
    loader = DataLoader(dataset(), batch_size=batch_size, shuffle=True, seed=3, prefetch=prefetch)
    for epoch in range(3):
        loader.set_epoch(epoch)
        seen = np.concatenate([y for _, y in loader])
        assert sorted(seen.tolist()) == list(range(103))
        assert len(list(loader)) == len(loader) == -(-103 // batch_size)


def test_drop_last_serves_only_full_batches():
    loader = DataLoader(dataset(), batch_size=10, shuffle=True, drop_last=True)
    batches = [y for _, y in loader]
    assert len(batches) == len(loader) == 10 and all(len(b) == 10 for b in batches)
    assert len(set(np.concatenate(batches).tolist())) == 100


def test_order_is_reproducible_from_the_seed_and_changes_per_epoch():
    def order(seed, epoch):
        loader = DataLoader(dataset(), batch_size=16, shuffle=True, seed=seed)
        loader.set_epoch(epoch)
        return np.concatenate([y for _, y in loader])

    np.testing.assert_array_equal(order(0, 0), order(0, 0))
    np.testing.assert_array_equal(order(0, 5), order(0, 5))
    assert not np.array_equal(order(0, 0), order(0, 1))
    assert not np.array_equal(order(0, 0), order(1, 0))
    np.testing.assert_array_equal(np.concatenate([y for _, y in DataLoader(dataset(), batch_size=16)]), np.arange(103))


def test_resuming_mid_epoch_serves_the_remaining_batches():
    loader = DataLoader(dataset(), batch_size=8, shuffle=True, seed=1)
    full = [y for _, y in loader.iterate(2)]
    rest = [y for _, y in loader.iterate(2, start=5)]
    assert len(rest) == len(full) - 5
    for a, b in zip(full[5:], rest):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_rank_shards_are_disjoint_equal_and_cover_the_epoch(world_size):
    shards = [np.concatenate([y for _, y in DataLoader(dataset(100), batch_size=5, shuffle=True, seed=2, rank=r, world_size=world_size)])
              for r in range(world_size)]
    assert len({len(s) for s in shards}) == 1
    covered = np.concatenate(shards)
    assert set(covered.tolist()) == set(range(100))
    if 100 % world_size == 0:
        assert len(covered) == 100


def test_collate_fn_and_plain_datasets():
    samples = [{"x": np.full(2, i), "y": i} for i in range(10)]
    loader = DataLoader(samples, batch_size=4, prefetch=0)
    batch = next(iter(loader))
    np.testing.assert_array_equal(batch["y"], [0, 1, 2, 3])
    assert batch["x"].shape == (4, 2)
    sums = [b for b in DataLoader(list(range(10)), batch_size=5, collate_fn=sum)]
    assert sums == [10, 35]
    assert default_collate([(1, 2.0), (3, 4.0)])[0].tolist() == [1, 3]


def test_bad_settings_are_reported():
    with pytest.raises(DataError, match="differ in length"):
        ArrayDataset(np.zeros(3), np.zeros(4))
    with pytest.raises(DataError, match="batch_size"):
        DataLoader(dataset(), batch_size=0)
    with pytest.raises(DataError, match="rank 2 is outside world_size 2"):
        DataLoader(dataset(), rank=2, world_size=2)


class SlowDataset:
    """Records which samples were read; optionally fails at one index."""

    def __init__(self, count: int = 64, fail_at: int | None = None, delay: float = 0.0):
        self.count, self.fail_at, self.delay, self.read = count, fail_at, delay, []

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        if index == self.fail_at:
            raise KeyError(f"sample {index} is broken")
        time.sleep(self.delay)
        self.read.append(index)
        return np.float32(index)


def test_prefetch_runs_ahead_of_the_consumer():
    data = SlowDataset(64)
    iterator = iter(DataLoader(data, batch_size=4, prefetch=3))
    next(iterator)
    deadline = time.time() + 5
    while len(data.read) < 4 * 3 and time.time() < deadline:
        time.sleep(0.01)
    assert len(data.read) >= 4 * 3  # batches 2..4 were loaded while the first was being used
    iterator.close()
    assert not prefetch_threads()


def test_prefetch_thread_stops_on_early_exit():
    for _ in DataLoader(SlowDataset(400), batch_size=2, prefetch=2):
        break
    assert not prefetch_threads()


def test_prefetch_thread_stops_when_the_consumer_raises():
    with pytest.raises(RuntimeError, match="training failed"):
        for _ in DataLoader(SlowDataset(400), batch_size=2, prefetch=2):
            raise RuntimeError("training failed")
    assert not prefetch_threads()


def test_a_loading_error_reaches_the_consumer_and_stops_the_thread():
    seen = []
    with pytest.raises(KeyError, match="sample 10 is broken"):
        for batch in DataLoader(SlowDataset(64, fail_at=10), batch_size=4, prefetch=2):
            seen.append(batch)
    assert len(seen) == 2  # the batches before the broken one were delivered, in order
    assert not prefetch_threads()
