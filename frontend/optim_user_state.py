"""``state_dict`` and ``load_state_dict`` of a user's ``torch.optim.Optimizer`` subclass, as PyTorch's base class does.

kiln's own optimizers keep their state as arrays under names their update ops fix, and checkpoint it so
(``optim_base.py``, ``optim_torch_state.py``). A subclass written for PyTorch (lion-pytorch's ``Lion``, transformers'
``Adafactor``, ``SophiaG``, a Shampoo) updates in its own ``step`` and keeps what its code puts in ``self.state[p]``:
tensors (``exp_avg``, ``precond_0``...), a ``step`` of its own (an int, a 0-d tensor) or none, plain numbers. Its
checkpoint is PyTorch's: ``state_dict()`` gives the entries as they are, keyed by the parameter's position, and the
groups' options; ``load_state_dict`` (after a deep copy) casts each floating tensor but ``step`` to its parameter's
dtype, keeps everything else, takes the saved options with this optimizer's parameters, and hands both to
``__setstate__``, which a subclass may extend (``SophiaG`` fills in options older checkpoints lack).

```python
checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict()}
optimizer = Lion(model.parameters(), lr=1e-4)
optimizer.load_state_dict(checkpoint["optimizer"])   # training resumes where it stopped
```
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

import numpy as np

from kiln.frontend.tensor import Tensor


def own_state_dict(optimizer: Any) -> dict[str, Any]:
    """PyTorch's ``Optimizer.state_dict()``: ``{"state": {position: entry}, "param_groups": [options, "params":
    positions]}``, the entries' values as they are (the live tensors, as PyTorch's)."""
    position: dict[int, int] = {}
    groups = []
    for group in optimizer.param_groups:
        for param in group["params"]:
            position.setdefault(id(param), len(position))
        groups.append({**{key: value for key, value in dict.items(group) if key != "params"},
                       "params": [position[id(param)] for param in group["params"]]})
    state = {position[key]: dict(dict.items(entry)) for key, entry in dict.items(optimizer.state) if key in position}
    return {"state": state, "param_groups": groups}


def load_own_state_dict(optimizer: Any, state_dict: Mapping[str, Any]) -> None:
    """PyTorch's ``Optimizer.load_state_dict`` of ``own_state_dict``'s layout: checked, copied, cast, then set through
    ``optimizer.__setstate__``."""
    from kiln.frontend.optim_parameter_state import ParamGroup, ParameterState, StepCounter

    state_dict = copy.deepcopy(dict(state_dict))
    groups, saved_groups = optimizer.param_groups, list(state_dict["param_groups"])
    if len(groups) != len(saved_groups):
        raise ValueError("loaded state dict has a different number of parameter groups")
    if any(len(group["params"]) != len(saved["params"]) for group, saved in zip(groups, saved_groups)):
        raise ValueError("loaded state dict contains a parameter group that doesn't match the size of optimizer's group")
    params = {saved_id: param for group, saved in zip(groups, saved_groups)
              for saved_id, param in zip(saved["params"], group["params"])}
    state = ParameterState(counter=StepCounter(optimizer))
    for key, entry in state_dict["state"].items():
        if key in params:
            state[params[key]] = _cast(params[key], entry)
        else:
            state[key] = entry
    new_groups = [ParamGroup({**saved, "params": group["params"]}) for group, saved in zip(groups, saved_groups)]
    optimizer.__setstate__({"state": state, "param_groups": new_groups})


def _cast(param: Any, value: Any, key: Any = None) -> Any:
    """PyTorch's ``_process_value_according_to_param_policy``: a floating tensor other than ``step`` in the
    parameter's dtype; dicts and sequences item by item; anything else as it is. An array (a ``torch.load``ed
    checkpoint's) is a tensor here."""
    if isinstance(value, np.ndarray):
        from kiln.frontend.eager_values import eager_leaf  # lazily: eager values build on the tensor

        value = eager_leaf(np.array(value))
    if isinstance(value, Tensor):
        return value if key == "step" or not param.dtype.is_float else value.to(dtype=param.dtype)
    if isinstance(value, dict):
        return {name: _cast(param, item, name) for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(param, item) for item in value)
    return value


__all__ = ["load_own_state_dict", "own_state_dict"]
