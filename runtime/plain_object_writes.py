"""The attributes a traced function sets on plain Python objects (instances of the user's classes, which have no
``Module.__setattr__`` hook), recorded as the trace's attribute writes (``runtime/attribute_writes.py``) so each call
sets them as eagerly, as ``torch.compile`` replays such stores.

The objects watched are those the compiled function reaches (``runtime/reachable_objects.py``): a bound method's own
object (``kiln.compile(policy.update)``, TD3's ``class TD3(object)`` with ``self.total_it += 1``) and the objects its
closure and the globals it names hold, directly, as a bound method's object, or through a function it holds
(``kiln.compile(lambda s: agent.update(s))`` with ``agent`` a closure variable or a script's global, a wrapper's). While the trace runs, each one's class is swapped for a subclass that notes which
attributes are read before the trace writes them: as ``torch.compile`` guards only what the code read from the state
before it, a write of such an attribute is guarded on its value before the trace (a counter: the variant runs while
it holds that value, and traces again otherwise), and a write of one first set by the trace (a helper's ``load()``
re-setting its fields, a noise tape's ``self.used = {...}``) is only replayed. An attribute set to a list, tuple or dict
holding traced tensors is left as the trace set it (it has no value to replay).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

from kiln.frontend.trace import MISSING, TraceContext
from kiln.runtime.attribute_writes import READ, UNGUARDED, guardable, holds_traced_tensor, is_traced_tensor, same_value
from kiln.runtime.reachable_objects import is_plain_object, reachable_objects

_READ_FIRST: dict[int, set[str]] = {}
"""While a trace runs: ``id`` of a watched object -> the attributes read before the trace wrote them."""
_WRITTEN: dict[int, set[str]] = {}
"""While a trace runs: ``id`` of a watched object -> the attributes the trace set or deleted."""
_TRACKING: dict[type, type] = {}
"""Each watched class's read-tracking subclass, made once."""


def watching_plain_owner(traced: Callable[..., Any], fn: Any) -> Callable[..., Any]:
    """``traced`` (a wrapper of ``fn`` to trace) recording the attributes it changes on the plain objects ``fn``
    reaches (``plain_owners``); ``traced`` itself where it reaches none."""
    return watching_owners(traced, plain_owners(fn))


def watching_owners(traced: Callable[..., Any], owners: list[Any]) -> Callable[..., Any]:
    """``traced`` recording the attributes it reads and changes on ``owners`` (plain objects not watched already by
    an enclosing trace's wrapper); ``traced`` itself where there are none."""
    owners = [owner for owner in owners if id(owner) not in _READ_FIRST]
    if not owners:
        return traced

    @functools.wraps(traced)
    def watched(*inputs: Any, **keywords: Any) -> Any:
        before = [(owner, dict(vars(owner))) for owner in owners]
        with _tracking_reads(owners):
            try:
                return traced(*inputs, **keywords)
            finally:  # a failed trace's writes too: the context restores them (TraceContext.restore_attributes)
                for owner, attributes in before:
                    _record_changes(owner, attributes)

    return watched


def plain_owners(fn: Any, depth: int = 3) -> list[Any]:
    """The plain Python objects ``fn`` reaches (``runtime/reachable_objects.py``): a bound method's object and those
    its closure and the globals it names hold, ``depth`` functions deep."""
    return [item for _, _, item in reachable_objects(fn, depth) if is_plain_object(item)]


@contextlib.contextmanager
def _tracking_reads(owners: list[Any]) -> Iterator[None]:
    """Each owner's class swapped for its read-tracking subclass while the trace runs (an object whose class cannot
    be swapped is not tracked: its writes are all guarded)."""
    swapped = []
    for owner in owners:
        _READ_FIRST[id(owner)], _WRITTEN[id(owner)] = set(), set()
        original = type(owner)
        try:
            object.__setattr__(owner, "__class__", _tracking_class(original))
            swapped.append((owner, original))
        except Exception:  # another layout (slots), a class that refuses subclasses (an Enum's), a metaclass's check
            _READ_FIRST[id(owner)] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for owner, original in swapped:
            object.__setattr__(owner, "__class__", original)


def _tracking_class(cls: type) -> type:
    """``cls``'s subclass noting first reads and writes (same name, no other behaviour)."""
    if cls in _TRACKING:
        return _TRACKING[cls]

    def __getattribute__(self: Any, name: str) -> Any:
        key = id(self)
        if name in object.__getattribute__(self, "__dict__") and name not in _WRITTEN.get(key, ()):
            reads = _READ_FIRST.get(key)
            if reads is not None:
                reads.add(name)
        return cls.__getattribute__(self, name)

    def __setattr__(self: Any, name: str, value: Any) -> None:
        _note_write(self, name)
        cls.__setattr__(self, name, value)

    def __delattr__(self: Any, name: str) -> None:
        _note_write(self, name)
        cls.__delattr__(self, name)

    namespace = {"__getattribute__": __getattribute__, "__setattr__": __setattr__, "__delattr__": __delattr__,
                 "__module__": cls.__module__, "__qualname__": cls.__qualname__}
    _TRACKING[cls] = type(cls)(cls.__name__, (cls,), namespace)
    return _TRACKING[cls]


def _note_write(owner: Any, name: str) -> None:
    """Note a write of ``owner``'s attribute while its trace runs (a copy the trace made, of the tracking class too, is
    not noted)."""
    written = _WRITTEN.get(id(owner))
    if written is not None:
        written.add(name)


def _record_changes(owner: Any, before: dict[str, Any]) -> None:
    """Each of ``owner``'s attributes the trace set, added or deleted, kept with its value from before the trace;
    those it set before reading them marked unguarded. Those it read and left, holding a Python value (``cfg.scale``),
    are guarded on it (``READ``)."""
    context = TraceContext.current()
    after, read_first = vars(owner), _READ_FIRST.pop(id(owner), None)
    _WRITTEN.pop(id(owner), None)
    for name in [*before, *(name for name in after if name not in before)]:
        old, new = before.get(name, MISSING), after.get(name, MISSING)
        if new is old and read_first is not None and name in read_first and guardable(new):
            READ.setdefault(context, {})[(id(owner), name)] = (owner, name, new)
        if same_value(new, old) or (not is_traced_tensor(new) and holds_traced_tensor(new)):  # [loss]: left as set
            continue
        context.attribute_writes.setdefault((id(owner), name), (owner, name, old))
        if read_first is not None and name not in read_first:
            UNGUARDED.setdefault(context, set()).add((id(owner), name))


__all__ = ["plain_owners", "watching_owners", "watching_plain_owner"]
