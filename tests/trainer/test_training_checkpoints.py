"""Training checkpoints: manifest and round trip; truncation and flipped bytes are caught; a failed save keeps the last good one."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import CheckpointError
from kiln.runtime import checkpoint, checkpoint_manager
from kiln.runtime.checkpoint_manager import CheckpointManager, load_training_checkpoint, restore_training_checkpoint, save_training_checkpoint


def make_step(seed: int = 0, hidden: int = 6):
    kiln.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, hidden), nn.Tanh(), nn.Linear(hidden, 3))
    return kiln.compile_train_step(model, F.cross_entropy, kiln.optim.Adam(model.parameters(), lr=0.05))


def train(step, updates: int = 3) -> None:
    rng = np.random.default_rng(step.optimizer.step_count)
    for _ in range(updates):
        step(rng.standard_normal((8, 5)).astype(np.float32), rng.integers(0, 3, 8))


def snapshot(step) -> dict[str, np.ndarray]:
    arrays = {f"model/{k}": v.copy() for k, v in step.model.state_dict().items()}
    for key, state in step.optimizer.state_dict()["state"].items():
        arrays.update({f"optimizer/{key}/{name}": np.array(a) for name, a in state.items()})
    return arrays


def assert_same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.fixture
def saved(tmp_path):
    step = make_step()
    train(step)
    path = str(tmp_path / "checkpoint.npz")
    save_training_checkpoint(path, step, {"epoch": 1, "batch": 2})
    return path, step


def test_manifest_and_round_trip(saved):
    path, step = saved
    tree = load_training_checkpoint(path)
    manifest = tree["manifest"]
    assert manifest["step"] == 3 and manifest["kiln_version"] and manifest["optimizer"]["class"] == "Adam"
    assert manifest["optimizer"]["defaults"]["betas"] == (0.9, 0.999) and manifest["model"]["class"] == "Sequential"
    assert manifest["rng"]["bit_generator"] == "PCG64"
    fresh = make_step(seed=1)
    assert restore_training_checkpoint(path, fresh) == {"epoch": 1, "batch": 2}
    assert fresh.optimizer.step_count == 3
    assert_same(snapshot(fresh), snapshot(step))
    train(fresh), train(step)  # and both continue identically
    assert_same(snapshot(fresh), snapshot(step))


def test_no_pickle_in_the_file(saved):
    path, _ = saved
    with np.load(path, allow_pickle=False) as members:
        assert all(members[name].dtype != object for name in members.files)


@pytest.mark.parametrize("keep_fraction", [0.0, 0.3, 0.5, 0.9, 0.999])
def test_truncated_checkpoint_is_reported(saved, keep_fraction):
    path, _ = saved
    data = open(path, "rb").read()
    with open(path, "wb") as file:
        file.write(data[: int(len(data) * keep_fraction)])
    with pytest.raises(CheckpointError, match="checkpoint.npz"):
        load_training_checkpoint(path)


def test_a_flipped_byte_never_loads_silently(saved):
    """Every flip is caught, or leaves bytes that do not matter (zip timestamps...): the loaded state is then exact."""
    path, step = saved
    original = open(path, "rb").read()
    expected = load_training_checkpoint(path)
    weight = step.model.state_dict()["0.weight"].tobytes()
    payload = original.find(weight)
    assert payload > 0
    detected, harmless = 0, 0
    for position in list(range(0, len(original), 7)) + [payload + len(weight) // 2]:
        corrupted = bytearray(original)
        corrupted[position] ^= 0x10
        with open(path, "wb") as file:
            file.write(corrupted)
        try:
            tree = load_training_checkpoint(path)
        except CheckpointError as error:
            assert "checkpoint.npz" in str(error)
            detected += 1
            continue
        harmless += 1
        assert checkpoint_manager.checksum(tree) == checkpoint_manager.checksum(expected), f"flip at byte {position} went unnoticed"
    assert detected > harmless  # and the flip inside the weights' bytes was among the detected ones
    corrupted = bytearray(original)
    corrupted[payload + len(weight) // 2] ^= 0x01
    with open(path, "wb") as file:
        file.write(corrupted)
    with pytest.raises(CheckpointError):
        load_training_checkpoint(path)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(saved, monkeypatch):
    path, step = saved
    before = open(path, "rb").read()
    train(step)

    def disk_full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_training_checkpoint(path, step)
    monkeypatch.undo()
    assert open(path, "rb").read() == before
    assert os.listdir(os.path.dirname(path)) == ["checkpoint.npz"]  # no temporary file left behind
    assert load_training_checkpoint(path)["manifest"]["step"] == 3


def test_manager_keeps_the_newest_and_never_prunes_after_a_bad_write(tmp_path, monkeypatch):
    step = make_step()
    manager = CheckpointManager(str(tmp_path), keep=2)
    for _ in range(4):
        train(step, 1)
        manager.save(step)
    assert [os.path.basename(p) for p in manager.checkpoints()] == ["checkpoint-00000003.npz", "checkpoint-00000004.npz"]
    train(step, 1)

    def write_garbage(path, tree):
        with open(path, "wb") as file:
            file.write(b"garbage")

    monkeypatch.setattr(checkpoint_manager.checkpoint, "save", write_garbage)
    with pytest.raises(CheckpointError, match="checkpoint-00000005.npz"):
        manager.save(step)
    monkeypatch.undo()
    assert len(manager.checkpoints()) == 3  # nothing older was pruned
    with pytest.warns(UserWarning, match="skipping a bad checkpoint"):
        assert manager.latest_valid().endswith("checkpoint-00000004.npz")
    fresh = make_step(seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manager.restore(fresh)
    assert fresh.optimizer.step_count == 4


def test_a_checkpoint_that_does_not_fit_is_reported(saved):
    path, _ = saved
    with pytest.raises(CheckpointError, match="does not fit"):
        restore_training_checkpoint(path, make_step(hidden=7))
    with pytest.raises(CheckpointError, match="does not exist"):
        load_training_checkpoint(path + ".missing")
    other = path + ".other.npz"
    checkpoint.save(other, {"just": np.zeros(3)})
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        load_training_checkpoint(other)


def test_a_data_parallel_step_restores_its_loss_scale_into_the_wrapped_step(tmp_path):
    from kiln.distributed import DataParallel
    from one_rank import OneRank

    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.05), loss_scale=8.0)
    path = str(tmp_path / "scaled.npz")
    save_training_checkpoint(path, step, {"epoch": 0, "batch": 0})
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    wrapped = DataParallel(kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.05), loss_scale=1.0),
                           comm=OneRank())
    restore_training_checkpoint(path, wrapped)
    assert wrapped.step.loss_scale == 8.0 and "loss_scale" not in vars(wrapped)
