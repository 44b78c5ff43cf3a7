"""TensorBoard's protobuf messages, encoded by hand (runtime/protobuf_wire.py): the ``Event`` records of an event
file and what they carry. Field numbers are those of TensorBoard's ``.proto`` files, named in each docstring:

    tensorboard/compat/proto/event.proto          Event, SessionLog, SourceMetadata
    tensorboard/compat/proto/summary.proto        Summary, Summary.Value, Summary.Image, SummaryMetadata,
                                                  HistogramProto
    tensorboard/compat/proto/tensor.proto (+ tensor_shape.proto, types.proto)   TensorProto
    tensorboard/plugins/hparams/{api,plugin_data}.proto, google/protobuf/struct.proto   the hparams plugin

Each function returns a message's bytes; fields are written in ascending number, as protobuf writes them.
"""

from __future__ import annotations

from typing import Iterable, Sequence

from kiln.runtime.protobuf_wire import (
    bytes_field,
    double_field,
    float_field,
    int_field,
    message_field,
    packed_doubles_field,
    packed_floats_field,
    repeated_bytes_field,
)

FILE_VERSION = "brain.Event:2"
"""The ``file_version`` of an event file's first record: TensorBoard reads files of this version."""

SESSION_LOG_START = 1
"""``SessionLog.SessionStatus.START``: with a step, tells TensorBoard to hide earlier events from that step on."""

DT_FLOAT, DT_DOUBLE, DT_STRING = 1, 2, 7
"""``tensorflow.DataType`` values used here."""


def event(
    wall_time: float,
    step: int = 0,
    *,
    file_version: str | None = None,
    graph_def: bytes | None = None,
    summary: bytes | None = None,
    session_log: bytes | None = None,
    source_writer: str | None = None,
) -> bytes:
    """``Event``: wall_time 1 (double), step 2 (int64), one of file_version 3, graph_def 4, summary 5,
    session_log 7; source_metadata 10 (``SourceMetadata.writer`` 1)."""
    return b"".join(
        [
            double_field(1, wall_time),
            int_field(2, step),
            b"" if file_version is None else bytes_field(3, file_version, keep_default=True),
            b"" if graph_def is None else bytes_field(4, graph_def, keep_default=True),
            message_field(5, summary),
            message_field(7, session_log),
            message_field(10, None if source_writer is None else bytes_field(1, source_writer)),
        ]
    )


def session_log(status: int) -> bytes:
    """``SessionLog``: status 1 (enum)."""
    return int_field(1, status)


def summary(values: Iterable[bytes]) -> bytes:
    """``Summary``: value 1 (repeated ``Summary.Value``)."""
    return repeated_bytes_field(1, values)


def summary_value(
    tag: str,
    *,
    simple_value: float | None = None,
    image: bytes | None = None,
    histo: bytes | None = None,
    tensor: bytes | None = None,
    metadata: bytes | None = None,
) -> bytes:
    """``Summary.Value``: tag 1, one of simple_value 2 (float), image 4, histo 5, tensor 8; metadata 9."""
    return b"".join(
        [
            bytes_field(1, tag),
            b"" if simple_value is None else float_field(2, simple_value, keep_default=True),
            message_field(4, image),
            message_field(5, histo),
            message_field(8, tensor),
            message_field(9, metadata),
        ]
    )


def summary_metadata(plugin_name: str, content: bytes = b"") -> bytes:
    """``SummaryMetadata``: plugin_data 1 (``PluginData``: plugin_name 1, content 2)."""
    return message_field(1, bytes_field(1, plugin_name) + bytes_field(2, content))


def histogram_proto(
    minimum: float, maximum: float, num: float, total: float, sum_squares: float,
    bucket_limit: Sequence[float], bucket: Sequence[float],
) -> bytes:  # fmt: skip
    """``HistogramProto``: min 1, max 2, num 3, sum 4, sum_squares 5 (doubles); bucket_limit 6, bucket 7 (packed
    doubles): bucket ``i`` counts the values in (bucket_limit[i-1], bucket_limit[i]]."""
    scalars = [minimum, maximum, num, total, sum_squares]
    return b"".join(double_field(number, value) for number, value in enumerate(scalars, start=1)) + b"".join(
        [packed_doubles_field(6, bucket_limit), packed_doubles_field(7, bucket)]
    )


def image_proto(height: int, width: int, colorspace: int, encoded_image: bytes) -> bytes:
    """``Summary.Image``: height 1, width 2, colorspace 3 (channels: 1 gray, 3 RGB, 4 RGBA), encoded_image_string 4."""
    return b"".join(
        [int_field(1, height), int_field(2, width), int_field(3, colorspace), bytes_field(4, encoded_image)]
    )


def tensor_proto(
    dtype: int,
    shape: Sequence[int] | None = None,
    *,
    float_val: Sequence[float] = (),
    double_val: Sequence[float] = (),
    string_val: Sequence[bytes] = (),
) -> bytes:
    """``TensorProto``: dtype 1 (enum), tensor_shape 2 (``TensorShapeProto``: dim 2, each ``Dim``: size 1),
    float_val 5 (packed), double_val 6 (packed), string_val 8 (repeated bytes). ``shape=None`` leaves tensor_shape
    unset (a scalar, as torch's new-style scalars write it)."""
    tensor_shape = None if shape is None else repeated_bytes_field(2, (int_field(1, size) for size in shape))
    return b"".join(
        [
            int_field(1, dtype),
            message_field(2, tensor_shape),
            packed_floats_field(5, float_val),
            packed_doubles_field(6, double_val),
            repeated_bytes_field(8, string_val),
        ]
    )
