"""``load_state_dict(state, assign=True)``: the state's tensors become the module's, as PyTorch's.

With ``assign=False`` (the default) loading copies each value into the parameter or buffer in place. With
``assign=True`` each name gets a new ``Parameter`` (or buffer) holding the state's values in the state's dtype
(``model.load_state_dict({k: v.double() ...}, assign=True)`` makes a float64 model), keeping the old parameter's
``requires_grad``, as PyTorch's; shapes are checked first all the same. The values are a copy, where PyTorch's
parameter would share the state tensor's memory. A compiled function that read the old
parameters traces again (``runtime/module_structure.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def assign_state(module: Any, arrays: dict[str, np.ndarray], own: dict[str, Any]) -> None:
    """Put each of ``arrays`` (checked against ``own``: the module's state items by name) in ``module`` as a new
    parameter or buffer under its name."""
    from kiln.frontend.module import Buffer, Parameter  # lazily: the module class imports this file's caller

    for name, array in arrays.items():
        owner, attribute = _owner(module, name)
        old = own[name]
        if isinstance(old, Buffer):
            owner.register_buffer(attribute, Buffer(np.array(array)),
                                  persistent=attribute not in owner.__dict__.get("_non_persistent_buffers_set", ()))
        else:
            setattr(owner, attribute, Parameter(np.array(array), requires_grad=old.requires_grad))


def _owner(module: Any, name: str) -> tuple[Any, str]:
    """The submodule holding the state item ``name`` (``"encoder.0.weight"``) and its own name there."""
    *path, attribute = name.split(".")
    for step in path:
        module = module._modules[step]
    return module, attribute


__all__ = ["assign_state"]
