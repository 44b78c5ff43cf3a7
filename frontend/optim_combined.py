"""``Combined``: several optimizers updating disjoint parameters in one compiled step.

PyTorch code steps two optimizers one after the other (Muon for the matrices, AdamW for the rest); a kiln step
compiles one optimizer's updates into the graph, so the two are combined into one that hands each parameter to
the optimizer that holds it:

```python
matrices = [p for p in model.parameters() if p.ndim == 2]
others = [p for p in model.parameters() if p.ndim != 2]
muon, adamw = kiln.optim.Muon(matrices, lr=0.02), kiln.optim.AdamW(others, lr=3e-4)
step = kiln.compile_train_step(model, F.cross_entropy, [muon, adamw])   # a list is kiln.optim.Combined(muon, adamw)
schedule = kiln.optim.lr_scheduler.CosineAnnealingLR(adamw, T_max=100)   # schedules attach to either one
```

The combination's ``param_groups`` are its members' group dicts themselves (a member's schedule or a change of
its ``lr`` reaches the step), its ``state`` their states, its ``step_count`` theirs (kept equal), and its
``state_dict`` one dict in the single-optimizer format over all of them.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Value
from kiln.frontend.module import Parameter
from kiln.frontend.optim import Optimizer, Update


class Combined(Optimizer):
    """The union of ``optimizers`` (each a kiln optimizer whose update compiles into the step), which must hold
    disjoint parameters; each group feeds its own optimizer's graph hyper-parameters (``lr``, a cycled momentum)."""

    def __init__(self, *optimizers: Optimizer):
        _check_members(optimizers)
        self.optimizers = list(optimizers)
        self.graph_hyperparameters = optimizers[0].graph_hyperparameters
        self.defaults = {type(o).__name__: dict(o.defaults) for o in optimizers}
        self.fixed_options = []
        self.step_count = max(o.step_count for o in optimizers)

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return [group for optimizer in self.optimizers for group in optimizer.param_groups]

    @property
    def step_count(self) -> int:  # type: ignore[override]
        return self.optimizers[0].step_count

    @step_count.setter
    def step_count(self, value: int) -> None:
        for optimizer in self.optimizers:
            optimizer.step_count = value

    @property
    def state(self) -> dict[int, dict[str, np.ndarray]]:  # type: ignore[override]
        return {key: value for optimizer in self.optimizers for key, value in optimizer.state.items()}

    @state.setter
    def state(self, value: Mapping[int, dict[str, np.ndarray]]) -> None:
        for optimizer in self.optimizers:
            held = {id(p) for p in optimizer.parameters()}
            optimizer.state = {key: arrays for key, arrays in value.items() if key in held}

    def state_dict(self) -> dict[str, Any]:
        """The members' ``state_dict()``s (PyTorch's layout) as one, positions counted across the members in order:
        each entry as its member keeps it (AdamW's own ``step``, none for Muon's)."""
        state: dict[int, Any] = {}
        groups: list[dict[str, Any]] = []
        offset = 0
        for optimizer in self.optimizers:
            own = optimizer.state_dict()
            state.update({offset + key: entry for key, entry in own["state"].items()})
            groups += [{**group, "params": [offset + key for key in group["params"]]} for group in own["param_groups"]]
            offset += len(optimizer.parameters())
        return {"state": state, "param_groups": groups}

    def add_param_group(self, group: dict[str, Any]) -> None:
        raise KilnError("Combined: add the group to the member optimizer that should update it (its add_param_group)")

    def owner(self, param: Parameter) -> Optimizer:
        """The member optimizer that updates ``param``."""
        return next(o for o in self.optimizers if any(p is param for p in o.parameters()))

    def _owner_of_group(self, group: dict[str, Any]) -> Optimizer:
        return next(o for o in self.optimizers if any(g is group for g in o.param_groups))

    def signature(self) -> tuple[Any, ...]:
        return tuple((type(o).__name__, o.signature()) for o in self.optimizers)

    def check_group(self, group: dict[str, Any]) -> None:
        self._owner_of_group(group).check_group(group)

    def group_hyperparameters(self, group: dict[str, Any]) -> tuple[str, ...]:
        return self._owner_of_group(group).group_hyperparameters(group)

    def hyperparameter(self, group: dict[str, Any], name: str) -> float:
        return self._owner_of_group(group).hyperparameter(group, name)

    def computes_lr_on_host(self, group: dict[str, Any]) -> bool:
        return self._owner_of_group(group).computes_lr_on_host(group)

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return self._owner_of_group(group).state_names(group)

    def param_state_names(self, param: Parameter, group: dict[str, Any]) -> tuple[str, ...]:
        return self.owner(param).param_state_names(param, group)

    def state_shape(self, param: Parameter, name: str) -> tuple[int, ...]:
        return self.owner(param).state_shape(param, name)

    def state_dtype(self, param: Parameter, name: str) -> np.dtype:
        return self.owner(param).state_dtype(param, name)

    def state_of(self, param: Parameter) -> dict[str, np.ndarray]:
        return self.owner(param).state_of(param)

    def emit_update(self, b: Builder, param: Value, grad: Value, state: dict[str, Value], hyper: dict[str, Value],
                    group: dict[str, Any]) -> Update:
        return self._owner_of_group(group).emit_update(b, param, grad, state, hyper, group)

    def _loaded_array(self, param: Parameter, name: str, array: np.ndarray, key: Any) -> np.ndarray:
        return self.owner(param)._loaded_array(param, name, array, key)

    def __repr__(self) -> str:
        return f"Combined({', '.join(map(repr, self.optimizers))})"


def _check_members(optimizers: tuple[Optimizer, ...]) -> None:
    """At least one compiled-update optimizer, no parameter in two."""
    if not optimizers:
        raise KilnError("Combined needs at least one optimizer: Combined(muon, adamw)")
    for optimizer in optimizers:
        if not isinstance(optimizer, Optimizer) or type(optimizer).emit_update is Optimizer.emit_update:
            raise KilnError(f"Combined takes optimizers whose update compiles into the step (SGD, AdamW, Muon, ...), "
                            f"got {type(optimizer).__name__}")
    seen: dict[int, str] = {}
    for optimizer in optimizers:
        for param in optimizer.parameters():
            if id(param) in seen:
                raise KilnError(f"Combined: a parameter of shape {param.data.shape} is in both {seen[id(param)]} and "
                                f"{type(optimizer).__name__}; give each parameter to one optimizer")
            seen[id(param)] = type(optimizer).__name__
