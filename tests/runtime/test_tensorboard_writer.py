"""``kiln.utils.tensorboard.SummaryWriter`` read back by TensorBoard itself (``EventAccumulator``, which checks each
record's CRCs): scalars, histograms, text, images, hparams, sub-runs, purge_step, queueing and errors."""

from __future__ import annotations

import gc
import io
import os
import time

import numpy as np
import pytest

import kiln
from kiln.utils.tensorboard import SummaryWriter
from oracles import require


def _accumulator(log_dir):
    event_accumulator = require("tensorboard.backend.event_processing.event_accumulator")
    everything = {"tensors": 0, "images": 0, "scalars": 0}
    accumulator = event_accumulator.EventAccumulator(str(log_dir), size_guidance=everything)
    return accumulator.Reload()


def _event_files(log_dir):
    return sorted(name for name in os.listdir(log_dir) if name.startswith("events.out.tfevents."))


def test_scalars_from_kiln_numpy_and_python_values(tmp_path):
    values = [kiln.tensor(0.5), np.float64(0.25), 3, np.array([[1.5]], np.float32), kiln.tensor([2.0])]
    with SummaryWriter(tmp_path) as writer:
        for step, value in enumerate(values):
            writer.add_scalar("train/loss", value, step, walltime=1000.0 + step)
        writer.add_scalar("new", kiln.tensor(-7.25), np.int64(4), new_style=True)
    events = _accumulator(tmp_path).Scalars("train/loss")
    assert [(e.step, e.value, e.wall_time) for e in events] == [
        (0, 0.5, 1000.0), (1, 0.25, 1001.0), (2, 3.0, 1002.0), (3, 1.5, 1003.0), (4, 2.0, 1004.0)
    ]  # fmt: skip
    tensors = _accumulator(tmp_path).Tensors("new")
    tensor_util = require("tensorboard.util.tensor_util")
    assert [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in tensors] == [(4, -7.25)]


def test_histogram_counts_and_moments(tmp_path):
    values = np.random.default_rng(0).normal(size=(40, 25))
    with SummaryWriter(tmp_path) as writer:
        writer.add_histogram("weights", kiln.tensor(values.astype(np.float32)), 7)
        writer.add_histogram("auto", values, 8, bins="auto")
        writer.add_histogram("ten", values, 9, bins=10)
    accumulator = _accumulator(tmp_path)
    flat = values.astype(np.float32).astype(float).ravel()
    histogram = accumulator.Histograms("weights")[0].histogram_value
    assert (histogram.min, histogram.max, histogram.num) == (flat.min(), flat.max(), 1000)
    assert histogram.sum == pytest.approx(flat.sum(), rel=1e-12) and histogram.sum_squares == pytest.approx(flat @ flat)
    assert sum(histogram.bucket) == 1000
    edges = np.array(histogram.bucket_limit)
    assert np.all(np.diff(edges) > 0) and edges[-1] >= flat.max()
    counts, limits = np.histogram(values.ravel(), bins=10)
    ten = accumulator.Histograms("ten")[0].histogram_value
    assert ten.bucket == [0.0] + counts.tolist() and ten.bucket_limit == limits.tolist()
    assert sum(accumulator.Histograms("auto")[0].histogram_value.bucket) == 1000


def test_text(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        writer.add_text("notes", "lr **0.1**, naïve ✓", 3)
    event = _accumulator(tmp_path).Tensors("notes/text_summary")[0]
    assert event.step == 3 and event.tensor_proto.string_val == ["lr **0.1**, naïve ✓".encode()]
    text_metadata = _accumulator(tmp_path).SummaryMetadata("notes/text_summary")
    assert text_metadata.plugin_data.plugin_name == "text"


def test_images_decode_to_the_pixels_logged(tmp_path):
    image_module = require("PIL.Image")
    rng = np.random.default_rng(1)
    chw = rng.random((3, 5, 7)).astype(np.float32)
    hwc_rgba = rng.integers(0, 256, size=(4, 6, 4), dtype=np.uint8)
    gray = rng.integers(0, 256, size=(2, 3), dtype=np.uint8)
    with SummaryWriter(tmp_path) as writer:
        writer.add_image("chw", kiln.tensor(chw), 1)
        writer.add_image("rgba", hwc_rgba, 2, dataformats="HWC")
        writer.add_image("gray", gray, 3, dataformats="HW")
    accumulator = _accumulator(tmp_path)
    expected = {
        "chw": (chw.transpose(1, 2, 0) * 255).clip(0, 255).astype(np.uint8),
        "rgba": hwc_rgba,
        "gray": np.stack([gray] * 3, axis=2),
    }
    for tag, pixels in expected.items():
        event = accumulator.Images(tag)[0]
        decoded = np.asarray(image_module.open(io.BytesIO(event.encoded_image_string)))
        assert (event.height, event.width) == pixels.shape[:2]
        np.testing.assert_array_equal(decoded, pixels)


def test_add_images_tiles_a_batch(tmp_path):
    image_module = require("PIL.Image")
    batch = np.arange(10 * 1 * 2 * 3, dtype=np.uint8).reshape(10, 1, 2, 3)
    with SummaryWriter(tmp_path) as writer:
        writer.add_images("batch", batch, 0)
    event = _accumulator(tmp_path).Images("batch")[0]
    decoded = np.asarray(image_module.open(io.BytesIO(event.encoded_image_string)))
    assert decoded.shape == (2 * 2, 8 * 3, 3)
    np.testing.assert_array_equal(decoded[2:4, 3:6, 0], batch[9, 0])  # image 9: row 1, column 1
    assert not decoded[2:, 6:].any()  # the grid's unused cells stay black


def test_hparams_sub_run(tmp_path):
    plugin_data = require("tensorboard.plugins.hparams.plugin_data_pb2")
    with SummaryWriter(tmp_path) as writer:
        writer.add_hparams(
            {"lr": 0.1, "optimizer": "adam", "nesterov": True, "layers": 3, "skipped": None},
            {"hparam/accuracy": 0.75}, hparam_domain_discrete={"optimizer": ["adam", "sgd"]}, run_name="trial",
        )  # fmt: skip
    accumulator = _accumulator(tmp_path / "trial")
    assert [(e.step, e.value) for e in accumulator.Scalars("hparam/accuracy")] == [(0, 0.75)]

    def content(tag):
        return plugin_data.HParamsPluginData.FromString(accumulator.SummaryMetadata(tag).plugin_data.content)

    start = content("_hparams_/session_start_info").session_start_info.hparams
    assert start["lr"].number_value == 0.1 and start["optimizer"].string_value == "adam"
    assert start["nesterov"].bool_value is True
    assert start["layers"].number_value == 3 and "skipped" not in start
    experiment = content("_hparams_/experiment").experiment
    infos = {info.name: info for info in experiment.hparam_infos}
    assert [info.type for info in infos.values()] == [3, 1, 2, 3]  # FLOAT64, STRING, BOOL, FLOAT64
    assert [value.string_value for value in infos["optimizer"].domain_discrete.values] == ["adam", "sgd"]
    assert [metric.name.tag for metric in experiment.metric_infos] == ["hparam/accuracy"]
    assert content("_hparams_/session_end_info").session_end_info.status == 1  # STATUS_SUCCESS


def test_add_scalars_writes_one_sub_run_per_curve(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        for step in range(3):
            writer.add_scalars("loss/all", {"train": step, "val": -step}, step)
    assert sorted(entry.name for entry in tmp_path.iterdir() if entry.is_dir()) == ["loss_all_train", "loss_all_val"]
    val = _accumulator(tmp_path / "loss_all_val").Scalars("loss/all")
    assert [(e.step, e.value) for e in val] == [(0, 0.0), (1, -1.0), (2, -2.0)]


def test_purge_step_hides_the_crashed_runs_later_steps(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        for step in range(10):
            writer.add_scalar("loss", step, step)
    time.sleep(1.01)  # the resumed run's file must sort after the first (file names start with the second)
    with SummaryWriter(tmp_path, purge_step=5) as writer:
        for step in range(5, 8):
            writer.add_scalar("loss", 100 + step, step)
    assert len(_event_files(tmp_path)) == 2
    events = _accumulator(tmp_path).Scalars("loss")
    assert [(e.step, e.value) for e in events] == [(s, s) for s in range(5)] + [(s, 100 + s) for s in range(5, 8)]


def test_records_reach_disk_by_max_queue_flush_and_close(tmp_path):
    writer = SummaryWriter(tmp_path, max_queue=3, filename_suffix=".kiln")
    path = tmp_path / _event_files(tmp_path)[0]
    assert path.name.endswith(".kiln")
    header = path.stat().st_size
    writer.add_scalar("a", 1.0, 0)
    writer.add_scalar("a", 2.0, 1)
    assert path.stat().st_size == header  # queued, not written yet
    writer.add_scalar("a", 3.0, 2)
    assert path.stat().st_size > header  # the third fills the queue
    writer.add_scalar("a", 4.0, 3)
    writer.flush()
    assert len(_accumulator(tmp_path).Scalars("a")) == 4
    writer.close()
    writer.close()  # twice is fine
    writer.add_scalar("a", 5.0, 4)  # after close, a new file in the same folder (as torch)
    writer.close()
    assert len(_event_files(tmp_path)) == 2
    assert [e.value for e in _accumulator(tmp_path).Scalars("a")] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_flush_secs_writes_a_waiting_record_without_another_call(tmp_path):
    writer = SummaryWriter(tmp_path, flush_secs=0.05)
    path = tmp_path / _event_files(tmp_path)[0]
    header = path.stat().st_size
    writer.add_scalar("a", 1.0, 0)
    deadline = time.monotonic() + 30  # not a speed check: waits for the timer however slow the machine is
    while path.stat().st_size == header and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [e.value for e in _accumulator(tmp_path).Scalars("a")] == [1.0]
    writer.close()


def test_a_writer_dropped_without_close_still_writes(tmp_path):
    writer = SummaryWriter(tmp_path)
    writer.add_scalar("a", 1.0, 0)
    del writer
    gc.collect()
    assert [e.value for e in _accumulator(tmp_path).Scalars("a")] == [1.0]


def test_default_log_dir_is_runs_date_host_comment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with SummaryWriter(comment="_lr0.1") as writer:
        log_dir = writer.get_logdir()
    parent, name = os.path.split(log_dir)
    assert parent == "runs" and name.endswith("_lr0.1") and _event_files(tmp_path / log_dir)


def test_clear_errors(tmp_path):
    with SummaryWriter(tmp_path) as writer:
        with pytest.raises(ValueError, match=r"add_scalar\('x'\): expected one value, got an array of shape \(3,\)"):
            writer.add_scalar("x", np.ones(3))
        with pytest.raises(TypeError, match="tag must be a non-empty str"):
            writer.add_scalar(None, 1.0)
        with pytest.raises(ValueError, match="dataformats='CHW' does not describe an array of shape"):
            writer.add_image("img", np.zeros((4, 4)))
        with pytest.raises(ValueError, match="NaN or infinity"):
            writer.add_histogram("h", np.array([1.0, np.nan]))
        with pytest.raises(ValueError, match="no value falls inside the bins"):
            writer.add_histogram("h", np.array([5.0]), bins=[0.0, 1.0])
        with pytest.raises(TypeError, match=r"hparam_dict\['model'\] is list"):
            writer.add_hparams({"model": [1, 2]}, {})
        with pytest.raises(TypeError, match=r"hparam_domain_discrete\['lr'\].*type of hparam_dict\['lr'\] \(float\)"):
            writer.add_hparams({"lr": 0.1}, {}, hparam_domain_discrete={"lr": ["high"]})
        with pytest.raises(TypeError, match="global_step must be one whole number"):
            writer.add_scalar("x", 1.0, 2.5)
        with pytest.raises(AttributeError, match="kiln's SummaryWriter has no add_video .* add_image"):
            writer.add_video("v", np.zeros((1, 1, 3, 2, 2)))
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(OSError, match="SummaryWriter cannot create its event file .* writable folder"):
        SummaryWriter(tmp_path / "file")
