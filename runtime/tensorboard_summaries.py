"""Values to TensorBoard ``Summary`` messages, as ``torch.utils.tensorboard.summary`` builds them: scalars,
histograms, text and images, from kiln tensors, NumPy arrays, torch tensors or Python numbers."""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.runtime.png import encode_png
from kiln.runtime.tensorboard_proto import (
    DT_DOUBLE,
    DT_FLOAT,
    DT_STRING,
    histogram_proto,
    image_proto,
    summary,
    summary_metadata,
    summary_value,
    tensor_proto,
)


def as_array(value: Any, what: str) -> np.ndarray:
    """``value`` (a kiln or torch tensor, an array, a number, a list) as a NumPy array."""
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        value = value.detach()
        value = value.cpu() if hasattr(value, "cpu") else value
        value = value.float() if "bfloat16" in str(value.dtype) and hasattr(value, "float") else value
        value = value.numpy()
    try:
        return np.asarray(value)
    except Exception as error:
        raise TypeError(
            f"{what}: cannot read {type(value).__name__} as an array ({error}); pass a number, a NumPy array or a "
            "tensor with values (not one being traced inside a compiled function)"
        ) from error


def scalar_summary(tag: str, value: Any, new_style: bool = False, double_precision: bool = False) -> bytes:
    """One value: old style ``simple_value`` (a float32), or new style a scalar tensor for the ``scalars`` plugin."""
    number = float(value) if type(value) in (float, int) else _one_number(value, f"add_scalar({tag!r})")
    if not new_style:
        return summary([summary_value(tag, simple_value=number)])
    if double_precision:
        tensor = tensor_proto(DT_DOUBLE, double_val=[number])
    else:
        tensor = tensor_proto(DT_FLOAT, float_val=[number])
    return summary([summary_value(tag, tensor=tensor, metadata=summary_metadata("scalars"))])


def _one_number(value: Any, what: str) -> float:
    array = as_array(value, what).squeeze()
    if array.ndim != 0:
        raise ValueError(f"{what}: expected one value, got an array of shape {array.shape}")
    return float(array)


def tensorflow_bins() -> list[float]:
    """TensorFlow's default histogram edges: +-1e-12 growing by 1.1 up to 1e20, and 0 (1549 edges)."""
    edges, value = [], 1e-12
    while value < 1e20:
        edges.append(value)
        value *= 1.1
    return [-edge for edge in reversed(edges)] + [0] + edges


def histogram_summary(tag: str, values: Any, bins: Any, max_bins: int | None = None) -> bytes:
    """A histogram of ``values`` with NumPy's ``bins`` (a count, edges or a rule name such as ``"auto"``)."""
    array = as_array(values, f"add_histogram({tag!r})").astype(float).reshape(-1)
    if array.size == 0:
        raise ValueError(f"add_histogram({tag!r}): the values are empty; a histogram needs at least one value")
    if not np.isfinite(array).all():
        raise ValueError(f"add_histogram({tag!r}): the values hold NaN or infinity; TensorBoard cannot bin them")
    counts, limits = np.histogram(array, bins=bins)
    if max_bins is not None and len(counts) > max_bins:
        counts, limits = _merge_bins(counts, limits, max_bins)
    counts, limits = _trim_empty_ends(counts, limits)
    histo = histogram_proto(
        array.min(), array.max(), len(array), array.sum(), array.dot(array), limits.tolist(), counts.tolist()
    )
    return summary([summary_value(tag, histo=histo)])


def _merge_bins(counts: np.ndarray, limits: np.ndarray, max_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum every ``len(counts) // max_bins`` neighbouring bins (torch's subsampling, zero-padded at the end)."""
    group = len(counts) // max_bins
    padding = -len(counts) % group
    counts = np.pad(counts, (0, padding)).reshape(-1, group).sum(axis=-1)
    return counts, np.concatenate([limits[:-1:group], limits[-1:]])


def _trim_empty_ends(counts: np.ndarray, limits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the bins from one before the first non-empty to the last non-empty; a bucket's limit is its upper
    edge, so the kept counts pair with ``limits[start:end + 1]`` (torch's and TensorFlow's histogram.cc layout)."""
    filled = np.flatnonzero(counts)
    if filled.size == 0:
        raise ValueError(
            f"add_histogram: no value falls inside the bins (edges {limits[0]} .. {limits[-1]}); widen the bins or "
            "pass a bin count or 'auto'"
        )
    start, end = int(filled[0]), int(filled[-1]) + 1
    kept = counts[start - 1 : end] if start > 0 else np.concatenate([[0], counts[:end]])
    return kept, limits[start : end + 1]


def text_summary(tag: str, text: str) -> bytes:
    """``text`` (markdown) for the text plugin, under ``tag + "/text_summary"``, a one-element string tensor."""
    if not isinstance(text, str):
        raise TypeError(f"add_text({tag!r}): text_string must be a str, got {type(text).__name__}")
    tensor = tensor_proto(DT_STRING, [1], string_val=[text.encode("utf-8")])
    return summary([summary_value(tag + "/text_summary", tensor=tensor, metadata=summary_metadata("text"))])


def image_summary(tag: str, image: Any, dataformats: str = "CHW") -> bytes:
    """A PNG image: ``uint8`` values as they are, other dtypes read as [0, 1] and scaled by 255, clipped."""
    array = as_array(image, f"add_image({tag!r})")
    pixels = to_hwc(array, dataformats, f"add_image({tag!r})")
    scale = 1 if pixels.dtype == np.uint8 else 255
    pixels = (pixels.astype(np.float32) * scale).clip(0, 255).astype(np.uint8)
    height, width, channels = pixels.shape
    return summary([summary_value(tag, image=image_proto(height, width, channels, encode_png(pixels)))])


def to_hwc(array: np.ndarray, dataformats: str, what: str) -> np.ndarray:
    """``array`` laid out as ``dataformats`` (``CHW``, ``HWC``, ``HW``; ``NCHW``-style tiles into a grid) as
    height x width x channels; one channel or none becomes three (gray as RGB), as torch's ``convert_to_HWC``."""
    layout = dataformats.upper()
    if len(set(layout)) != len(layout) or array.ndim != len(layout) or set(layout) - set("NCHW"):
        raise ValueError(
            f"{what}: dataformats={dataformats!r} does not describe an array of shape {array.shape}; use one letter "
            "per dimension from N, C, H, W (e.g. 'CHW', 'HWC', 'HW', 'NCHW')"
        )
    if len(layout) == 4:
        return make_grid(array.transpose([layout.index(c) for c in "NCHW"])).transpose(1, 2, 0)
    if len(layout) == 2:
        return np.stack([array.transpose([layout.index(c) for c in "HW"])] * 3, axis=2)
    if "N" in layout:
        raise ValueError(f"{what}: dataformats={dataformats!r} names N without C, H, W; use 'NCHW'-style letters")
    hwc = array.transpose([layout.index(c) for c in "HWC"])
    return np.concatenate([hwc] * 3, axis=2) if hwc.shape[2] == 1 else hwc


def make_grid(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """``N x C x H x W`` images tiled into one ``C x rows*H x columns*W`` image, row by row (torch's layout)."""
    if images.shape[1] == 1:
        images = np.concatenate([images] * 3, axis=1)
    count, channels, height, width = images.shape
    columns = min(count, columns)
    rows = -(-count // columns)
    grid = np.zeros((channels, rows * height, columns * width), dtype=images.dtype)
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        grid[:, row * height : (row + 1) * height, column * width : (column + 1) * width] = image
    return grid


def bins_or_default(bins: Any) -> Any:
    """``"tensorflow"`` as TensorFlow's default edges; anything else as NumPy's ``bins``."""
    return tensorflow_bins() if isinstance(bins, str) and bins == "tensorflow" else bins


def check_tag(tag: Any, method: str) -> str:
    """A tag must be a non-empty string: TensorBoard groups plots by it."""
    if not isinstance(tag, str) or not tag:
        raise TypeError(f"{method}: tag must be a non-empty str, got {tag!r}")
    return tag

