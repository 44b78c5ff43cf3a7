"""Optimizers with ``torch.optim``'s names and arguments; each emits ``optim.*`` ops into the step.

An optimizer keeps its hyper-parameters in ``param_groups`` (as PyTorch) and
its per-parameter state as NumPy arrays in ``state``. When a training step is
compiled, ``emit_update`` appends the update ops for one parameter; the
learning rate is a graph input, so changing it never recompiles.
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Value
from kiln.frontend.module import Parameter


class Optimizer:
    """Base class: parameter groups, per-parameter state, and the ops of one update."""

    state_names: tuple[str, ...] = ()
    """Names of the per-parameter state arrays (``momentum_buffer``, ``exp_avg``...)."""
    graph_hyperparameters: tuple[str, ...] = ("lr",)
    """Group hyper-parameters fed as graph inputs each step (changing them never recompiles)."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        groups = list(params)
        if not groups:
            raise KilnError(
                f"{type(self).__name__} got no parameters; build the model first "
                "(model.build(input_shape), or give the first Dense an input_dim)"
            )
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)
        self.state: dict[int, dict[str, np.ndarray]] = {}

    def add_param_group(self, group: dict[str, Any]) -> None:
        params = list(group["params"])
        for param in params:
            if not isinstance(param, Parameter):
                raise KilnError(f"optimizers take kiln Parameters, got {type(param).__name__}")
        self.param_groups.append({**self.defaults, **group, "params": params})

    def parameters(self) -> list[Parameter]:
        return [p for group in self.param_groups for p in group["params"]]

    def group_of(self, param: Parameter) -> dict[str, Any]:
        return next(group for group in self.param_groups if any(p is param for p in group["params"]))

    def state_of(self, param: Parameter) -> dict[str, np.ndarray]:
        """This parameter's state arrays, created (zeros) on first use."""
        if id(param) not in self.state:
            self.state[id(param)] = {name: np.zeros_like(param.data) for name in self.state_names}
        return self.state[id(param)]

    def emit_update(
        self, b: Builder, param: Value, grad: Value, state: dict[str, Value], hyper: dict[str, Value], group: dict[str, Any]
    ) -> tuple[Value, dict[str, Value]]:
        """Append the ops updating one parameter; returns the new parameter and new state values."""
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({settings})"


class SGD(Optimizer):
    """Stochastic gradient descent: ``p <- p - lr * g``."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3):
        if lr < 0:
            raise KilnError(f"SGD: invalid learning rate {lr}; it must be >= 0")
        super().__init__(params, {"lr": lr})

    def emit_update(self, b, param, grad, state, hyper, group):
        return b.sgd_update(param, grad, hyper["lr"]), {}
