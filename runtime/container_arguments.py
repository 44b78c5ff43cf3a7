"""Dicts and lists a ``kiln.compile``'d function is given and stores tensors into: refused, never left holding the
trace's tensors.

Whisper's decoding passes ``kv_cache={}`` and its hooks store ``cache[module] = torch.cat([cache[module], output])``;
fairseq's and torchscale's decoders keep an ``incremental_state`` dict the same way. ``torch.compile`` replays such a
mutation after each call. kiln does not (yet): a trace that stored its tensors there left them in the caller's dict,
so later calls read tensors with no values (an error) or, where the variant traced for the empty dict ran again, gave
silently wrong results; a dict of tensors given positionally is rebuilt for the trace, so its stores were dropped.

``check_stores`` compares each container argument (nested dicts and lists too) with what it held before the trace:
where the function stored into one, the container gets its contents back and the trace fails with a ``KilnError``
naming the argument and the slot, so the call runs eagerly (warned; ``fullgraph=True`` raises it), as correct as
PyTorch's eager run.
"""

from __future__ import annotations

from typing import Any, Iterator

from kiln.compiler.errors import KilnError

Snapshot = list[tuple[Any, Any]]
"""``(container, its slots before the trace)`` for each dict or list reachable from one argument."""


def snapshot(value: Any) -> Snapshot:
    """Each dict and list in ``value`` (itself and nested ones) with a shallow copy of its slots."""
    return [(container, dict(container) if isinstance(container, dict) else list(container))
            for container in _containers(value, set())]


def check_stores(name: str, before: Snapshot) -> None:
    """Raise (after restoring every container) where the trace stored into a container of argument ``name``."""
    changed = next((slot for container, slots in before for slot in _changed_slots(container, slots)), None)
    if changed is None:
        return
    for container, slots in before:
        _restore(container, slots)
    raise KilnError(f"kiln.compile: the function stores into its argument {name!r} (at {changed!r}), a container "
                    "kiln does not update after each call (torch.compile replays such stores); the call runs eagerly. "
                    "Return the new tensors instead (a kv cache as outputs), or keep the container outside the "
                    "compiled function")


def _containers(value: Any, seen: set[int]) -> Iterator[Any]:
    if not isinstance(value, (dict, list)) or id(value) in seen:
        return
    seen.add(id(value))
    yield value
    for item in (value.values() if isinstance(value, dict) else value):
        yield from _containers(item, seen)


def _changed_slots(container: Any, slots: Any) -> Iterator[Any]:
    """The keys (or indices) whose value is another object than before, or that were added or removed."""
    if isinstance(container, dict):
        yield from (key for key in container.keys() | slots.keys()
                    if key not in container or key not in slots or container[key] is not slots[key])
        return
    if len(container) != len(slots):
        yield min(len(container), len(slots))
    yield from (index for index, (now, then) in enumerate(zip(container, slots)) if now is not then)


def _restore(container: Any, slots: Any) -> None:
    if isinstance(container, dict):
        container.clear()
        container.update(slots)
    else:
        container[:] = slots


__all__ = ["check_stores", "snapshot"]
