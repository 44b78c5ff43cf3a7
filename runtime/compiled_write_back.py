"""A compiled call's state outputs written back where they live, and its own outputs kept safe from that write.

A compiled function's graph returns, after the function's own outputs, the new
values of the buffers it updated (BatchNorm's running statistics) and, for a
training step, the optimizer's new state and the parameters' ``.grad``. On
NumPy the backend may have written some of them into the very arrays fed
(``graph.donations``); the others are copied back here.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from kiln.frontend.module import Parameter
from kiln.runtime.step_capture import CapturedStep


def written_back(buffers: Sequence[Parameter], captured: CapturedStep | None, donations: dict[int, int],
                 outputs: Sequence[Any], feeds: Sequence[Any], state: Sequence[Any]) -> tuple[Any, ...]:
    """The compiled function's own outputs, after the state outputs (updated buffers, then a step's new optimizer state and ``.grad``)
    went back where they live, but those the backend wrote in place already. An own output that is (a view of) a
    state array fed (a weight returned as read before the update, ``w * 1`` simplified to ``w``) is copied first, so
    that neither this write-back nor a later call changes a result already given."""
    written = len(buffers) + (len(captured.write_backs) if captured is not None else 0)
    if not written:
        return tuple(np.asarray(o) for o in outputs)
    first = len(outputs) - written
    in_place = _written_in_place(outputs, feeds, donations)
    owners = {id(_owner(array)) for array in state}
    own = tuple(np.array(o) if id(_owner(o)) in owners else np.asarray(o) for o in outputs[:first])
    updates = [np.asarray(o) for o in outputs[first:]]
    for buffer, update, done in zip(buffers, updates, in_place[first:]):
        if not done:
            write_buffer(buffer, update)
    if captured is not None:
        skip = first + len(buffers)
        captured.write_back(updates[len(buffers) :], in_place[skip:])
    return own


def write_buffer(buffer: Parameter, update: np.ndarray) -> None:
    """``update`` into ``buffer``'s array; a new array where its shape or dtype differs: the step assigned the buffer's
    name a tensor of another shape (snnTorch's ``self.mem = torch.zeros_like(input_)`` over a ``zeros(0)`` buffer),
    which PyTorch's buffer becomes, as an eager assignment's does (``frontend/module.py``'s ``_assign_buffer``)."""
    if buffer.data.shape == update.shape and buffer.data.dtype == update.dtype:
        np.copyto(buffer.data, update)
    else:
        buffer.data = np.array(update)


def _owner(array: Any) -> Any:
    """The array owning ``array``'s memory (NumPy keeps a view's ``base`` at the owner)."""
    base = getattr(array, "base", None)
    return array if base is None else base


def _written_in_place(outputs: Sequence[Any], feeds: Sequence[Any], donations: dict[int, int]) -> list[bool]:
    """For each output, whether the backend wrote it into the very array fed for its donated input."""
    in_place = [False] * len(outputs)
    for source, target in donations.items():
        in_place[target] = outputs[target] is feeds[source]
    return in_place


__all__ = ["write_buffer", "written_back"]
