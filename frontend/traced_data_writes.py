"""A write through ``x.data`` in a trace, read by the backward as PyTorch's: the new values.

PyTorch's ``x.data`` shares ``x``'s storage, so the backward of an op that saved ``x`` before the write reads the
values written (Tacotron 2's ``parse_output``: the postnet's first conv saved the decoder's outputs, then
``outputs[0].data.masked_fill_(mask, 0.0)``; the conv's weight gradient sees the zeros). A trace rebinds ``x`` to a
new value instead, and its ops keep reading the old one, the forward rightly so. ``traced_data_writes`` records, for
such a write, each old value and the tensor now holding the new one (``DATA_WRITTEN``); after a traced
``backward()`` differentiated the graph, ``backward_reads_written`` points the backward's ops at the new values, and
at views kiln's ops made of the old ones (``conv1d``'s ``x.unsqueeze(2)``) made again of the new:

```
%m   = mul(%x, 2)               %y = conv2d(expand_dims(%m), %w)        forward, as traced
%m.1 = where(%mask, 0, %m)                                              m.data.masked_fill_(mask, 0)
%dw  = conv2d_backward_weight(expand_dims(%m), %dy)                   ->  ... (expand_dims(%m.1), %dy)
```

The eager form (``frontend/version_counter.py``) rewrites the eager arrays a backward is fed instead.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import Any, Iterator

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Value

DATA_WRITTEN: "weakref.WeakKeyDictionary[Value, Any]" = weakref.WeakKeyDictionary()
"""Traced values replaced through a tensor with a counter of its own (``x.data``) -> the tensor holding the new."""


@contextlib.contextmanager
def traced_data_writes(tensor: Any) -> Iterator[None]:
    """Record the values a traced in-place write of ``tensor`` replaces in the tensors sharing its storage but not
    its version counter (``tensor`` is ``x.data`` or a view of it; or ``x`` itself, and ``x.data`` shares it)."""
    from kiln.frontend.version_counter import _counter_owner, _sharing

    members = _sharing(tensor)
    if len(members) < 2:
        yield
        return
    before = [(member, member.__dict__.get("_value")) for member in members]
    yield
    written = _counter_owner(tensor)
    for member, value in before:
        changed = member.__dict__.get("_value") is not value or "_stale" in member.__dict__
        if value is not None and changed and _counter_owner(member) is not written:
            DATA_WRITTEN[value] = member


def backward_reads_written(graph: Graph, first: int) -> None:
    """Point the backward's ops (``graph.ops[first:]``, just appended by autodiff) at the values written through
    ``.data`` since the forward read them, as PyTorch's shared storage."""
    if not DATA_WRITTEN or first >= len(graph.ops):
        return
    backward = graph.ops[first:]
    builder, found = Builder(graph, insert_before=backward[0]), {}
    for op in backward:
        for index, operand in enumerate(op.operands):
            new = _written(operand, builder, found)
            if new is not None:
                op.set_operand(index, new)


def _written(value: Value, builder: Builder, found: dict[Value, Value | None]) -> Value | None:
    """The value the storage of ``value`` holds now, where a ``.data`` write changed it (or what ``value`` views):
    the holder's current value, or the same view made of it; else None."""
    from kiln.frontend.tensor_inplace import VIEW_OPS
    from kiln.frontend.view_writes import refreshed

    if value in found:
        return found[value]
    found[value], holder, op = None, DATA_WRITTEN.get(value), value.producer
    if holder is not None:
        if "_stale" in holder.__dict__:
            refreshed(holder)
        found[value] = holder.__dict__.get("_value")
    elif op is not None and op.name in VIEW_OPS and op.operands and len(op.results) == 1:
        base = _written(op.operands[0], builder, found)
        if base is not None:
            found[value] = builder.op(op.name, base, *op.operands[1:], **op.attrs)
    return found[value]


__all__ = ["DATA_WRITTEN", "backward_reads_written", "traced_data_writes"]
