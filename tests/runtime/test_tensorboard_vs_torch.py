"""kiln's event files against two independent writers: the TFRecord framing (lengths, masked CRC-32C) against
TensorBoard's own ``RecordWriter``, and every event record against ``torch.utils.tensorboard.SummaryWriter`` given
the same calls, byte for byte (images: the same decoded pixels, as the PNG encoders differ)."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest

import kiln
from kiln.runtime.crc32c import LANE, crc32c
from kiln.runtime.event_file import frame_record
from kiln.utils.tensorboard import SummaryWriter
from oracles import require, require_torch


@pytest.mark.parametrize("data", [b"", b"\x00", b"123456789", bytes(range(256)) * 5])
def test_record_framing_matches_tensorboards_record_writer(data):
    record_writer = require("tensorboard.summary.writer.record_writer")
    buffer = io.BytesIO()
    record_writer.RecordWriter(buffer).write(data)
    assert frame_record(data) == buffer.getvalue()


def test_crc32c_check_values():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue's check value (RFC 3720, iSCSI)
    assert crc32c(b"") == 0 and crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros


@pytest.mark.parametrize("size", [1, 16 * LANE - 1, 16 * LANE, 16 * LANE + 1, 40 * LANE + 77, 1 << 20])
def test_crc32c_lanes_match_tensorboards_crc32c(size):
    """Long inputs take the vectorized lanes (and a plain-loop tail); TensorBoard's own byte loop is the oracle."""
    pywrap = require("tensorboard.compat.tensorflow_stub.pywrap_tensorflow")
    data = np.random.default_rng(size).integers(0, 256, size=size, dtype=np.uint8).tobytes()
    assert crc32c(data) == pywrap.crc32c(data)


def _records(log_dir):
    """The raw ``Event`` records of the one event file in ``log_dir``, after its file-version header (TensorBoard's
    reader checks each CRC)."""
    loader = require("tensorboard.backend.event_processing.event_file_loader")
    (name,) = [name for name in os.listdir(log_dir) if name.startswith("events.out.tfevents.")]
    return list(loader.RawEventFileLoader(os.path.join(log_dir, name)).Load())[1:]


def _log_both(tmp_path, log):
    """Run ``log(writer, tensor)`` on torch's writer and on kiln's; their folders."""
    torch = require_torch()
    require("torch.utils.tensorboard")
    from torch.utils.tensorboard import SummaryWriter as TorchSummaryWriter

    with TorchSummaryWriter(tmp_path / "torch") as writer:
        log(writer, torch.tensor)
    with SummaryWriter(tmp_path / "kiln") as writer:
        log(writer, kiln.tensor)
    return tmp_path / "torch", tmp_path / "kiln"


def test_scalar_histogram_and_text_events_are_torchs_bytes(tmp_path):
    values = np.random.default_rng(0).standard_t(3, size=500).astype(np.float32)

    def log(writer, tensor):
        writer.add_scalar("loss", tensor(0.123456789), 3, walltime=5.5)
        writer.add_scalar("loss", 2.0, walltime=6.0)
        writer.add_scalar("negative_zero", -0.0, 1, walltime=6.5)
        writer.add_scalar("new", tensor(1.5), 4, walltime=7.0, new_style=True)
        writer.add_scalar("double", 0.1, 5, walltime=8.0, new_style=True, double_precision=True)
        writer.add_histogram("tf_bins", tensor(values), 6, walltime=9.0)
        writer.add_histogram("auto", values, 7, bins="auto", walltime=10.0)
        writer.add_histogram("few", values, 8, bins=64, max_bins=10, walltime=11.0)
        writer.add_histogram("edges", values, 9, bins=[-1.0, 0.0, 0.5, 1.0], walltime=12.0)
        writer.add_histogram_raw("raw", -1.0, 2.0, 3, 1.0, 5.0, [0.0, 2.0], [1, 2], 10, walltime=13.0)
        writer.add_text("notes", "**bold** ✓", 11, walltime=14.0)

    torch_dir, kiln_dir = _log_both(tmp_path, log)
    torch_records, kiln_records = _records(torch_dir), _records(kiln_dir)
    assert len(kiln_records) == len(torch_records) == 11
    for index, (ours, theirs) in enumerate(zip(kiln_records, torch_records)):
        assert ours == theirs, f"record {index} differs"


def test_add_scalars_sub_runs_are_torchs(tmp_path):
    def log(writer, tensor):
        for step in range(3):
            writer.add_scalars("loss/all", {"train": tensor(step * 0.5), "val": -step}, step, walltime=20.0 + step)

    torch_dir, kiln_dir = _log_both(tmp_path, log)
    for run in ("loss_all_train", "loss_all_val"):
        assert _records(kiln_dir / run) == _records(torch_dir / run)


def _when_and_what(event):
    return event.wall_time, event.step, event.summary.value[0].tag


def test_images_decode_to_torchs_pixels(tmp_path):
    image_module = require("PIL.Image")
    event_pb2 = require("tensorboard.compat.proto.event_pb2")
    rng = np.random.default_rng(2)
    float_chw = rng.random((3, 6, 5)).astype(np.float32) * 1.2 - 0.1  # out of [0, 1]: clipped
    uint8_hwc = rng.integers(0, 256, size=(4, 3, 3), dtype=np.uint8)
    batch = rng.random((5, 1, 3, 2)).astype(np.float32)

    def log(writer, tensor):
        writer.add_image("float", tensor(float_chw), 1, walltime=1.0)
        writer.add_image("uint8", uint8_hwc, 2, walltime=2.0, dataformats="HWC")
        writer.add_image("one_channel", float_chw[:1], 3, walltime=3.0)
        writer.add_images("batch", batch, 4, walltime=4.0)

    torch_dir, kiln_dir = _log_both(tmp_path, log)
    for ours, theirs in zip(_records(kiln_dir), _records(torch_dir), strict=True):
        ours, theirs = event_pb2.Event.FromString(ours), event_pb2.Event.FromString(theirs)
        assert _when_and_what(ours) == _when_and_what(theirs)
        image, expected = ours.summary.value[0].image, theirs.summary.value[0].image
        assert (image.height, image.width, image.colorspace) == (expected.height, expected.width, expected.colorspace)
        pixels = [np.asarray(image_module.open(io.BytesIO(i.encoded_image_string))) for i in (image, expected)]
        np.testing.assert_array_equal(*pixels)


def test_hparams_match_torchs(tmp_path):
    event_pb2 = require("tensorboard.compat.proto.event_pb2")
    plugin_data = require("tensorboard.plugins.hparams.plugin_data_pb2")
    hparams = {"lr": 0.01, "batch": 32, "optimizer": "adam", "unused": None}  # torch writes a bool as 1.0: not here

    def log(writer, tensor):
        metrics, domains = {"hparam/loss": tensor(0.5)}, {"optimizer": ["adam", "sgd"]}
        writer.add_hparams(hparams, metrics, domains, run_name="trial", global_step=4)

    torch_dir, kiln_dir = _log_both(tmp_path, log)
    ours, theirs = _records(kiln_dir / "trial"), _records(torch_dir / "trial")
    assert len(ours) == len(theirs) == 4
    for mine, torchs in zip(ours[:3], theirs[:3]):
        mine, torchs = event_pb2.Event.FromString(mine), event_pb2.Event.FromString(torchs)
        assert (mine.step, mine.summary.value[0].tag) == (torchs.step, torchs.summary.value[0].tag)
        contents = [e.summary.value[0].metadata.plugin_data.content for e in (mine, torchs)]
        mine_data, torch_data = (plugin_data.HParamsPluginData.FromString(content) for content in contents)
        assert mine_data == torch_data
    metric, torch_metric = event_pb2.Event.FromString(ours[3]), event_pb2.Event.FromString(theirs[3])
    assert (metric.step, metric.summary) == (torch_metric.step, torch_metric.summary)
