"""kiln's own resumes read PyTorch's format, which ``kiln.save`` now writes for paths not ending in ``.npz``: a compiled
step's ``step.save("step.pt")``/``step.load``, a training checkpoint (manifest, checksum, RNG) written to a ``.pt`` path
and restored, and ``kiln.fit``'s resume from its checkpoint folder (kiln's ``.npz`` files), all in one process; each
resumed run gives the straight run's losses bit for bit, and ``torch.load(weights_only=True)`` reads the ``.pt`` files."""

from __future__ import annotations

import os
import sys

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.runtime.checkpoint_manager import CheckpointManager, restore_training_checkpoint, save_training_checkpoint
from oracles import require_torch

TRAINER_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "trainer")


def make_step(seed: int):
    kiln.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    return kiln.compile_train_step(model, F.cross_entropy, kiln.optim.Adam(model.parameters(), lr=0.05))


def batches(count: int):
    rng = np.random.default_rng(7)
    return [(rng.standard_normal((8, 5)).astype(np.float32), rng.integers(0, 3, 8)) for _ in range(count)]


def test_step_save_to_a_pt_path_resumes_exactly_and_torch_reads_it(tmp_path):
    torch = require_torch()
    data = batches(6)
    step = make_step(0)
    for x, y in data[:3]:
        step(x, y)
    step.save(str(tmp_path / "step.pt"))
    expected = [float(step(x, y)) for x, y in data[3:]]
    resumed = make_step(1)
    resumed.load(str(tmp_path / "step.pt"))
    assert [float(resumed(x, y)) for x, y in data[3:]] == expected
    saved = torch.load(tmp_path / "step.pt", weights_only=True)
    assert saved["optimizer"]["step"] == 3 and tuple(saved["model"]["0.weight"].shape) == (8, 5)
    assert saved["model"]["0.weight"].dtype == torch.float32


def test_a_training_checkpoint_at_a_pt_path_restores_exactly_and_torch_reads_it(tmp_path):
    torch = require_torch()
    data = batches(6)
    step = make_step(0)
    for x, y in data[:3]:
        step(x, y)
    path = str(tmp_path / "checkpoint.pt")
    save_training_checkpoint(path, step, {"epoch": 1, "batch": 3})
    expected = [float(step(x, y)) for x, y in data[3:]]
    resumed = make_step(1)
    assert restore_training_checkpoint(path, resumed) == {"epoch": 1, "batch": 3}
    assert [float(resumed(x, y)) for x, y in data[3:]] == expected
    manifest = torch.load(path, weights_only=True)["manifest"]
    assert manifest["step"] == 3 and manifest["rng"]["bit_generator"] == "PCG64" and len(manifest["sha256"]) == 64


def test_fit_resumes_in_process_from_its_checkpoint_folder(tmp_path):
    """kill_resume_run's training, stopped after one epoch and resumed for the other two in the same process."""
    sys.path.insert(0, TRAINER_TESTS)
    try:
        import kill_resume_run
    finally:
        sys.path.remove(TRAINER_TESTS)
    reference, model = kill_resume_run.train(None, epochs=3)
    kill_resume_run.train(str(tmp_path), epochs=1)
    assert CheckpointManager(str(tmp_path)).checkpoints()[-1].endswith(".npz")  # kiln's format, as before
    resumed, resumed_model = kill_resume_run.train(str(tmp_path), resume=True, epochs=3)
    assert [record["loss"] for record in resumed.steps] == [record["loss"] for record in reference.steps]
    for name, array in model.state_dict().items():
        np.testing.assert_array_equal(resumed_model.state_dict()[name], array, err_msg=name)


def test_a_numpy_lr_in_param_groups_resumes_from_either_torch_format(tmp_path):
    """DINO writes ``np.float64`` schedules into ``param_groups``; torch.save pickles such a scalar, which
    weights_only=True refuses in torch.load and kiln.load, but kiln's own resume (``step.load``, rank 0's broadcast
    bytes through ``checkpoint.loads``) reads it back as the NPZ format does, a ``np.float64``."""
    from kiln.runtime import checkpoint

    data = batches(4)
    step = make_step(0)
    for x, y in data[:2]:
        step(x, y)
    step.optimizer.param_groups[0]["lr"] = np.float64(0.025)
    files = {"step.pt": {}, "legacy.pth": {"_use_new_zipfile_serialization": False}}
    for name, options in files.items():
        checkpoint.save(str(tmp_path / name), step.state_dict(), **options)
    expected = [float(step(x, y)) for x, y in data[2:]]
    for name in files:
        path = str(tmp_path / name)
        resumed = make_step(1)
        resumed.load(path)
        lr = resumed.optimizer.param_groups[0]["lr"]
        assert type(lr) is np.float64 and lr == 0.025, name
        assert [float(resumed(x, y)) for x, y in data[2:]] == expected, name
        broadcast = checkpoint.loads(memoryview(open(path, "rb").read()), path)
        assert type(broadcast["optimizer"]["param_groups"][0]["lr"]) is np.float64, name
