"""``kiln.utils.tensorboard``: ``torch.utils.tensorboard.SummaryWriter``, writing TensorBoard event files without
TensorBoard or protobuf installed (the records are encoded by kiln.runtime.event_file and tensorboard_proto).

```python
from kiln.utils.tensorboard import SummaryWriter

with SummaryWriter("runs/exp1") as writer:
    for step in range(100):
        writer.add_scalar("loss", loss_value, step)
    writer.add_histogram("weights", model.fc.weight, step)
```

What torch writes, kiln writes the same way (scalars, histograms with TensorFlow's default bins, text, PNG images,
hparams in a sub-run), so TensorBoard shows both alike; ``add_graph`` traces the model into kiln's IR and writes
that as a ``GraphDef`` (kiln's ops, not torch's). Not here: ``add_figure``, ``add_video``, ``add_audio``,
``add_embedding``, ``add_pr_curve``, ``add_mesh``, ``add_custom_scalars``.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import datetime
from typing import Any, Mapping

import numpy as np

from kiln.runtime.event_file import EventFileWriter
from kiln.compiler.ir.printer import print_graph
from kiln.runtime.tensorboard_graph import graph_def, trace_model
from kiln.runtime.tensorboard_hparams import hparams_summaries
from kiln.runtime.tensorboard_proto import (
    FILE_VERSION,
    SESSION_LOG_START,
    event,
    histogram_proto,
    session_log,
    summary,
    summary_value,
)
from kiln.runtime.tensorboard_summaries import (
    as_array,
    bins_or_default,
    check_tag,
    histogram_summary,
    image_summary,
    scalar_summary,
    tensorflow_bins,
    text_summary,
)

__all__ = ["SummaryWriter"]

_SUPPORTED = (
    "add_scalar", "add_scalars", "add_histogram", "add_histogram_raw", "add_image", "add_images", "add_text",
    "add_hparams", "add_graph",
)  # fmt: skip


class SummaryWriter:
    """Logs to ``log_dir`` (default ``runs/<Mon>DD_HH-MM-SS_<host><comment>``) for TensorBoard to show:
    ``tensorboard --logdir runs``. Values may be kiln or torch tensors, NumPy arrays or Python numbers."""

    def __init__(
        self,
        log_dir: str | os.PathLike | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int = 10,
        flush_secs: float = 120,
        filename_suffix: str = "",
    ) -> None:
        if not log_dir:
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", stamp + "_" + socket.gethostname() + comment)
        self.log_dir = str(log_dir)
        self.purge_step = purge_step
        self.max_queue = max_queue
        self.flush_secs = flush_secs
        self.filename_suffix = filename_suffix
        self.file_writer: EventFileWriter | None = None
        self.all_writers: dict[str, EventFileWriter] | None = None
        self._get_file_writer()
        self.default_bins = tensorflow_bins()

    def _get_file_writer(self) -> EventFileWriter:
        """The run's event file, opened anew after ``close()`` (as torch's writer does)."""
        if self.file_writer is None or self.all_writers is None:
            self.file_writer = self._new_file(self.log_dir)
            self.all_writers = {self.log_dir: self.file_writer}
            if self.purge_step is not None:
                self._write_purge_marker(self.file_writer, int(self.purge_step))
                self.purge_step = None
        return self.file_writer

    def _new_file(self, log_dir: str) -> EventFileWriter:
        return EventFileWriter(log_dir, self.max_queue, self.flush_secs, self.filename_suffix)

    @staticmethod
    def _write_purge_marker(writer: EventFileWriter, step: int) -> None:
        """A restart at ``step``: TensorBoard hides the events of earlier files from this step on."""
        writer.add_event(event(time.time(), step, file_version=FILE_VERSION))
        writer.add_event(event(time.time(), step, session_log=session_log(SESSION_LOG_START)))

    def get_logdir(self) -> str:
        return self.log_dir

    def _add_summary(
        self, summary_bytes: bytes, global_step: Any, walltime: float | None, writer: EventFileWriter | None = None
    ) -> None:
        wall_time = time.time() if walltime is None else float(walltime)
        step = 0 if global_step is None else _step(global_step)
        (writer or self._get_file_writer()).add_event(event(wall_time, step, summary=summary_bytes))

    def add_scalar(self, tag: str, scalar_value: Any, global_step: Any = None, walltime: float | None = None,
                   new_style: bool = False, double_precision: bool = False) -> None:  # fmt: skip
        """One point of the plot ``tag``; ``new_style`` writes a tensor for the scalars plugin instead."""
        summary_bytes = scalar_summary(check_tag(tag, "add_scalar"), scalar_value, new_style, double_precision)
        self._add_summary(summary_bytes, global_step, walltime)

    def add_scalars(self, main_tag: str, tag_scalar_dict: Mapping[str, Any], global_step: Any = None,
                    walltime: float | None = None) -> None:  # fmt: skip
        """Several curves on one plot: each key is a sub-run ``<log_dir>/<main_tag>_<key>`` logging ``main_tag``."""
        check_tag(main_tag, "add_scalars")
        if not isinstance(tag_scalar_dict, Mapping):
            raise TypeError(
                f"add_scalars({main_tag!r}): tag_scalar_dict must map names to values, got "
                f"{type(tag_scalar_dict).__name__}"
            )
        walltime = time.time() if walltime is None else walltime
        for tag, value in tag_scalar_dict.items():
            self._add_summary(scalar_summary(main_tag, value), global_step, walltime, self._sub_run(main_tag, tag))

    def _sub_run(self, main_tag: str, tag: str) -> EventFileWriter:
        log_dir = self._get_file_writer().log_dir + "/" + main_tag.replace("/", "_") + "_" + tag
        assert self.all_writers is not None
        if log_dir not in self.all_writers:
            self.all_writers[log_dir] = self._new_file(log_dir)
        return self.all_writers[log_dir]

    def add_histogram(self, tag: str, values: Any, global_step: Any = None, bins: Any = "tensorflow",
                      walltime: float | None = None, max_bins: int | None = None) -> None:  # fmt: skip
        """The distribution of ``values``: ``bins`` is ``"tensorflow"`` (TensorFlow's default edges), a NumPy rule
        (``"auto"``, ``"fd"``, ...), a count or the edges."""
        summary_bytes = histogram_summary(check_tag(tag, "add_histogram"), values, bins_or_default(bins), max_bins)
        self._add_summary(summary_bytes, global_step, walltime)

    def add_histogram_raw(self, tag: str, min: float, max: float, num: int, sum: float, sum_squares: float,
                          bucket_limits: Any, bucket_counts: Any, global_step: Any = None,
                          walltime: float | None = None) -> None:  # fmt: skip
        """A histogram already binned: ``bucket_counts[i]`` values up to ``bucket_limits[i]``."""
        limits = as_array(bucket_limits, f"add_histogram_raw({tag!r})").astype(float).reshape(-1)
        counts = as_array(bucket_counts, f"add_histogram_raw({tag!r})").astype(float).reshape(-1)
        if len(limits) != len(counts):
            raise ValueError(
                f"add_histogram_raw({tag!r}): {len(limits)} bucket_limits but {len(counts)} bucket_counts; give one "
                "limit per bucket"
            )
        histo = histogram_proto(min, max, num, sum, sum_squares, limits.tolist(), counts.tolist())
        summary_bytes = summary([summary_value(check_tag(tag, "add_histogram_raw"), histo=histo)])
        self._add_summary(summary_bytes, global_step, walltime)

    def add_image(self, tag: str, img_tensor: Any, global_step: Any = None, walltime: float | None = None,
                  dataformats: str = "CHW") -> None:  # fmt: skip
        """One image, PNG-encoded: uint8 values as they are, floats in [0, 1]; ``dataformats`` 'CHW', 'HWC', 'HW'."""
        self._add_summary(image_summary(check_tag(tag, "add_image"), img_tensor, dataformats), global_step, walltime)

    def add_images(self, tag: str, img_tensor: Any, global_step: Any = None, walltime: float | None = None,
                   dataformats: str = "NCHW") -> None:  # fmt: skip
        """A batch of images tiled into one grid, eight a row."""
        self._add_summary(image_summary(check_tag(tag, "add_images"), img_tensor, dataformats), global_step, walltime)

    def add_text(self, tag: str, text_string: str, global_step: Any = None, walltime: float | None = None) -> None:
        """Markdown text, shown in the Text tab under ``tag``."""
        self._add_summary(text_summary(check_tag(tag, "add_text"), text_string), global_step, walltime)

    def add_hparams(self, hparam_dict: dict, metric_dict: dict, hparam_domain_discrete: dict | None = None,
                    run_name: str | None = None, global_step: Any = None) -> None:  # fmt: skip
        """One row of the HParams tab: a sub-run ``<log_dir>/<run_name>`` (default: the time) holding the
        hyperparameters and each metric as a scalar."""
        summaries = hparams_summaries(hparam_dict, metric_dict, hparam_domain_discrete)
        log_dir = os.path.join(self._get_file_writer().log_dir, run_name or str(time.time()))
        with SummaryWriter(log_dir=log_dir) as run:
            for summary_bytes in summaries:
                run._add_summary(summary_bytes, global_step, None)
            for tag, value in metric_dict.items():
                run.add_scalar(tag, value, global_step)

    def add_graph(self, model: Any, input_to_model: Any = None, verbose: bool = False,
                  use_strict_trace: bool = True) -> None:  # fmt: skip
        """The Graphs tab: ``model`` traced on inputs shaped like ``input_to_model``, one node per kiln op and
        parameter (``use_strict_trace`` is torch's JIT option; kiln's trace has no such mode and ignores it)."""
        graph, argument_count = trace_model(model, input_to_model)
        if verbose:
            print(print_graph(graph))
        self._get_file_writer().add_event(event(time.time(), graph_def=graph_def(graph, argument_count)))

    def flush(self) -> None:
        """Write everything logged so far to disk."""
        for writer in (self.all_writers or {}).values():
            writer.flush()

    def close(self) -> None:
        """Flush and close every event file; logging again afterwards opens a new file in the same folder."""
        for writer in (self.all_writers or {}).values():
            writer.close()
        self.file_writer = self.all_writers = None

    def __enter__(self) -> "SummaryWriter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("add_"):
            raise AttributeError(
                f"kiln's SummaryWriter has no {name} (torch's has); it writes {', '.join(_SUPPORTED)}. For a plot, "
                "log its image with add_image"
            )
        raise AttributeError(f"'SummaryWriter' object has no attribute {name!r}")


def _step(global_step: Any) -> int:
    """A step as an int: a Python or NumPy integer, or a one-element tensor."""
    if type(global_step) is int:
        return global_step
    array = np.asarray(as_array(global_step, "global_step")).reshape(-1)
    if array.size != 1 or not np.issubdtype(array.dtype, np.number) or array[0] != int(array[0]):
        raise TypeError(f"global_step must be one whole number, got {global_step!r}")
    return int(array[0])
