"""``kiln.channels_last`` and the other ``torch.memory_format`` values: layout hints that PyTorch code passes
(``model.to(memory_format=torch.channels_last)``, ``x.contiguous(memory_format=torch.channels_last)``,
``torch.empty_like(x, memory_format=torch.preserve_format)``), as timm's and ConvNeXt's training scripts do.

A kiln value has no strides: the backend lays arrays out, so a memory format changes no value and no result; the
calls take it and return what they would without it, and ``is_contiguous(memory_format=...)`` is True for every
format (``frontend/tensor_strides.py``). ``x.stride()`` is the row-major strides, not channels-last's.
"""

from __future__ import annotations

from typing import Any


class memory_format:  # noqa: N801  (torch.memory_format's name)
    """One of PyTorch's memory formats, named as torch's (``kiln.channels_last``)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"kiln.{self.name}"

    def __reduce__(self) -> str:
        return self.name  # pickled by name: this module's constant of that name, so a load gives the same object


contiguous_format = memory_format("contiguous_format")
channels_last = memory_format("channels_last")
channels_last_3d = memory_format("channels_last_3d")
preserve_format = memory_format("preserve_format")

EXPORTS = {"memory_format": memory_format, "contiguous_format": contiguous_format, "channels_last": channels_last,
           "channels_last_3d": channels_last_3d, "preserve_format": preserve_format}


def check_rank(layout: Any, rank: int, call: str) -> None:
    """PyTorch's rule for ``contiguous(memory_format=...)``: channels_last needs a rank-4 tensor, channels_last_3d a
    rank-5 one (a RuntimeError otherwise, with torch's words)."""
    needed = {channels_last: 4, channels_last_3d: 5}.get(layout)
    if needed is not None and rank != needed:
        raise RuntimeError(f"{call}: required rank {needed} tensor to use {layout.name} format (got rank {rank})")
