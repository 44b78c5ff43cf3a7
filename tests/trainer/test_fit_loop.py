"""kiln.fit: evaluation metrics, early stopping, progress, logs and the loss-curve PNG."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import KilnError
from kiln.runtime.callbacks import Callback, EarlyStopping
from kiln.runtime.data import ArrayDataset, DataError, DataLoader
from kiln.runtime.metrics import Accuracy, Perplexity


def problem(count: int = 160, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, 10)).astype(np.float32)
    return x, x[:, :3].argmax(axis=1)


def make_step(lr: float = 0.1):
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3))
    return kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=lr))


def loaders(batch_size: int = 16):
    x, y = problem()
    return DataLoader(ArrayDataset(x[:128], y[:128]), batch_size=batch_size, shuffle=True), DataLoader(ArrayDataset(x[128:], y[128:]), batch_size=64)


def test_fit_trains_and_evaluates():
    train, test = loaders()
    history = kiln.fit(make_step(0.5), train, epochs=8, eval_loader=test, metrics=["accuracy"], progress=False)
    assert len(history.steps) == 8 * 8 and [r["step"] for r in history.steps] == list(range(1, 65))
    assert [r["epoch"] for r in history.epochs] == list(range(8))
    assert history.epochs[-1]["loss"] < history.epochs[0]["loss"]
    assert history.epochs[-1]["val_accuracy"] > 0.7 and not history.stopped_early
    assert set(history.epochs[0]) == {"epoch", "step", "loss", "val_loss", "val_accuracy"}


def test_metrics_match_numpy_references():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((4, 5, 7))
    labels = rng.integers(0, 7, (4, 5))
    labels[0, 3:] = -100
    keep = labels != -100
    accuracy, perplexity = Accuracy(), Perplexity()
    for half in (slice(0, 2), slice(2, 4)):
        accuracy.update(logits[half], labels[half])
        perplexity.update(logits[half], labels[half])
    assert accuracy.compute() == pytest.approx((logits.argmax(-1) == labels)[keep].mean())
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_probs, np.where(keep, labels, 0)[..., None], -1)[..., 0]
    assert perplexity.compute() == pytest.approx(math.exp(nll[keep].mean()))
    with pytest.raises(KilnError, match="unknown metric 'f1'"):
        kiln.fit(make_step(), loaders()[0], eval_loader=loaders()[1], metrics=["f1"], progress=False)


def test_early_stopping_ends_a_run_that_stopped_improving():
    train, test = loaders()
    stopper = EarlyStopping("val_loss", patience=2)
    history = kiln.fit(make_step(lr=0.0), train, epochs=20, eval_loader=test, callbacks=[stopper], progress=False)
    assert history.stopped_early and len(history.epochs) == 3  # best at epoch 0, then two without improvement
    with pytest.raises(KilnError, match="pass eval_loader="):
        kiln.fit(make_step(), train, epochs=1, callbacks=[EarlyStopping("val_loss")], progress=False)


def test_a_callback_can_stop_mid_epoch():
    class StopAt(Callback):
        def on_step_end(self, run, record):
            run.should_stop = record["step"] == 3

    history = kiln.fit(make_step(), loaders()[0], epochs=5, callbacks=[StopAt()], progress=False)
    assert len(history.steps) == 3 and history.epochs == [] and history.stopped_early


def test_progress_bar_shows_loss_and_throughput(capsys):
    kiln.fit(make_step(), loaders()[0], epochs=1, progress=True)
    err = capsys.readouterr().err
    assert "loss=" in err and "samples_s=" in err and "8/8" in err


def test_logs_and_loss_curve(tmp_path):
    train, test = loaders()
    kiln.fit(make_step(), train, epochs=2, eval_loader=test, metrics=["accuracy"], progress=False,
             log_path=str(tmp_path / "log.jsonl"), plot_path=str(tmp_path / "loss.png"))
    records = [json.loads(line) for line in open(tmp_path / "log.jsonl")]
    assert [r["kind"] for r in records].count("step") == 16 and [r["kind"] for r in records].count("epoch") == 2
    kiln.fit(make_step(), train, epochs=2, eval_loader=test, progress=False, log_path=str(tmp_path / "log.csv"))
    lines = open(tmp_path / "log.csv").read().splitlines()
    assert lines[0] == "epoch,step,loss,val_loss" and len(lines) == 3
    import matplotlib.image

    image = matplotlib.image.imread(str(tmp_path / "loss.png"))
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_resume_needs_a_folder_and_the_same_loader(tmp_path):
    train, _ = loaders()
    with pytest.raises(KilnError, match="checkpoint_dir"):
        kiln.fit(make_step(), train, resume=True, progress=False)
    kiln.fit(make_step(), train, epochs=1, checkpoint_dir=str(tmp_path), progress=False)
    other = DataLoader(train.dataset, batch_size=32, shuffle=True)
    with pytest.raises(DataError, match="batch_size: saved 16, now 32"):
        kiln.fit(make_step(), other, epochs=2, checkpoint_dir=str(tmp_path), resume=True, progress=False)


def test_log_writer_writes_a_device_loss_one_step_later_so_the_device_never_waits(tmp_path):
    """With the loss still on a device (a ``LazyScalar``), step k's record is written at step k + 1: reading it then
    waits for step k only, while step k + 1 is queued. The epoch's end writes the held record first."""
    import json

    from kiln.runtime.callbacks import LogWriter
    from kiln.runtime.lazy import LazyScalar

    writer = LogWriter(str(tmp_path / "log.jsonl"))
    writer.on_train_begin(None)
    records = [{"step": k, "epoch": 0, "loss": LazyScalar(np.asarray(float(k)))} for k in (1, 2)]
    lines = lambda: [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()] if (tmp_path / "log.jsonl").exists() else []
    writer.on_step_end(None, records[0])
    assert lines() == [] and not records[0]["loss"].ready
    writer.on_step_end(None, records[1])
    assert [r["step"] for r in lines()] == [1] and records[0]["loss"].ready and not records[1]["loss"].ready
    writer.on_epoch_end(None, {"epoch": 0, "step": 2, "loss": 1.5})
    assert [(r["kind"], r["step"], r["loss"]) for r in lines()] == [("step", 1, 1.0), ("step", 2, 2.0), ("epoch", 2, 1.5)]


@pytest.mark.parametrize("every_seconds, draws", [(3600.0, 2), (0.0, 5)])
def test_loss_curve_redraws_at_most_every_so_often_and_always_at_the_end(tmp_path, monkeypatch, every_seconds, draws):
    from kiln.runtime import callbacks

    drawn = []
    monkeypatch.setattr(callbacks, "plot_loss_curve", lambda history, path: drawn.append(len(history.steps)))
    train, _ = loaders()
    kiln.fit(make_step(), train, epochs=4, progress=False,
             callbacks=[callbacks.LossCurve(str(tmp_path / "loss.png"), every_seconds=every_seconds)])
    assert len(drawn) == draws and drawn[-1] == 32  # the last drawing has every step


def test_the_loss_curve_is_replaced_whole(tmp_path):
    from kiln.runtime import callbacks

    train, _ = loaders()
    history = kiln.fit(make_step(), train, epochs=1, progress=False)
    callbacks.plot_loss_curve(history, str(tmp_path / "loss.png"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]
