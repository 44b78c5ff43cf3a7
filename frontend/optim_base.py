"""The ``Optimizer`` base class: parameter groups, per-parameter state, the step counter and ``state_dict``.

The algorithms (``optim_algorithms.py``, ``optim_lbfgs.py``, ``optim_muon.py``...) subclass it: each checks its
options (``check_group``), names its state arrays (``state_names``) and appends the ops of one parameter's update
(``emit_update``). The learning rate and the step counter are graph inputs, so changing them never recompiles; the
other options are attributes of the op (``signature``), except a momentum ``feed_as_input`` makes a graph input too.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np

from kiln.compiler.errors import CheckpointError, KilnError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import DType, TensorType, is_float_array_dtype
from kiln.compiler.ops.optim import scalar_state_dtype
from kiln.frontend.module import Parameter, clear_grads
from kiln.frontend.optim_hooks import OptimizerHookMethods, hook_methods_of, without_hooks
from kiln.frontend.optim_flags import IMPLEMENTATION_OPTIONS, check_constructor_flags, refuse_differentiable
from kiln.frontend.optim_parameter_state import ParamGroup, ParameterState, StepCounter
from kiln.frontend.optim_torch_state import LiveSteps, from_torch_layout, is_torch_layout, to_torch_layout, torch_scalar_dtype
from kiln.frontend.optim_user_state import load_own_state_dict, own_state_dict
from kiln.frontend.tensor import Tensor

Update = tuple[Value, dict[str, Value]]


class EmptyParametersError(KilnError, ValueError):
    """An optimizer given no parameters (torch's ``ValueError``)."""


class InvalidOptionError(KilnError, ValueError):
    """An optimizer option out of its range, or a parameter listed twice (torch's ``ValueError``)."""


class Optimizer(OptimizerHookMethods):
    """Base class: parameter groups, per-parameter state, the step counter, and the ops of one update."""

    graph_hyperparameters: tuple[str, ...] = ("lr",)
    """Group hyper-parameters fed as graph inputs each step (changing them never recompiles); ``feed_as_input`` adds one
    to an instance."""
    feedable_hyperparameters: frozenset[str] = frozenset()
    """Options ``feed_as_input`` may turn into graph inputs: the momentum a scheduler cycles (``momentum``, or ``beta1``,
    the first of ``betas``)."""
    torch_counts_steps: bool = True
    """Whether PyTorch's state of a parameter holds its own ``step`` (SGD's and Muon's do not): ``state_dict``."""
    torch_step_is_int: bool = False
    """Whether PyTorch keeps that ``step`` as a Python int (SparseAdam's) rather than a 0-d float tensor."""
    scalar_states: frozenset[str] = frozenset()
    """States that are one number per parameter in PyTorch (0-d there, parameter-shaped here): a saved 0-d value loads
    broadcast, so a ``torch.optim`` ``state_dict`` converted to arrays loads as is."""
    lr_on_host: bool = False
    """Whether PyTorch computes with ``lr`` on the host before a kernel reads the result (Adam's ``lr / (1 -
    beta1^t)``, AdamW's ``1 - lr * weight_decay``): the compiled update is then fed ``lr`` in float64, its Python float;
    otherwise PyTorch's kernels read ``lr`` itself, rounded to the parameter's dtype, and it is fed so
    (``runtime/step_graph.py``: ``hyper_input_dtype``)."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]):
        hook_methods_of(type(self))  # step, state_dict and load_state_dict call the hooks (frontend/optim_hooks.py)
        self.defaults = dict(defaults)
        check_constructor_flags(type(self).__name__, self.defaults)
        self.fixed_options = self._fixed_options()
        """Options a compiled update fixes (a change recompiles): every default but the graph hyper-parameters and
        PyTorch's implementation flags (``foreach``, ``fused``...: ``optim_flags.py``)."""
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[int, dict[str, np.ndarray]] = ParameterState(counter=StepCounter(self))
        """Per parameter (by id; a user's ``step`` indexes it by the parameter, ``frontend/optim_parameter_state.py``)."""
        self.skipped_steps: dict[int, int] = {}
        """Per parameter (by id), the eager steps that found it without ``.grad`` (``runtime/eager_optim.py``)."""
        groups = list(params)
        if not groups:
            raise EmptyParametersError(
                f"{type(self).__name__}: optimizer got an empty parameter list (as PyTorch refuses it). model.parameters() "
                "is a generator, used up by one pass: make a list of it to use it twice; a Keras model builds its "
                "weights first (model.build(input_shape), or give the first Dense an input_dim)")
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
            raise InvalidOptionError("some parameters appear in more than one parameter group (or twice in one); list each once")
        full = {**self.defaults, **group, "params": params}
        self.check_group(full)
        refuse_differentiable(type(self).__name__, full)
        self.param_groups.append(ParamGroup(full))
        if self.step_count:  # added after some steps: its own count starts at 1, as torch.optim's state
            self.skipped_steps.update({id(p): self.step_count for p in params})

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
        self.fixed_options = self._fixed_options()

    def _fixed_options(self) -> list[str]:
        return sorted(set(self.defaults) - set(self.graph_hyperparameters) - IMPLEMENTATION_OPTIONS)

    def group_hyperparameters(self, group: dict[str, Any]) -> tuple[str, ...]:
        """The hyper-parameters of ``group`` fed as graph inputs, in input order."""
        return self.graph_hyperparameters

    def computes_lr_on_host(self, group: dict[str, Any]) -> bool:
        """``lr_on_host`` for ``group`` (a ``Combined`` asks the group's optimizer)."""
        return self.lr_on_host

    def hyperparameter(self, group: dict[str, Any], name: str) -> float:
        """The current value of graph hyper-parameter ``name`` in ``group`` (``beta1``: ``betas[0]``)."""
        return group["betas"][0] if name == "beta1" else group[name]

    def fixed_value(self, group: dict[str, Any], key: str) -> Any:
        """What a compiled update fixes of option ``key``: all of it, but ``betas[1:]`` once ``beta1`` is fed."""
        if key == "betas" and "beta1" in self.graph_hyperparameters:
            return tuple(group["betas"][1:])
        return _hashable(group[key])

    def check_group(self, group: dict[str, Any]) -> None:
        """Raise ``KilnError`` for invalid options (a negative lr, nesterov without momentum...). An option left None
        is not checked: a user's optimizer may compute it (transformers' ``Adafactor(lr=None, relative_step=True)``),
        and PyTorch's base checks none."""
        given = {key: value for key, value in group.items() if value is not None}
        _non_negative(type(self).__name__, given, "lr", "weight_decay")

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
        ``scalar_states`` entry, which keeps the dtype it has: PyTorch's 0-d tensor made in ``torch_scalar_dtype`` (the
        default dtype's float32 or float64, whatever the parameter's), or loaded in the parameter's (``_loaded_array``)."""
        if name not in self.scalar_states:
            return param._data.dtype
        held = self.state.get(id(param), {}).get(name)
        return held.dtype if held is not None else torch_scalar_dtype()

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
        state in the parameter's dtype, as PyTorch's ``load_state_dict`` casts it). The arrays come in a plain dict
        of its own (the same arrays): ``state[p]`` adds torch's ``step`` for the user's code, which kiln's readers
        of the arrays, by name or all of them, do not want."""
        if not dict.get(self.state, id(param)):  # none yet, or the empty one a user's read of state[p] made (torch's)
            self.state[id(param)] = self.initial_state(param, self.group_of(param))
        state = self.state[id(param)]  # below: param._data, not .data, which would bring a device-resident parameter back
        if any(array.dtype != self.state_dtype(param, name) and is_float_array_dtype(array.dtype) for name, array in state.items()):
            state = self.state[id(param)] = {name: _cast_float(array, self.state_dtype(param, name)) for name, array in state.items()}
        return dict.copy(state)

    @property
    def step_count(self) -> int:
        """Updates done so far; the compiled step reads ``step_count + 1`` as its ``step`` input."""
        return self.__dict__.get("_steps_counted", 0)

    @step_count.setter
    def step_count(self, count: int) -> None:
        self.__dict__["_steps_counted"] = count
        self.refresh_live_steps()

    def live_step(self, key: int) -> np.ndarray:
        """torch's ``state[p]["step"]`` of the parameter ``id`` ``key`` as a live 0-d array: each later step (or load)
        rewrites it, as torch's optimizers update their step tensors in place (``LiveSteps``)."""
        live = self.__dict__.setdefault("live_steps", LiveSteps())
        return live.of(key, self.torch_step(key))

    def refresh_live_steps(self) -> None:
        """The live step arrays handed out so far given the counts now (after a step, a load, a set count)."""
        live = self.__dict__.get("live_steps")
        if live:
            live.refresh(self.torch_step)

    def torch_step(self, key: int) -> int | None:
        """torch's ``state[p]["step"]`` of the parameter ``id`` ``key``: the updates made of it (``step_count`` less the
        steps that found it without ``.grad``), which its next update's bias correction follows. None where torch's
        state keeps no ``step`` (``torch_counts_steps``), and for a user's optimizer updating in its own ``step``
        (not kiln's ``emit_update``): it does not count through ``step_count``, and keeps its own ``step`` if any."""
        if not self.counts_torch_steps():
            return None
        return self.step_count - self.__dict__.get("skipped_steps", {}).get(key, 0)

    def updates_in_own_step(self) -> bool:
        """Whether this is a user's ``torch.optim.Optimizer`` subclass updating in its own ``step`` (not kiln's
        ``emit_update``): its state holds what its code puts there, and checkpoints as PyTorch's base class does
        (``optim_user_state.py``)."""
        return type(self).emit_update is Optimizer.emit_update

    def counts_torch_steps(self) -> bool:
        """Whether kiln keeps torch's ``state[p]["step"]`` for this optimizer: ``torch_counts_steps``, and not a user's
        optimizer (its own ``step`` holds a ``step`` of its own or none, as Lion's)."""
        return self.torch_counts_steps and not self.updates_in_own_step()

    def set_torch_step(self, key: int, count: int) -> None:
        """``state[p]["step"] = count`` (torch code restarting Adam's bias correction): the parameter's own count
        becomes ``count``. A count beyond ``step_count`` moves the optimizer's count up to it, each other parameter
        skipping as many more steps, so theirs stay and every ``skipped_steps`` stays within ``[0, step_count]``."""
        skipped = self.__dict__.setdefault("skipped_steps", {})
        if count > self.step_count:
            for param in self.parameters():
                skipped[id(param)] = skipped.get(id(param), 0) + count - self.step_count
            self.step_count = count
        skipped[key] = self.step_count - count
        if not skipped[key]:
            del skipped[key]
        self.refresh_live_steps()

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

    def state_dict(self) -> dict[str, Any]:
        """``torch.optim``'s ``state_dict``: ``{"state": {0: {"step": 0-d array, "exp_avg": ...}, ...}, "param_groups":
        [{every option, "params": [0, 1, ...]}]}``, parameters keyed by position (``optim_torch_state.to_torch_layout``;
        each parameter's own ``step`` where PyTorch keeps one). The arrays are the live ones, as PyTorch's tensors,
        its ``step`` arrays too (``live_step``). ``load_state_dict`` takes it back, and ``torch_optimizer.load_state_dict`` once each array is a tensor
        (``torch.tensor``, a copy), so a kiln run resumes in PyTorch and the reverse."""
        if self.updates_in_own_step():
            return own_state_dict(self)
        layout = to_torch_layout(self.kiln_state_dict(), self.scalar_states, self.counts_torch_steps())
        for position, param in enumerate(self.parameters()):
            entry = layout["state"].get(position, {})
            if "step" in entry:
                entry["step"] = self.live_step(id(param))
        return layout

    def torch_state_dict(self) -> dict[str, Any]:
        """``state_dict()``, PyTorch's layout (the name it had while ``state_dict`` gave kiln's)."""
        return self.state_dict()

    def kiln_state_dict(self, names: Mapping[int, str] | None = None) -> dict[str, Any]:
        """kiln's layout, what a ``TrainStep`` checkpoint saves: ``{"state": {param key: {name: array}}, "param_groups":
        [...], "step": int, "skipped_steps": {param key: int}}``.

        Parameters are keyed by ``names[id(param)]`` (the model's parameter names, so a checkpoint survives a reordered
        optimizer) where given, else by their position as a string. Arrays are the live ones. ``step`` counts the
        optimizer's steps; ``skipped_steps`` the steps that found a parameter without ``.grad`` (only parameters that
        missed some), so its own count, PyTorch's ``state[p]["step"]``, is ``step - skipped_steps.get(key, 0)``.
        """
        key = _keyer(self.parameters(), names)
        skipped = getattr(self, "skipped_steps", {})
        return {
            "state": {key(p): dict(self.state[id(p)]) for p in self.parameters() if id(p) in self.state},
            "param_groups": [{**_options(group), "params": [key(p) for p in group["params"]]} for group in self.param_groups],
            "step": self.step_count,
            "skipped_steps": {key(p): skipped[id(p)] for p in self.parameters() if skipped.get(id(p))},
        }

    def load_state_dict(self, state: Mapping[str, Any], names: Mapping[int, str] | None = None) -> None:
        """Restore groups' options, state arrays and the step counter; everything is checked before anything is written.
        A user's optimizer loads its ``state_dict()`` as PyTorch's base class does (``optim_user_state.py``)."""
        if self.updates_in_own_step() and names is None and is_torch_layout(state):
            load_own_state_dict(self, state)
            return
        self.prepare_load(state, names)()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (``kiln.save(optimizer)``, ``copy.deepcopy``) without its hooks, as torch's leaves them out."""
        return without_hooks(self.__dict__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """PyTorch's: the attributes ``state`` holds (``load_state_dict`` gives ``state`` and ``param_groups``), which a
        user's subclass may extend (``SophiaG`` fills in options an older checkpoint lacks)."""
        if "step_count" in state:  # pickled before step_count became a property
            state = {**state, "_steps_counted": state["step_count"]}
            del state["step_count"]
        self.__dict__.update(state)

    def prepare_load(self, state: Mapping[str, Any], names: Mapping[int, str] | None = None) -> Callable[[], None]:
        """Check ``state`` (kiln's layout or ``torch.optim``'s) against this optimizer; returns the function that writes it.
        A kiln state saved before ``skipped_steps`` was kept loads as one where no parameter missed a step."""
        own_steps: dict[str, int] | None = None
        if is_torch_layout(state):
            state, own_steps = from_torch_layout(state)
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
            refuse_differentiable(type(self).__name__, loaded)  # a torch state_dict of a differentiable=True optimizer
            for param in group["params"]:
                arrays[id(param)] = self._loaded_state(param, {**group, **loaded}, state["state"], key)
        step = int(state["step"])
        if own_steps is not None:
            skipped = {id(p): step - own_steps.get(key(p), 0) for p in self.parameters()}
        else:
            skipped = _loaded_skipped_steps(state.get("skipped_steps", {}), self.parameters(), key, step)

        def write() -> None:
            for group, loaded in zip(self.param_groups, options):
                group.update(loaded)
            self.state = ParameterState({pid: _into(self.state.get(pid), value) for pid, value in arrays.items() if value is not None},
                                        StepCounter(self))
            self.skipped_steps = skipped
            self.step_count = step  # (after skipped_steps: it refreshes the live step arrays from both)

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
        return np.array(array, dtype=self._loaded_dtype(param, name))

    def _loaded_dtype(self, param: Parameter, name: str) -> np.dtype:
        """A loaded state's dtype: the parameter's, as ``torch.optim.Optimizer.load_state_dict`` casts every state but
        ``step`` (a half parameter's scalar state: float32, ``scalar_state_dtype``, where PyTorch's would be half)."""
        if name in self.scalar_states:
            return scalar_state_dtype(DType.of(param._data.dtype)).numpy
        return self.state_dtype(param, name)

    def __repr__(self) -> str:
        """PyTorch's text: each param group's options, sorted by name (``print(optimizer)`` in training logs)."""
        groups = ["\n".join([f"Parameter Group {index}"] + [f"    {key}: {group[key]}" for key in sorted(group) if key != "params"])
                  for index, group in enumerate(self.param_groups)]
        return f"{type(self).__name__} (\n" + "\n\n".join(groups) + "\n)"


def _non_negative(owner: str, group: dict[str, Any], *names: str) -> None:
    """Raise for a negative option; one a group lacks (a user's ``torch.optim.Optimizer`` subclass without
    ``weight_decay``, as PyTorch's base accepts) is not checked."""
    for name in names:
        if name in group and group[name] < 0:
            raise InvalidOptionError(f"{owner}: invalid {name} {group[name]}; it must be >= 0")



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


def _loaded_skipped_steps(
    saved: Mapping[str, Any], parameters: list[Parameter], key: Callable[[Parameter], str], step: int
) -> dict[int, int]:
    """Saved ``skipped_steps`` (by parameter key) as ``Optimizer.skipped_steps`` (by parameter id), checked."""
    ids = {key(p): id(p) for p in parameters}
    unknown = sorted(set(saved) - set(ids))
    if unknown:
        raise CheckpointError(f"optimizer state counts skipped steps of {unknown}, which this optimizer does not hold (it holds {sorted(ids)})")
    skipped = {ids[name]: int(count) for name, count in saved.items()}
    bad = sorted(name for name, count in saved.items() if not 0 <= int(count) <= step)
    if bad:
        raise CheckpointError(f"optimizer state says {bad} skipped more steps than the {step} it counts, or fewer than 0; the file is damaged")
    return skipped


def _into(current: dict[str, np.ndarray] | None, loaded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The loaded state, copied into the current arrays where they have the same names and shapes (in place, as
    parameters load); L-BFGS's history arrays change shape as the history fills, so such a state is replaced."""
    if current is None or set(current) != set(loaded) or any(current[name].shape != array.shape for name, array in loaded.items()):
        return loaded
    for name, array in loaded.items():
        np.copyto(current[name], array)
    return current
