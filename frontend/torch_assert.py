"""``torch._assert(condition, message)``: Python's ``assert`` as a function, which torchvision calls throughout its
detection code (``Matcher``, ``AnchorGenerator.grid_anchors``, ``_box_loss``) because TorchScript and FX can trace a
call where they cannot trace a statement. kiln traces Python as it runs, so the statement itself serves: a tensor
condition is read as ``bool(tensor)`` (a value guard under ``kiln.compile``, as any ``if tensor:``), and ``python -O``
drops it, as torch's."""

from __future__ import annotations

from typing import Any


def _assert(condition: Any, message: Any) -> None:
    """Raise ``AssertionError(message)`` unless ``condition`` holds (torch's ``_assert``)."""
    assert condition, message
