"""Saving and resuming a training step: 30 steps, save, load in a fresh process, 30 more == 60 uninterrupted, bit for bit.

Also: what ``state_dict`` holds, that a bad checkpoint is refused before
anything is written, and that a failed save leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import kiln

# The training script both processes run: the MLP, Adam with a warm-up/cosine schedule, clipping, and
# the batches of a given step range. Run as `python -c SCRIPT checkpoint_in checkpoint_out first last`.
SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import kiln, kiln.nn as nn, kiln.nn.functional as F

    def setup():
        kiln.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10))
        decay = [p for name, p in model.named_parameters() if name.endswith("weight")]
        no_decay = [p for name, p in model.named_parameters() if name.endswith("bias")]
        optimizer = kiln.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=3e-3, amsgrad=True)
        schedule = kiln.optim.lr_scheduler.warmup_cosine(optimizer, warmup_steps=10, total_steps=60)
        step = kiln.compile_train_step(model, F.cross_entropy, optimizer, clip_grad_norm=1.0)
        return model, optimizer, schedule, step

    def batch(index):
        rng = np.random.default_rng(index)
        return rng.random((32, 64), dtype=np.float32), rng.integers(0, 10, 32)

    def train(step, schedule, first, last):
        losses = []
        for index in range(first, last):
            losses.append(step(*batch(index)))
            schedule.step()
        return losses

    def save(path, step, schedule, losses):
        kiln.save(path, {"train": step.state_dict(), "schedule": schedule.state_dict(), "losses": losses})

    if __name__ == "__main__":
        source, target, first, last = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        model, optimizer, schedule, step = setup()
        losses = []
        if source != "-":
            saved = kiln.load(source)
            step.load_state_dict(saved["train"])
            schedule.load_state_dict(saved["schedule"])
            losses = saved["losses"]
        save(target, step, schedule, losses + train(step, schedule, first, last))
    """
)


def run_script(tmp_path, source: str, target: str, first: int, last: int) -> dict:
    environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, source, str(tmp_path / target), str(first), str(last)],
        capture_output=True, text=True, env=environment, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    return kiln.load(tmp_path / target)


def test_resume_in_a_fresh_process_continues_bit_for_bit(tmp_path):
    uninterrupted = run_script(tmp_path, "-", "straight.npz", 0, 60)
    run_script(tmp_path, "-", "first_half.npz", 0, 30)
    resumed = run_script(tmp_path, str(tmp_path / "first_half.npz"), "resumed.npz", 30, 60)
    assert resumed["losses"] == uninterrupted["losses"]  # Python floats: exact equality
    for name, value in uninterrupted["train"]["model"].items():
        np.testing.assert_array_equal(resumed["train"]["model"][name], value, err_msg=name)
    ours, theirs = resumed["train"]["optimizer"], uninterrupted["train"]["optimizer"]
    assert ours["step"] == theirs["step"] == 60
    assert ours["param_groups"] == theirs["param_groups"]
    for name, state in theirs["state"].items():
        for key, value in state.items():
            np.testing.assert_array_equal(ours["state"][name][key], value, err_msg=f"{name}.{key}")
    assert resumed["schedule"] == uninterrupted["schedule"]


def make_step():
    import kiln.nn as nn
    import kiln.nn.functional as F

    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return kiln.compile_train_step(model, F.cross_entropy, optimizer), model, optimizer


BATCH = (np.random.default_rng(1).random((5, 4), dtype=np.float32), np.array([0, 1, 2, 1, 0]))


def test_state_dict_holds_model_optimizer_state_groups_and_step():
    step, model, optimizer = make_step()
    for _ in range(3):
        step(*BATCH)
    state = step.state_dict()
    assert list(state["model"]) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert state["model"]["0.weight"] is model.state_dict()["0.weight"]
    assert set(state["optimizer"]["state"]) == set(state["model"])
    assert list(state["optimizer"]["state"]["2.bias"]) == ["momentum_buffer"]
    assert state["optimizer"]["param_groups"] == [
        {"lr": 0.1, "momentum": 0.9, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False, "maximize": False,
         "foreach": None, "differentiable": False, "fused": None, "params": list(state["model"])}
    ]
    assert state["optimizer"]["step"] == 3
    assert state["optimizer"]["skipped_steps"] == {}  # a compiled step updates every trained parameter each step


def test_save_and_load_round_trip_restores_everything_in_place(tmp_path):
    step, model, optimizer = make_step()
    step(*BATCH)
    step.save(tmp_path / "one.npz")
    expected_loss = step(*BATCH)
    weight, buffer = model.state_dict()["0.weight"], optimizer.state_of(model[0].weight)["momentum_buffer"]
    step.load(tmp_path / "one.npz")
    assert model.state_dict()["0.weight"] is weight  # loaded in place
    assert np.shares_memory(optimizer.state_of(model[0].weight)["momentum_buffer"], buffer)  # a view of the same array
    assert optimizer.step_count == 1
    assert step(*BATCH) == expected_loss


def test_a_mismatched_state_is_refused_before_anything_is_written():
    step, model, optimizer = make_step()
    step(*BATCH)
    live = step.state_dict()
    state = {"model": {k: v.copy() for k, v in live["model"].items()}, "optimizer": live["optimizer"]}
    state["optimizer"]["state"] = {k: dict(v) for k, v in state["optimizer"]["state"].items()}
    state["optimizer"]["state"]["2.bias"]["momentum_buffer"] = np.zeros(7, np.float32)
    for value in state["model"].values():
        value += 1.0
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(kiln.CheckpointError, match=r"optimizer state 2.bias.momentum_buffer has shape \(7,\), the parameter \(3,\)"):
        step.load_state_dict(state)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    with pytest.raises(kiln.CheckpointError, match=r"lacks \['optimizer'\]"):
        step.load_state_dict({"model": state["model"]})


def test_a_corrupt_file_gets_one_clear_error(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"not a zip file at all")
    with pytest.raises(kiln.CheckpointError, match=r"broken.npz is not a readable kiln checkpoint"):
        kiln.load(path)
    np.savez(tmp_path / "plain.npz", x=np.zeros(3))
    with pytest.raises(kiln.CheckpointError, match=r"plain.npz is not a readable kiln checkpoint"):
        kiln.load(tmp_path / "plain.npz")


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path):
    path = tmp_path / "keep.npz"
    kiln.save(path, {"weights": np.arange(3.0)})
    with pytest.raises(kiln.CheckpointError, match=r"cannot save state\['bad'\]: a function is not an array"):
        kiln.save(path, {"weights": np.zeros(3), "bad": lambda: 0})  # a set is pickled, as torch.save does
    with pytest.raises(kiln.CheckpointError, match=r"object arrays would need pickle"):
        kiln.save(path, {"weights": np.array([None, 1], dtype=object)})
    np.testing.assert_array_equal(kiln.load(path)["weights"], np.arange(3.0))
    assert os.listdir(tmp_path) == ["keep.npz"]  # no temporary files left behind


def test_trees_round_trip_exactly(tmp_path):
    tree = {"a": [1, 2.5, None, "x", True], "b": (0.1, 1e-300), 3: {"nested": np.float32(1.5)}, "arrays": [np.eye(2, dtype=np.int32)]}
    kiln.save(tmp_path / "tree.npz", tree)
    loaded = kiln.load(tmp_path / "tree.npz")
    assert loaded["a"] == tree["a"] and loaded["b"] == tree["b"] and isinstance(loaded["b"], tuple)
    assert loaded[3]["nested"].dtype == kiln.float32 and loaded[3]["nested"].shape == () and loaded[3]["nested"].item() == 1.5
    np.testing.assert_array_equal(loaded["arrays"][0], np.eye(2, dtype=np.int32))
    assert isinstance(loaded["arrays"][0], kiln.Tensor) and loaded["arrays"][0].dtype == kiln.int32  # as torch.load's
    json.dumps(kiln.load(tmp_path / "tree.npz")["a"])  # plain Python values come back
