"""Optimizers with ``torch.optim``'s names, arguments and semantics; each emits one ``optim.*`` op per parameter.

An optimizer keeps its hyper-parameters in ``param_groups`` (as PyTorch), its
per-parameter state as NumPy arrays in ``state`` and the number of updates
done in ``step_count``. When a training step is compiled, ``emit_update``
appends the update op of one parameter. The learning rate and the step
counter are graph inputs, so changing them never recompiles; the other
options are attributes of the op, and changing one recompiles the step,
except a momentum that a scheduler cycles (``OneCycleLR``, ``CyclicLR``),
which ``feed_as_input`` makes a graph input too.

```python
decay, no_decay = [], []
for name, p in model.named_parameters():
    (no_decay if name.endswith("bias") else decay).append(p)
optimizer = kiln.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
```
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import ml_dtypes
import numpy as np

from kiln.compiler.errors import CheckpointError, KilnError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import DType, TensorType, is_float_array_dtype
from kiln.compiler.ops.optim import emit_decomposed, scalar_state_dtype
from kiln.frontend.module import Parameter, clear_grads
from kiln.frontend.tensor import Tensor

Update = tuple[Value, dict[str, Value]]


class Optimizer:
    """Base class: parameter groups, per-parameter state, the step counter, and the ops of one update."""

    graph_hyperparameters: tuple[str, ...] = ("lr",)
    """Group hyper-parameters fed as graph inputs each step (changing them never recompiles); ``feed_as_input`` adds one
    to an instance."""
    feedable_hyperparameters: frozenset[str] = frozenset()
    """Options ``feed_as_input`` may turn into graph inputs: the momentum a scheduler cycles (``momentum``, or ``beta1``,
    the first of ``betas``)."""
    scalar_states: frozenset[str] = frozenset()
    """States that are one number per parameter in PyTorch (0-d there, parameter-shaped here): a saved 0-d value loads
    broadcast, so a ``torch.optim`` ``state_dict`` converted to arrays loads as is."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]):
        self.defaults = dict(defaults)
        self.fixed_options = sorted(set(self.defaults) - set(self.graph_hyperparameters))
        """Options a compiled update fixes (a change recompiles): every default but the graph hyper-parameters."""
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, np.ndarray]] = {}
        self.step_count = 0
        """Updates done so far; the compiled step reads ``step_count + 1`` as its ``step`` input."""
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

    def add_param_group(self, group: dict[str, Any]) -> None:
        """Add a group; options it does not name take the optimizer's defaults."""
        from kiln.frontend.optim_leaf_tensors import as_optimizer_parameter  # lazily: it subclasses Parameter

        params = [group["params"]] if isinstance(group["params"], Tensor) else list(group["params"])
        params = [as_optimizer_parameter(param) for param in params]
        seen = {id(p) for p in self.parameters()}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise KilnError("some parameters appear in more than one parameter group (or twice in one); list each once")
        full = {**self.defaults, **group, "params": params}
        self.check_group(full)
        self.param_groups.append(full)

    def feed_as_input(self, name: str) -> None:
        """Feed option ``name`` (``momentum``, or ``beta1`` for ``betas[0]``) to the step as a graph input each step, as
        ``lr``, instead of compiling it in: what a scheduler that cycles momentum calls (``OneCycleLR``, ``CyclicLR``).
        A step compiled before recompiles once; an optimizer never fed compiles exactly as before."""
        if name in self.graph_hyperparameters:
            return
        if name not in self.feedable_hyperparameters:
            feedable = sorted(self.feedable_hyperparameters) or "none"
            raise KilnError(
                f"{type(self).__name__}: {name!r} cannot be fed to the compiled step each step (options that can: {feedable}); "
                "it is compiled into the update, so changing it every step would recompile every step (with a scheduler: "
                "pass cycle_momentum=False, the learning rate still cycles)"
            )
        self.graph_hyperparameters = (*self.graph_hyperparameters, name)
        self.fixed_options = sorted(set(self.defaults) - set(self.graph_hyperparameters))

    def group_hyperparameters(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The hyper-parameters of ``group`` fed as graph inputs, in input order."""
        return self.graph_hyperparameters

    def hyperparameter(self, group: dict[str, Any], name: str) -> float:
        """The current value of graph hyper-parameter ``name`` in ``group`` (``beta1``: ``betas[0]``)."""
        return group["betas"][0] if name == "beta1" else group[name]

    def fixed_value(self, group: dict[str, Any], key: str) -> Any:
        """What a compiled update fixes of option ``key``: all of it, but ``betas[1:]`` once ``beta1`` is fed."""
        if key == "betas" and "beta1" in self.graph_hyperparameters:
            return tuple(group["betas"][1:])
        return _hashable(group[key])

    def check_group(self, group: dict[str, Any]) -> None:
        """Raise ``KilnError`` for invalid options (a negative lr, nesterov without momentum...)."""
        _non_negative(type(self).__name__, group, "lr", "weight_decay")

    def parameters(self) -> list[Parameter]:
        return [p for group in self.param_groups for p in group["params"]]

    def trained_parameters(self) -> list[Parameter]:
        """The parameters a step updates: those with ``requires_grad``. As in PyTorch, a frozen parameter gets no
        gradient, so no update, no weight decay and no state; turning it back on recompiles the step."""
        return [p for p in self.parameters() if p.requires_grad]

    def group_of(self, param: Parameter) -> dict[str, Any]:
        return next(group for group in self.param_groups if any(p is param for p in group["params"]))

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        """Names of the state arrays of each parameter in ``group``, in the update op's operand order."""
        return ()

    def param_state_names(self, param: Parameter, group: dict[str, Any]) -> tuple[str, ...]:
        """Names of ``param``'s state arrays: ``state_names(group)``, unless the parameter's rank changes them
        (Adafactor factors the second moment of a matrix, not of a vector)."""
        return self.state_names(group)

    def state_shape(self, param: Parameter, name: str) -> tuple[int, ...]:
        """The shape of ``param``'s state array ``name``: the parameter's, unless factored (Adafactor's row and column moments)."""
        return tuple(param.data.shape)

    def state_dtype(self, param: Parameter, name: str) -> np.dtype:
        """The dtype of ``param``'s state array ``name``: the parameter's (PyTorch's ``zeros_like(p)``), except a
        ``scalar_states`` entry of a half parameter, which PyTorch keeps as a 0-d float32 tensor (``scalar_state_dtype``)."""
        dtype = param._data.dtype
        return scalar_state_dtype(DType.of(dtype)).numpy if name in self.scalar_states else dtype

    def state_type(self, param: Parameter, name: str) -> TensorType:
        """The graph type of ``param``'s state array ``name`` (``state_shape``, ``state_dtype``)."""
        return TensorType(self.state_shape(param, name), DType.of(self.state_dtype(param, name)))

    def initial_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, np.ndarray]:
        """A parameter's state before its first update (zeros, as ``torch.optim``)."""
        return {name: np.zeros(self.state_shape(param, name), self.state_dtype(param, name)) for name in self.param_state_names(param, group)}

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the ``.grad`` eager ``backward()`` calls accumulate (a compiled step computes its gradients inside the step)."""
        clear_grads(self.parameters(), set_to_none)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """An eager update from each parameter's ``.grad`` (after ``loss.backward()``), as ``torch.optim``'s ``step``:
        the optimizer's update ops, compiled once (``runtime/eager_optim.py``). Parameters without a gradient are left
        alone. ``closure`` (re-evaluating the loss and calling ``backward``) is called first; its loss is returned."""
        from kiln.runtime.eager_optim import apply_gradients  # lazily: the runtime builds on the frontend

        loss = closure() if closure is not None else None
        apply_gradients(self)
        return loss

    def state_of(self, param: Parameter) -> dict[str, np.ndarray]:
        """This parameter's state arrays, created on first use in its dtype (as PyTorch's ``zeros_like(p)``: a model
        made half by ``model.half()`` before its first step gets half state). State made before the parameter's dtype
        changed is cast to the new dtype (PyTorch would keep it and mix dtypes in its update; kiln's update ops take
        state in the parameter's dtype, as PyTorch's ``load_state_dict`` casts it)."""
        if id(param) not in self.state:
            self.state[id(param)] = self.initial_state(param, self.group_of(param))
        state = self.state[id(param)]  # below: param._data, not .data, which would bring a device-resident parameter back
        if any(array.dtype != self.state_dtype(param, name) and is_float_array_dtype(array.dtype) for name, array in state.items()):
            state = self.state[id(param)] = {name: _cast_float(array, self.state_dtype(param, name)) for name, array in state.items()}
        return state

    def signature(self) -> tuple[Any, ...]:
        """What a compiled update fixes: group membership, which parameters train (requires_grad), their dtypes (a
        ``model.half()`` recompiles), every option that is not a graph input, and which are graph inputs."""
        groups = tuple((tuple(map(id, group["params"])), tuple((bool(p.requires_grad), p._data.dtype) for p in group["params"]),
                        tuple([self.fixed_value(group, key) for key in self.fixed_options]))
                       for group in self.param_groups)
        return groups + (self.graph_hyperparameters,)

    def emit_update(
        self, b: Builder, param: Value, grad: Value, state: dict[str, Value], hyper: dict[str, Value], group: dict[str, Any]
    ) -> Update:
        """Append the ops updating one parameter; returns the new parameter and its new state values.

        ``hyper`` holds the group's graph hyper-parameters (``lr``, and a momentum ``feed_as_input`` made one) and the
        1-based ``step`` counter (a graph input only when some update reads it).
        """
        raise NotImplementedError

    # --- state_dict ----------------------------------------------------------------------------

    def state_dict(self, names: Mapping[int, str] | None = None) -> dict[str, Any]:
        """``{"state": {param key: {name: array}}, "param_groups": [...], "step": int}``.

        Parameters are keyed by ``names[id(param)]`` (the model's parameter names) where given,
        else by their position in the optimizer, as PyTorch does. Arrays are the live ones.
        """
        key = _keyer(self.parameters(), names)
        return {
            "state": {key(p): dict(self.state[id(p)]) for p in self.parameters() if id(p) in self.state},
            "param_groups": [{**_options(group), "params": [key(p) for p in group["params"]]} for group in self.param_groups],
            "step": self.step_count,
        }

    def load_state_dict(self, state: Mapping[str, Any], names: Mapping[int, str] | None = None) -> None:
        """Restore groups' options, state arrays and the step counter; everything is checked before anything is written."""
        self.prepare_load(state, names)()

    def prepare_load(self, state: Mapping[str, Any], names: Mapping[int, str] | None = None) -> Callable[[], None]:
        """Check ``state`` against this optimizer; returns the function that writes it."""
        missing = sorted({"state", "param_groups", "step"} - set(state))
        if missing:
            raise CheckpointError(f"an optimizer state has 'state', 'param_groups' and 'step' entries; this one lacks {missing}")
        key = _keyer(self.parameters(), names)
        saved_groups = list(state["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise CheckpointError(f"optimizer state has {len(saved_groups)} parameter groups, this optimizer {len(self.param_groups)}")
        options = [_loaded_options(index, group, saved, key) for index, (group, saved) in enumerate(zip(self.param_groups, saved_groups))]
        arrays = {}
        for group, loaded in zip(self.param_groups, options):
            for param in group["params"]:
                arrays[id(param)] = self._loaded_state(param, {**group, **loaded}, state["state"], key)
        step = int(state["step"])

        def write() -> None:
            for group, loaded in zip(self.param_groups, options):
                group.update(loaded)
            self.state = {pid: _into(self.state.get(pid), value) for pid, value in arrays.items() if value is not None}
            self.step_count = step

        return write

    def _loaded_state(
        self, param: Parameter, group: dict[str, Any], saved: Mapping[str, Any], key: Callable[[Parameter], str]
    ) -> dict[str, np.ndarray] | None:
        """A parameter's saved state arrays, checked and cast to its dtype (``None``: not saved, start fresh)."""
        entry = saved.get(key(param))
        if entry is None:
            return None
        expected = set(self.param_state_names(param, group))
        if set(entry) != expected:
            raise CheckpointError(
                f"optimizer state of {key(param)!r} holds {sorted(entry)}; {type(self).__name__} with these options expects {sorted(expected)}"
            )
        return {name: self._loaded_array(param, name, np.asarray(array), key) for name, array in entry.items()}

    def _loaded_array(self, param: Parameter, name: str, array: np.ndarray, key: Callable[[Parameter], str]) -> np.ndarray:
        """One saved state array in ``param``'s dtype, checked against the shape it keeps (a saved 0-d scalar state broadcast)."""
        shape = self.state_shape(param, name)
        if array.ndim == 0 and name in self.scalar_states:
            array = np.broadcast_to(array, shape)
        if array.shape != shape:
            kept = "" if shape == param.data.shape else f" (this state {shape})"
            raise CheckpointError(f"optimizer state {key(param)}.{name} has shape {array.shape}, the parameter {param.data.shape}{kept}")
        return np.array(array, dtype=self.state_dtype(param, name))

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({settings})"


def _non_negative(owner: str, group: dict[str, Any], *names: str) -> None:
    for name in names:
        if group[name] < 0:
            raise KilnError(f"{owner}: invalid {name} {group[name]}; it must be >= 0")


def _check_adam_like(owner: str, group: dict[str, Any]) -> None:
    """lr, eps and weight_decay >= 0; two betas in [0, 1)."""
    _non_negative(owner, group, "lr", "eps", "weight_decay")
    if len(group["betas"]) != 2 or not all(0.0 <= beta < 1.0 for beta in group["betas"]):
        raise KilnError(f"{owner}: invalid betas {group['betas']}; both must be in [0, 1)")


def _cast_float(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return array.astype(dtype) if is_float_array_dtype(array.dtype) else array


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _options(group: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in group.items() if key != "params"}


def _keyer(parameters: list[Parameter], names: Mapping[int, str] | None) -> Callable[[Parameter], str]:
    positions = {id(p): str(i) for i, p in enumerate(parameters)}
    return lambda p: (names or {}).get(id(p), positions[id(p)])


def _loaded_options(index: int, group: dict[str, Any], saved: Mapping[str, Any], key: Callable[[Parameter], str]) -> dict[str, Any]:
    """The saved options of a group, after checking it holds the same parameters; tuples stay tuples."""
    ours = [key(p) for p in group["params"]]
    if list(saved["params"]) != ours:
        raise CheckpointError(f"parameter group {index} holds {list(saved['params'])} in the saved state but {ours} here")
    options = {name: value for name, value in saved.items() if name != "params"}
    return {name: tuple(value) if isinstance(group.get(name), tuple) else value for name, value in options.items()}


def _into(current: dict[str, np.ndarray] | None, loaded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The loaded state, copied into the current arrays where they have the same names and shapes (in place, as
    parameters load); L-BFGS's history arrays change shape as the history fills, so such a state is replaced."""
    if current is None or set(current) != set(loaded) or any(current[name].shape != array.shape for name, array in loaded.items()):
        return loaded
    for name, array in loaded.items():
        np.copyto(current[name], array)
    return current


def _update_op(b: Builder, name: str, *operands: Value, **attrs: Any) -> Any:
    """Op ``name``, or its decomposition where an attribute is a graph input (a fed momentum: ``emit_decomposed``)."""
    if any(isinstance(value, Value) for value in attrs.values()):
        return emit_decomposed(b, name, *operands, **attrs)
    return b.op(name, *operands, **attrs)


def _beta1(hyper: dict[str, Value], group: dict[str, Any]) -> float | Value:
    """``betas[0]``: the graph input once fed (``feed_as_input("beta1")``), else the fixed option."""
    return hyper.get("beta1", group["betas"][0])


def _direction(b: Builder, grad: Value, group: dict[str, Any]) -> Value:
    """The gradient to descend: negated when the group maximizes."""
    return b.neg(grad) if group.get("maximize") else grad


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay (``torch.optim.SGD``).

    Without momentum each update is ``optim.sgd_update``; with it, ``optim.sgd_momentum_update``. A cycled momentum
    (``feed_as_input("momentum")``) is a graph input: the momentum update, written out (``emit_decomposed``), always.
    """

    feedable_hyperparameters = frozenset({"momentum"})

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
        weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
    ):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("SGD", group, "lr", "momentum", "weight_decay")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise KilnError("SGD: nesterov momentum requires momentum > 0 and dampening = 0")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 or "momentum" in self.graph_hyperparameters else ()

    def emit_update(self, b, param, grad, state, hyper, group):
        grad = _direction(b, grad, group)
        if not self.state_names(group):
            return b.sgd_update(param, grad, hyper["lr"], weight_decay=group["weight_decay"]), {}
        options = {name: group[name] for name in ("dampening", "nesterov", "weight_decay")} | {"momentum": hyper.get("momentum", group["momentum"])}
        new_param, new_buf = _update_op(b, "optim.sgd_momentum_update", param, grad, state["momentum_buffer"], hyper["lr"], hyper["step"], **options)
        return new_param, {"momentum_buffer": new_buf}


class GD(SGD):
    """Full-batch gradient descent: ``SGD`` whose every step sees the whole data set as one batch.

    The update is SGD's (same options); what makes it gradient descent is the
    call, ``step(x_all, y_all)``, so each update follows the exact gradient of
    the training loss. The symbolic batch dim means any data set size works.
    """


class Adam(Optimizer):
    """Adam (``torch.optim.Adam``): L2 ``weight_decay`` added to the gradient, optional AMSGrad; one ``optim.adam_update`` per parameter."""

    decoupled = False
    feedable_hyperparameters = frozenset({"beta1"})

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
    ):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        _check_adam_like(type(self).__name__, group)

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())

    def emit_update(self, b, param, grad, state, hyper, group):
        names = self.state_names(group)
        results = _update_op(
            b, "optim.adam_update", param, _direction(b, grad, group), *[state[name] for name in names], hyper["lr"], hyper["step"],
            beta1=_beta1(hyper, group), beta2=group["betas"][1], eps=group["eps"], weight_decay=group["weight_decay"], amsgrad=group["amsgrad"], decoupled=self.decoupled,
        )
        return results[0], dict(zip(names, results[1:]))


class AdamW(Adam):
    """AdamW (``torch.optim.AdamW``): Adam with decoupled weight decay ``p <- p (1 - lr wd)``; ``weight_decay`` defaults to 0.01."""

    decoupled = True

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
    ):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize)


class RMSprop(Optimizer):
    """RMSprop (``torch.optim.RMSprop``): optional momentum and centering; one ``optim.rmsprop_update`` per parameter."""

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
        momentum: float = 0.0, centered: bool = False, *, maximize: bool = False,
    ):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered, maximize=maximize)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("RMSprop", group, "lr", "alpha", "eps", "weight_decay", "momentum")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("square_avg",) + (("grad_avg",) if group["centered"] else ()) + (("momentum_buffer",) if group["momentum"] > 0 else ())

    def emit_update(self, b, param, grad, state, hyper, group):
        names = self.state_names(group)
        options = {name: group[name] for name in ("alpha", "eps", "weight_decay", "momentum", "centered")}
        results = b.rmsprop_update(param, _direction(b, grad, group), *[state[name] for name in names], hyper["lr"], **options)
        return results[0], dict(zip(names, results[1:]))


class Adagrad(Optimizer):
    """Adagrad (``torch.optim.Adagrad``): ``lr_decay``, ``initial_accumulator_value``; one ``optim.adagrad_update`` per parameter."""

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, maximize: bool = False,
    ):
        defaults = dict(
            lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize
        )
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("Adagrad", group, "lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("sum",)

    def initial_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"sum": np.full_like(param.data, group["initial_accumulator_value"])}

    def emit_update(self, b, param, grad, state, hyper, group):
        options = {name: group[name] for name in ("lr_decay", "eps", "weight_decay")}
        new_param, new_sum = b.adagrad_update(param, _direction(b, grad, group), state["sum"], hyper["lr"], hyper["step"], **options)
        return new_param, {"sum": new_sum}


class Adamax(Optimizer):
    """Adamax (``torch.optim.Adamax``): Adam with the infinity norm ``exp_inf`` for the second moment; one ``optim.adamax_update`` per parameter."""

    feedable_hyperparameters = frozenset({"beta1"})

    def __init__(
        self, params: Iterable[Any], lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0.0, *, maximize: bool = False,
    ):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, maximize=maximize))

    def check_group(self, group: dict[str, Any]) -> None:
        _check_adam_like("Adamax", group)

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_inf")

    def emit_update(self, b, param, grad, state, hyper, group):
        new_param, new_avg, new_inf = _update_op(
            b, "optim.adamax_update", param, _direction(b, grad, group), state["exp_avg"], state["exp_inf"], hyper["lr"], hyper["step"],
            beta1=_beta1(hyper, group), beta2=group["betas"][1], eps=group["eps"], weight_decay=group["weight_decay"],
        )
        return new_param, {"exp_avg": new_avg, "exp_inf": new_inf}


class NAdam(Optimizer):
    """NAdam (``torch.optim.NAdam``): Adam with Nesterov momentum on a warming schedule ``mu_t``; one ``optim.nadam_update`` per parameter.

    ``mu_product`` (the product ``mu_1 ... mu_t``) is a scalar per parameter in PyTorch; here it is an array
    shaped like the parameter, every element that scalar, in the parameter's dtype (float32 for a half parameter, as
    PyTorch's 0-d float32 tensor: ``state_dtype``). It starts at ones. A PyTorch ``state_dict``'s 0-d ``mu_product`` loads broadcast.
    """

    scalar_states = frozenset({"mu_product"})
    feedable_hyperparameters = frozenset({"beta1"})

    def __init__(
        self, params: Iterable[Any], lr: float = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0.0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, *, maximize: bool = False,
    ):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, momentum_decay=momentum_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        _check_adam_like("NAdam", group)
        _non_negative("NAdam", group, "momentum_decay")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("mu_product", "exp_avg", "exp_avg_sq")

    def initial_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return {**super().initial_state(param, group), "mu_product": np.ones(param.data.shape, self.state_dtype(param, "mu_product"))}

    def emit_update(self, b, param, grad, state, hyper, group):
        names = self.state_names(group)
        results = _update_op(
            b, "optim.nadam_update", param, _direction(b, grad, group), *[state[name] for name in names], hyper["lr"], hyper["step"],
            beta1=_beta1(hyper, group), beta2=group["betas"][1], eps=group["eps"], weight_decay=group["weight_decay"],
            momentum_decay=group["momentum_decay"], decoupled=group["decoupled_weight_decay"],
        )
        return results[0], dict(zip(names, results[1:]))


class RAdam(Optimizer):
    """RAdam (``torch.optim.RAdam``): Adam whose adaptive step is switched on, rectified, once the variance of its
    second moment is tractable (``rho_t > 5``, a ``where`` on the step input); one ``optim.radam_update`` per parameter."""

    feedable_hyperparameters = frozenset({"beta1"})

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
        weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *, maximize: bool = False,
    ):
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)
        super().__init__(params, defaults)

    def check_group(self, group: dict[str, Any]) -> None:
        _check_adam_like("RAdam", group)

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def emit_update(self, b, param, grad, state, hyper, group):
        new_param, new_avg, new_avg_sq = _update_op(
            b, "optim.radam_update", param, _direction(b, grad, group), state["exp_avg"], state["exp_avg_sq"], hyper["lr"], hyper["step"],
            beta1=_beta1(hyper, group), beta2=group["betas"][1], eps=group["eps"], weight_decay=group["weight_decay"], decoupled=group["decoupled_weight_decay"],
        )
        return new_param, {"exp_avg": new_avg, "exp_avg_sq": new_avg_sq}


class Adadelta(Optimizer):
    """Adadelta (``torch.optim.Adadelta``): steps scaled by the ratio of running RMS of updates and of gradients;
    one ``optim.adadelta_update`` per parameter."""

    def __init__(
        self, params: Iterable[Any], lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
        *, maximize: bool = False,
    ):
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize))

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("Adadelta", group, "lr", "eps", "weight_decay")
        if not 0.0 <= group["rho"] <= 1.0:
            raise KilnError(f"Adadelta: invalid rho {group['rho']}; it must be in [0, 1]")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("square_avg", "acc_delta")

    def emit_update(self, b, param, grad, state, hyper, group):
        options = {name: group[name] for name in ("rho", "eps", "weight_decay")}
        new_param, new_square_avg, new_acc_delta = b.adadelta_update(
            param, _direction(b, grad, group), state["square_avg"], state["acc_delta"], hyper["lr"], **options
        )
        return new_param, {"square_avg": new_square_avg, "acc_delta": new_acc_delta}


class Rprop(Optimizer):
    """Rprop (``torch.optim.Rprop``): each weight moves by its own step size against the sign of its gradient; the step
    size grows by ``etas[1]`` while the gradient keeps its sign, shrinks by ``etas[0]`` when it flips (and that step is
    skipped), within ``step_sizes``. One ``optim.rprop_update`` per parameter.

    As in PyTorch, ``lr`` is only the step sizes' initial value, read when a parameter's state is created (its first
    update): a schedule changes ``lr`` without changing the steps after that.
    """

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-2, etas: tuple[float, float] = (0.5, 1.2), step_sizes: tuple[float, float] = (1e-6, 50),
        *, maximize: bool = False,
    ):
        super().__init__(params, dict(lr=lr, etas=tuple(etas), step_sizes=tuple(step_sizes), maximize=maximize))

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("Rprop", group, "lr")
        etaminus, etaplus = group["etas"]
        if not 0.0 < etaminus < 1.0 < etaplus:
            raise KilnError(f"Rprop: invalid etas {group['etas']}; they must satisfy 0 < etas[0] < 1 < etas[1]")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("prev", "step_size")

    def initial_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"prev": np.zeros_like(param.data), "step_size": np.full_like(param.data, group["lr"])}

    def emit_update(self, b, param, grad, state, hyper, group):
        (etaminus, etaplus), (step_size_min, step_size_max) = group["etas"], group["step_sizes"]
        new_param, new_prev, new_step_size = b.rprop_update(
            param, _direction(b, grad, group), state["prev"], state["step_size"],
            etaminus=etaminus, etaplus=etaplus, step_size_min=step_size_min, step_size_max=step_size_max,
        )
        return new_param, {"prev": new_prev, "step_size": new_step_size}


class ASGD(Optimizer):
    """Averaged SGD (``torch.optim.ASGD``): SGD with a decaying step ``eta`` and a decay term ``lambd``, and ``ax``, the
    running average of the parameter from step ``t0`` on (before it, the parameter itself). One ``optim.asgd_update``
    per parameter.

    ``eta`` (the step this update takes; ``lr`` when the state is created) and ``mu`` (the averaging weight) are
    scalars per parameter in PyTorch; here arrays shaped like the parameter, every element that scalar (as NAdam's
    ``mu_product``; float32 for a half parameter). A PyTorch ``state_dict``'s 0-d ``eta`` and ``mu`` load broadcast. ``maximize`` is keyword-only
    here: PyTorch's positional slot before it is ``foreach``.
    """

    scalar_states = frozenset({"eta", "mu"})

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6,
        weight_decay: float = 0, *, maximize: bool = False,
    ):
        super().__init__(params, dict(lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay, maximize=maximize))

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        return ("eta", "mu", "ax")

    def initial_state(self, param: Parameter, group: dict[str, Any]) -> dict[str, np.ndarray]:
        shape, scalar = param.data.shape, self.state_dtype(param, "eta")
        return {"eta": np.full(shape, group["lr"], scalar), "mu": np.ones(shape, scalar), "ax": np.zeros_like(param.data)}

    def emit_update(self, b, param, grad, state, hyper, group):
        options = {name: group[name] for name in ("lambd", "alpha", "t0", "weight_decay")}
        new_param, new_eta, new_mu, new_ax = b.asgd_update(
            param, _direction(b, grad, group), state["eta"], state["mu"], state["ax"], hyper["lr"], hyper["step"], **options
        )
        return new_param, {"eta": new_eta, "mu": new_mu, "ax": new_ax}


class Adafactor(Optimizer):
    """Adafactor (``torch.optim.Adafactor``): Adam-like steps without a first moment, whose second moment is factored
    for a parameter of two or more dims: ``row_var`` (the mean square over the last dim, shaped like the parameter with
    that dim 1) and ``col_var`` (over the next-to-last dim); a vector (or scalar) keeps an unfactored ``variance``.
    The step is ``min(lr, 1/sqrt(t))`` relative to the parameter's RMS (at least ``eps[1]``), the update clipped to RMS
    ``d``; weight decay is decoupled. ``eps[0]`` (None: the dtype's machine epsilon) floors the second moment. One
    ``optim.adafactor_update`` per parameter.
    """

    def __init__(
        self, params: Iterable[Any], lr: float = 1e-2, beta2_decay: float = -0.8, eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0, weight_decay: float = 0.0, *, maximize: bool = False,
    ):
        super().__init__(params, dict(lr=lr, beta2_decay=beta2_decay, eps=tuple(eps), d=d, weight_decay=weight_decay, maximize=maximize))

    def check_group(self, group: dict[str, Any]) -> None:
        _non_negative("Adafactor", group, "lr", "weight_decay")
        eps1, eps2 = group["eps"]
        if group["beta2_decay"] > 0:
            raise KilnError(f"Adafactor: invalid beta2_decay {group['beta2_decay']}; it must be <= 0")
        if (eps1 is not None and eps1 < 0) or eps2 < 0:
            raise KilnError(f"Adafactor: invalid eps {group['eps']}; both must be >= 0 (the first may be None)")
        if group["d"] < 1:
            raise KilnError(f"Adafactor: invalid d {group['d']}; the clipping threshold must be >= 1")

    def state_names(self, group: dict[str, Any]) -> tuple[str, ...]:
        """Every name a parameter of this group may keep; each keeps ``param_state_names``."""
        return ("row_var", "col_var", "variance")

    def param_state_names(self, param: Parameter, group: dict[str, Any]) -> tuple[str, ...]:
        return _second_moment_names(param.data.ndim)

    def state_shape(self, param: Parameter, name: str) -> tuple[int, ...]:
        shape = list(param.data.shape)
        if name in ("row_var", "col_var"):
            shape[-1 if name == "row_var" else -2] = 1
        return tuple(shape)

    def emit_update(self, b, param, grad, state, hyper, group):
        names = _second_moment_names(param.type.rank)
        eps1, eps2 = group["eps"]
        results = b.adafactor_update(
            param, _direction(b, grad, group), *[state[name] for name in names], hyper["lr"], hyper["step"],
            beta2_decay=group["beta2_decay"], eps1=float(ml_dtypes.finfo(param.type.dtype.numpy).eps) if eps1 is None else eps1, eps2=eps2,
            d=group["d"], weight_decay=group["weight_decay"],
        )
        return results[0], dict(zip(names, results[1:]))


def _second_moment_names(rank: int) -> tuple[str, ...]:
    """Adafactor's state: factored row and column moments for two or more dims (as PyTorch: ``grad.dim() > 1``), else one."""
    return ("row_var", "col_var") if rank > 1 else ("variance",)
