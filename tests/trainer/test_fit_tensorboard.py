"""``kiln.fit(callbacks=[TensorBoard(log_dir)])``: every step's loss and every epoch's record, read back by
TensorBoard's ``EventAccumulator``, equal the run's ``History``; a device-side loss is written one step late."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.runtime.data import ArrayDataset, DataLoader
from kiln.runtime.lazy import LazyScalar
from kiln.runtime.tensorboard_callback import TensorBoard
from oracles import require


def _scalars(log_dir):
    event_accumulator = require("tensorboard.backend.event_processing.event_accumulator")
    accumulator = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]}


def test_fit_logs_the_history(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 10)).astype(np.float32)
    y = x[:, :3].argmax(axis=1)
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.3))
    train = DataLoader(ArrayDataset(x[:64], y[:64]), batch_size=16, shuffle=True)
    test = DataLoader(ArrayDataset(x[64:], y[64:]), batch_size=32)
    history = kiln.fit(step, train, epochs=3, eval_loader=test, metrics=["accuracy"], progress=False,
                       callbacks=[TensorBoard(str(tmp_path))])  # fmt: skip
    logged = _scalars(tmp_path)
    assert sorted(logged) == ["epoch/loss", "epoch/val_accuracy", "epoch/val_loss", "loss"]
    float32 = lambda value: float(np.float32(value))  # noqa: E731 - simple_value is a float32
    assert logged["loss"] == [(record["step"], float32(record["loss"])) for record in history.steps]
    for key in ("loss", "val_loss", "val_accuracy"):
        assert logged[f"epoch/{key}"] == [(record["epoch"], float32(record[key])) for record in history.epochs]


def test_a_device_loss_is_written_when_the_next_step_arrives(tmp_path):
    callback = TensorBoard(str(tmp_path))
    callback.on_train_begin(None)
    first, second = LazyScalar(np.float32(0.5)), LazyScalar(np.float32(0.25))
    callback.on_step_end(None, {"step": 1, "epoch": 0, "loss": first})
    assert not first.ready  # held: reading it now would wait for the step just queued
    callback.on_step_end(None, {"step": 2, "epoch": 0, "loss": second})
    assert first.ready and not second.ready
    callback.on_train_end(None)
    assert _scalars(tmp_path) == {"loss": [(1, 0.5), (2, 0.25)]}


def test_a_callback_used_outside_fit_says_so(tmp_path):
    with pytest.raises(RuntimeError, match=r"pass it to kiln.fit\(callbacks="):
        TensorBoard(str(tmp_path)).on_epoch_end(None, {"epoch": 0, "loss": 1.0})
