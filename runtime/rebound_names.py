"""The plain objects' attributes through which a ``kiln.compile``'d function reaches its modules and optimizers
(``agent.optimizer``), guarded as ``torch.compile``'s identity guards; the closure variables and globals holding them
are ``runtime/namespace_reads.py``'s slots.

A trace reads a closure variable, a global or a plain object's attribute once and keeps what it found: the graph
takes that model's parameters as inputs and updates that optimizer's state with its learning rate. A script may bind
the name to another object between calls, and the function, run as Python, would use the new one:

```python
step = kiln.compile(train_step)              # train_step reads the closure's or global `optimizer`
...
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)   # resumed from a checkpoint, or a second training phase
optimizer.load_state_dict(checkpoint["optimizer"])
step(x, y)                                   # traced again: the graph was the old optimizer's
```

Without the guard the old graph ran on, stepping with the old optimizer's lr and state, silently. What those modules
register (a parameter, buffer, child module or hook replaced after the trace) is guarded by
``runtime/module_structure.py``, which compares only after some module's registry changed.
"""

from __future__ import annotations

from typing import Any, Callable

from kiln.runtime.reachable_objects import is_plain_object, reachable_objects


def bindings_guard(fn: Any) -> Callable[[], bool]:
    """A guard that each attribute of a plain object ``fn`` reaches (``runtime/reachable_objects.py``: an agent held
    in the closure, a trainer's ``self``) that holds a module or an optimizer still holds that very object; the
    closure variables and globals are ``runtime/namespace_reads.py``'s."""
    from kiln.frontend.module import Module  # lazily: the runtime builds on the frontend
    from kiln.frontend.optim import Optimizer

    kept = [(owner, name, value) for _, _, owner in reachable_objects(fn) if is_plain_object(owner)
            for name, value in list(vars(owner).items()) if isinstance(value, (Module, Optimizer))]
    return lambda: all(vars(owner).get(name) is value for owner, name, value in kept)


__all__ = ["bindings_guard"]
