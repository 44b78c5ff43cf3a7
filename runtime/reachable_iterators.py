"""Iterators a ``kiln.compile``'d function takes items from with ``next()``: refused, so the call runs eagerly.

```python
train_iter = iter(loader)

@kiln.compile
def train_step():
    x, y = next(train_iter)        # a trace takes one batch; its graph would reuse it at every call
    ...
```

A trace runs the Python once: the batch ``next()`` gave it became the graph's, so every later call trained on that
batch (and a trace refused after its ``next()`` had skipped one). ``torch.compile`` takes the item anew at each call
(it replays a list iterator's position, and breaks the graph at a DataLoader's). Here ``next()`` of an iterator the
function reaches (its closure's, a global, a plain object's or a module's attribute: a generator, a list iterator, a
DataLoader's iterator, ``itertools.count()``) is refused before it takes anything, with a ``KilnError`` naming it, so
the call runs eagerly, warned (``fullgraph=True`` raises it). An iterator the function makes itself
(``next(self.parameters())``) is its own business. A ``for`` loop over a reachable iterator is not seen.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
from typing import Any, Callable, Iterator

from kiln.compiler.errors import KilnError
from kiln.runtime.reachable_objects import Reached

_BUILTIN_NEXT = builtins.next


def refusing_reachable_iterators(traced: Callable[..., Any], reached: list[Reached]) -> Callable[..., Any]:
    """``traced`` refusing ``next()`` of the iterators among what its function ``reached``
    (``reachable_with_module_attributes``)."""
    iterators = {id(item): (name, what) for name, what, item in reached if _is_iterator(item)}
    if not iterators:
        return traced

    @functools.wraps(traced)
    def refusing(*inputs: Any) -> Any:
        with _next_refusing(iterators):
            return traced(*inputs)

    return refusing


def _is_iterator(item: Any) -> bool:
    return hasattr(type(item), "__next__") and hasattr(type(item), "__iter__")


@contextlib.contextmanager
def _next_refusing(iterators: dict[int, tuple[str, str]]) -> Iterator[None]:
    """``builtins.next`` refusing the ``iterators`` (by id) while the block runs, before taking an item."""
    saved = builtins.next

    def next(iterator: Any, *default: Any) -> Any:  # noqa: A001  (the builtin's name, as the user's code calls it)
        reached = iterators.get(id(iterator))
        if reached is not None:
            name, what = reached
            raise KilnError(f"kiln.compile: the function takes the next item of {what} {name!r} (next()), which a trace "
                            "would take once and reuse at every call (torch.compile takes it anew); the call runs "
                            "eagerly. Take the batch outside and give it to the compiled function: x, y = next(it); "
                            "step(x, y)")
        return _BUILTIN_NEXT(iterator, *default)

    builtins.next = next
    try:
        yield
    finally:
        builtins.next = saved


__all__ = ["refusing_reachable_iterators"]
