"""Class attributes a ``kiln.compile``'d function sets: refused, so the call runs eagerly.

```python
class Block(nn.Module):
    calls = 0
    def forward(self, x):
        Block.calls += 1                 # a class-level counter (type(self).calls += 1 alike)
        return self.linear(x) * Block.calls
```

A trace runs the Python once: the class attribute was set once and the graph kept the value it read, so later calls
neither counted nor read the new count (silently); ``torch.compile`` replays the store and guards the value read. The
user's classes the function reaches (those it names, a bound method's, its modules' and their submodules', a plain
object's) are compared with what they held before the trace; a number, string or flag set there (a count, which
the trace may have read) is undone and refused with a ``KilnError`` naming the attribute, so the call runs eagerly,
warned (``fullgraph=True`` raises it). An attribute set to another object (a list of fed masks the forward pops) is
left as the trace set it, as before.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

from kiln.compiler.errors import KilnError
from kiln.runtime.reachable_objects import Reached, is_plain_object, is_users


def refusing_class_attribute_writes(traced: Callable[..., Any], reached: list[Reached]) -> Callable[..., Any]:
    """``traced`` refusing a change to an attribute of a user's class among what its function ``reached``
    (``reachable_with_module_attributes``)."""
    classes = _reached_classes([item for _, _, item in reached])
    if not classes:
        return traced

    @functools.wraps(traced)
    def refusing(*inputs: Any) -> Any:
        before = [(cls, dict(vars(cls))) for cls in classes]
        try:
            result = traced(*inputs)
        finally:
            changed = [(cls, name, attributes) for cls, attributes in before for name in _changed(cls, attributes)]
            for cls, name, attributes in changed:
                _restore(cls, name, attributes)
        if changed:
            cls, name, _ = changed[0]
            raise KilnError(f"kiln.compile: the function sets the class attribute {cls.__name__}.{name}, which a trace "
                            "would set once, keeping the value it read (torch.compile replays it); the call runs "
                            "eagerly. Keep the count on the instance (self.calls) or outside the compiled function")
        return result

    return refusing


def _reached_classes(reached: list[Any]) -> list[type]:
    """The user's classes among ``reached``, and those of the modules (submodules too) and plain objects there."""
    from kiln.frontend.module import Module  # lazily: the runtime builds on the frontend

    modules = {id(m): m for root in reached if isinstance(root, Module) for m in root.modules()}
    found = [item for item in reached if isinstance(item, type)]
    found += [type(item) for item in [*reached, *modules.values()] if isinstance(item, Module) or is_plain_object(item)]
    return [cls for cls in {id(c): c for c in found}.values() if is_users(cls)]


def _changed(cls: type, attributes: dict[str, Any]) -> list[str]:
    """The attributes of ``cls`` set to another number, string or flag than before (``attributes``)."""
    now = vars(cls)
    return [name for name, value in now.items()
            if isinstance(value, (bool, int, float, str)) and (name not in attributes or attributes[name] is not value)]


def _restore(cls: type, name: str, attributes: dict[str, Any]) -> None:
    """``cls.name`` as it was in ``attributes`` (deleted where it had none)."""
    if name in attributes:
        setattr(cls, name, attributes[name])
    else:
        delattr(cls, name)


__all__ = ["refusing_class_attribute_writes"]
