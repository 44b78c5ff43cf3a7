"""A ``kiln.compile``d training step: ``loss.backward()`` and ``optimizer.step()`` traced into its one graph.

```python
@kiln.compile
def train_step(x, y):
    opt.zero_grad()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    kiln.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss
```

While such a function is traced, what it does to state is traced too (what ``torch.compile`` spreads over
TorchDynamo's side effects, compiled autograd and a compiled optimizer, as one graph here):

- ``backward()`` of a traced loss differentiates the graph built so far (``differentiate``) with respect to the
  trained parameters it reached; each ``.grad`` becomes a traced tensor, added to what it held (a ``.grad`` the
  step did not clear first is a graph input, fed from the parameter at each call); so does the ``.grad`` of each
  tensor the step marked by ``requires_grad_()`` that the loss reaches (an attack's ``delta``);
- ``optimizer.step()`` appends the optimizer's update ops (``emit_update``, the compiled step's and the eager
  update's) with its state, learning rates and each parameter's step count as inputs; later reads of a parameter
  in the step see its new value;
- ``zero_grad()``, ``clip_grad_norm_`` and ``clip_grad_value_`` act on the traced ``.grad``.

Each extra input comes with the function that feeds it at a call and each extra output with the one that writes it
back (new parameters, ``.grad``, optimizer state, step counts), so a call does exactly what the eager step does.
What the trace read of the state it does not feed (whether a ``.grad`` existed, the optimizer's options, each
called module's ``training`` flag) is guarded: a call that finds it changed reuses the variant traced for that state
or traces again. A ``scheduler.step()`` inside the step is refused (the trace
runs Python once), so the step runs eagerly, as any step that cannot be traced.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from kiln.compiler.autodiff.differentiate import differentiate_outputs, ops_between
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import DType, TensorType
from kiln.frontend.eager_values import count_update, eager_array
from kiln.frontend.module import ArrayLeaf, Parameter
from kiln.frontend.optim import Optimizer
from kiln.frontend.parameter_versions import record_replaced, values_held
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.nn_utils import traced_total_norm, zero_norm
from kiln.frontend.torch_array import torch_array
from kiln.frontend.torch_functions import zeros_like
from kiln.frontend.traced_data_writes import backward_reads_written
from kiln.frontend.traced_hooks import cotangent_hooks, parameter_hooked
from kiln.frontend.traced_requires_grad import mark_traced_for_grad
from kiln.frontend.whole_step_inputs import GradArguments, check_grad_arguments_unreached
from kiln.frontend.trace import TraceContext, located_error
from kiln.runtime.argument_writes import marked_arguments, values_before, written_arguments
from kiln.runtime.eager_backward import after_accumulation
from kiln.runtime.eager_optim import count_step, grad_array_of, own_step
from kiln.runtime.pytree import Structure, flatten_keeping
from kiln.runtime.step_graph import _hyper_inputs, computed_hyper, hyper_feeds, parameter_hyper

Feed = Callable[[], np.ndarray]
WriteBack = Callable[[np.ndarray], None]


@dataclass
class CapturedStep:
    """The state a traced step reads and writes: its extra inputs (after the parameters) and outputs (last)."""

    feeds: list[Feed]
    write_backs: list[WriteBack]
    after_call: list[Callable[[], None]]
    """Count updates: each stepped optimizer's ``step_count`` and its parameters' skipped steps."""
    guards: list[Callable[[], bool]]

    def holds(self) -> bool:
        """Whether the state the trace assumed (which ``.grad`` existed, the optimizers' options) still holds."""
        return all(guard() for guard in self.guards)

    def changes(self) -> list[str]:
        """What failing guards that can say so name as changed (a user's optimizer state entry: ``_EntryGuard``)."""
        return list(dict.fromkeys(guard.__self__.describe() for guard in self.guards
                                  if hasattr(getattr(guard, "__self__", None), "describe") and not guard()))

    def inputs(self) -> list[np.ndarray]:
        return [feed() for feed in self.feeds]

    def write_back(self, outputs: Sequence[Any], in_place: Sequence[bool]) -> None:
        """Write each output back, but those the backend wrote into their fed array already (``in_place``)."""
        for write, output, done in zip(self.write_backs, outputs, in_place, strict=True):
            if not done:
                write(np.asarray(output))
        for count in self.after_call:
            count()


@dataclass
class StepCapture:
    """What the trace of a step did to parameters' ``.grad`` and to optimizers, as it goes."""

    context: TraceContext
    grads: dict[int, Value | None] = field(default_factory=dict)
    """Each touched parameter's traced ``.grad`` (None: none)."""
    touched: dict[int, tuple[Parameter, Any]] = field(default_factory=dict)
    """Each touched parameter and the ``.grad`` it held when the trace started (restored after the trace)."""
    inputs: list[tuple[Value, Feed]] = field(default_factory=list)
    outputs: list[tuple[Value, WriteBack]] = field(default_factory=list)
    after_call: list[Callable[[], None]] = field(default_factory=list)
    guards: list[Callable[[], bool]] = field(default_factory=list)
    stepped: list[Optimizer] = field(default_factory=list)
    donated: list[tuple[Value, Value]] = field(default_factory=list)
    """Each optimizer state's input and new value: the backend may update the state's array in place."""
    returned_none: bool = False
    """Whether the function returned None (a step that returns nothing): the call returns None too."""
    structure: Structure = None
    """The result's nesting (a dict of metrics, a list): the call gives its outputs back in it."""
    argument_writes: tuple[int, ...] = ()
    """The positions of the arguments written in place (SwAV's queue): their new values are the last outputs."""
    group_reads: set[tuple[int, Any]] = field(default_factory=set)
    """``(id(param_group), key)`` of each optimizer option a user's ``step`` read, guarded once
    (``frontend/optim_parameter_state.py``)."""
    state_entries: dict[int, Any] = field(default_factory=dict)
    """Per optimizer state entry a user's ``step`` touched (by ``id``), its guard (``_EntryGuard``,
    ``frontend/optim_parameter_state.py``)."""
    modules_read: dict[int, tuple[Any, bool]] = field(default_factory=dict)
    """Each module called in the trace before any ``train()``/``eval()`` of it, with the mode it ran in (guarded)."""
    modules_set: dict[int, Any] = field(default_factory=dict)
    """Each module the trace's ``train()``/``eval()`` set (each call sets it again)."""
    grad_arguments: list[Value] = field(default_factory=list)
    """The arguments given tensors that require grad: a ``backward()`` whose loss reaches one is refused
    (``frontend/whole_step_inputs.py``)."""
    marked: list[Tensor] = field(default_factory=list)
    """Tensors the step marked by ``requires_grad_()`` (an attack's ``delta.requires_grad = True``), whose traced
    ``.grad`` a ``backward()`` reaching them fills, as it does eagerly."""
    marked_values: dict[int, Value] = field(default_factory=dict)
    """Each of ``marked``'s value when marked (by ``id``): the leaf a ``backward()`` differentiates by. A write through
    its ``.data`` since (FLAG's ``perturb.data = perturb_data.data`` between two backwards) rebinds the tensor to a value
    whose gradient flows to that leaf (``frontend/view_writes.py``), as PyTorch's tensor stays the one leaf."""
    marked_arguments: tuple[int, ...] = ()
    """The positions of the arguments among ``marked`` (rosinality's R1 step's ``real_img.requires_grad = True``): the
    caller's tensors require grad after the call (``runtime/argument_writes.py``)."""
    argument_grads: tuple[int, ...] = ()
    """Those of them a ``backward()`` reached: their traced ``.grad``s are the very last outputs, added to the caller's
    ``.grad`` after the call, as torch's eager step leaves them."""

    def called(self, module: Any) -> None:
        """``Module.__call__`` in the trace: the mode it runs in is read, unless the step set it."""
        if id(module) not in self.modules_set:
            self.modules_read.setdefault(id(module), (module, module.training))

    def setting_modes(self, modules: Sequence[Any]) -> None:
        """``Module.train()``/``eval()`` in the trace, before it sets ``modules``' flags."""
        self.modules_set.update({id(module): module for module in modules})

    def modes(self) -> "Modes":
        return Modes(list(self.modules_read.values()), [(m, m.training) for m in self.modules_set.values()])

    # --- .grad -------------------------------------------------------------------------------------

    def grad_of(self, parameter: Parameter) -> Value | None:
        """The parameter's traced ``.grad``; on first touch, the one it holds at the call (an input) or none (guarded)."""
        if id(parameter) not in self.grads:
            held = parameter.__dict__.get("grad")
            self.touched[id(parameter)] = (parameter, held)
            self.guards.append(lambda p=parameter, had=held is not None: (p.__dict__.get("grad") is not None) == had)
            self.grads[id(parameter)] = None if held is None else self._grad_input(parameter)
        self._written_in_place(parameter)
        return self.grads[id(parameter)]

    def traced_grad(self, parameter: Parameter) -> Any:
        """``p.grad`` read in the step: its traced ``.grad`` (on first read, the one it holds at the call, an input),
        so that an in-place write to it before ``backward()`` (DeepDream's ``image.grad.data.zero_()``) is traced."""
        grad = self.grad_of(parameter)
        if grad is not None and parameter.__dict__.get("grad") is self.touched[id(parameter)][1]:
            parameter.__dict__["grad"] = Tensor(grad)
        return parameter.__dict__.get("grad")

    def _written_in_place(self, parameter: Parameter) -> None:
        """Take the traced ``.grad``'s new value where the step wrote it in place (``p.grad.zero_()``, ``p.grad.mul_(s)``
        rebind the tensor ``p.grad`` holds)."""
        held = parameter.__dict__.get("grad")
        if self.grads[id(parameter)] is not None and isinstance(held, Tensor) and eager_array(held) is None:
            self.grads[id(parameter)] = held.value

    def argument_grad_input(self, traced: Tensor, argument: Callable[[], Any]) -> Value:
        """The ``.grad`` a leaf argument holds at each call (``argument()`` is that call's), a graph input shaped as the
        argument's traced value."""
        value = self.context.graph.add_input(traced.value.type, "argument.grad")
        self.inputs.append((value, lambda: np.asarray(argument().grad)))
        return value

    def _grad_input(self, parameter: Parameter) -> Value:
        name = self.context.parameter_names.get(id(parameter), "param")
        value = self.context.graph.add_input(TensorType.of_array(parameter._data), f"{name}.grad")
        self.inputs.append((value, functools.partial(grad_array_of, parameter)))
        return value

    def set_grad(self, parameter: Parameter, value: Value | None) -> None:
        """Make ``value`` the parameter's ``.grad`` from here on (a traced tensor the step's code can read)."""
        self.grad_of(parameter)
        self.grads[id(parameter)] = value
        parameter.__dict__["grad"] = None if value is None else Tensor(value)

    def assign_grad(self, parameter: Parameter, grad: Any) -> None:
        """``parameter.grad = grad`` in the step: None (what was there does not matter: no guard), or a traced tensor."""
        if grad is not None and not (isinstance(grad, Tensor) and eager_array(grad) is None):
            raise located_error("p.grad = <array> in a compiled training step: assign None or a tensor the step computes")
        if grad is None and id(parameter) not in self.grads:
            self.touched[id(parameter)] = (parameter, parameter.__dict__.get("grad"))
            self.grads[id(parameter)] = None
        self.set_grad(parameter, None if grad is None else grad.value)

    def clear(self, parameters: Sequence[Parameter], set_to_none: bool) -> None:
        """``zero_grad``: none, or zeros where there was one."""
        for parameter in parameters:
            if set_to_none:
                self.assign_grad(parameter, None)
            else:
                grad = self.grad_of(parameter)
                self.set_grad(parameter, None if grad is None else zeros_like(Tensor(grad)).value)

    def clip_grad_norm(self, parameters: Any, max_norm: float, norm_type: float, error_if_nonfinite: bool) -> Tensor:
        """``clip_grad_norm_`` of the traced ``.grad``s, as torch's: each times ``min(1, max_norm / (norm + 1e-6))``
        of their joint ``norm_type``-norm, which it returns."""
        if error_if_nonfinite:
            raise located_error("clip_grad_norm_(error_if_nonfinite=True) in a compiled training step: the check raises on "
                                "a value the trace does not have; check the returned norm after the call instead")
        parameters = _listed(parameters)
        grads = [Tensor(grad) for grad in map(self.grad_of, parameters) if grad is not None]
        if not grads:
            return apply("tensor.constant", value=zero_norm())
        total = traced_total_norm(grads, norm_type)
        self.clip_grads_with_norm(parameters, max_norm, total)
        return total

    def clip_grads_with_norm(self, parameters: Any, max_norm: float, total_norm: Any) -> None:
        """``clip_grads_with_norm_`` of the traced ``.grad``s: each times ``min(1, max_norm / (total_norm + 1e-6))``."""
        coefficient = (float(max_norm) / (total_norm + 1e-6)).clamp(max=1.0)
        for parameter in _listed(parameters):
            grad = self.grad_of(parameter)
            if grad is not None:
                self.set_grad(parameter, (Tensor(grad) * coefficient).value)

    def clip_grad_value(self, parameters: Any, clip_value: float) -> None:
        """``clip_grad_value_`` of the traced ``.grad``s: each clamped to ``[-clip_value, clip_value]``."""
        for parameter in _listed(parameters):
            grad = self.grad_of(parameter)
            if grad is not None:
                self.set_grad(parameter, Tensor(grad).clamp(-clip_value, clip_value).value)

    # --- backward ----------------------------------------------------------------------------------

    def backward(self, loss: Tensor, gradient: Any, inputs: Any, create_graph: bool = False) -> None:
        """Accumulate d(loss)/d(parameter) into the traced ``.grad`` of each trained parameter the loss reaches; with
        ``create_graph`` a later backward differentiates through them (a gradient penalty), else they are constants
        to it, as torch's."""
        check_grad_arguments_unreached(lambda arguments: ops_between(self.context.graph, arguments, loss.value),
                                       self.grad_arguments)
        self._check_outside_leaves_unreached(loss)
        candidates = self._candidates(inputs)
        leaves = self._marked_leaves() if inputs is None else []
        held = [values_held(self.context, p) for p in candidates]  # a value replaced by a no_grad write is read too
        reached = {id(v) for op in ops_between(self.context.graph, [v for vs in held for v in vs] + [v for _, v in leaves],
                                               loss.value) for v in op.operands}
        held = [[v for v in vs if id(v) in reached] for vs in held]
        candidates, held = [p for p, vs in zip(candidates, held) if vs], [vs for vs in held if vs]
        leaves = [(t, v) for t, v in leaves if id(v) in reached]
        if not candidates and not leaves:
            raise located_error("backward(): the loss depends on no trained parameter of this step")
        seed = None if gradient is None else _seed(gradient, loss)
        first = len(self.context.graph.ops)
        grads = differentiate_outputs(self.context.graph, [loss.value], [v for vs in held for v in vs] + [v for _, v in leaves],
                                      [seed], on_cotangent=cotangent_hooks(self.context, retain=True, keep_graph=create_graph))
        grads = self._summed_by_parameter(grads, [len(vs) for vs in held])
        grads = [parameter_hooked(p, g) for p, g in zip(candidates, grads)] + grads[len(candidates):]
        backward_reads_written(self.context.graph, first)  # x.data written since the forward read it: the new values
        grads = [grad if create_graph else self.context.without_gradient(grad) for grad in grads]
        for parameter, grad in zip(candidates, grads):
            held = self.grad_of(parameter)
            self.set_grad(parameter, grad if held is None else self.context.emit("tensor.add", held, grad))
        for (leaf, _), grad in zip(leaves, grads[len(candidates):]):
            leaf.grad = Tensor(grad) if leaf.grad is None else leaf.grad + Tensor(grad)
        after_accumulation(candidates, capture=self)

    def _summed_by_parameter(self, grads: list[Value], counts: list[int]) -> list[Value]:
        """``grads`` (each parameter's ``counts[k]`` values' in turn, then the leaves') with each parameter's summed."""
        summed, start = [], 0
        for count in counts:
            total = grads[start]
            for grad in grads[start + 1:start + count]:
                total = self.context.emit("tensor.add", total, grad)
            summed.append(total)
            start += count
        return summed + grads[start:]

    def _check_outside_leaves_unreached(self, loss: Tensor) -> None:
        """Refuse a ``backward()`` whose loss reaches a tensor read from outside the step that requires grad and is
        no parameter (DeepDream's ``image = x.clone().detach().requires_grad_(True)``, stepped by hand through
        ``image.data``): PyTorch fills its ``.grad``, which this step would leave None."""
        lifting = self.context.lifting
        if lifting is None or not lifting.requiring_grad:
            return
        leaves = [value for tensor, value in lifting.lifted.values() if id(tensor) in lifting.requiring_grad]
        if ops_between(self.context.graph, leaves, loss.value):
            raise located_error("backward() in a compiled step: the loss depends on a tensor read from outside the "
                                "function that requires grad and is no parameter (image = x.clone().detach()"
                                ".requires_grad_()), whose .grad PyTorch's backward() fills and a compiled step "
                                "cannot; make it a leaf of its own (x.clone().requires_grad_(), or requires_grad=True "
                                "where it is made), mark it inside the function, or run the step eagerly")

    def _marked_leaves(self) -> list[tuple[Tensor, Value]]:
        """The tensors this step marked by ``requires_grad_()`` that are still leaves requiring grad, once each, with
        their leaf values (``marked_values``)."""
        values = {id(t): self.marked_values.get(id(t), t.value) for t in self.marked}
        unique = {id(t): (t, values[id(t)]) for t in self.marked if values[id(t)] in self.context.grad_leaves}
        return list(unique.values())

    def _candidates(self, inputs: Any) -> list[Parameter]:
        if inputs is None:
            return [p for p in self.context.parameters if p.requires_grad]
        inputs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
        if not all(isinstance(i, ArrayLeaf) for i in inputs):
            raise located_error("backward(inputs=...) in a compiled step takes parameters only; differentiate other "
                                "tensors with kiln.autograd.grad")
        return inputs

    # --- optimizer.step() --------------------------------------------------------------------------

    def optimizer_step(self, optimizer: Optimizer) -> None:
        """Append ``optimizer``'s update of each trained parameter that has a ``.grad``; its new value is read from here on."""
        if optimizer in self.stepped:
            raise located_error("optimizer.step() twice in one compiled step: compile one update per call")
        self.stepped.append(optimizer)
        trained = optimizer.trained_parameters()
        updated = [p for p in trained if self.grad_of(p) is not None]
        if not updated:  # as the eager update: nothing to do, no step counted
            return
        graph = self.context.graph
        hyper, order = _hyper_inputs(graph, optimizer, updated)
        computed = computed_hyper(graph, optimizer, hyper, order)
        self.inputs += [(hyper[key], functools.partial(_hyper_feed, optimizer, key)) for key in order]
        self.outputs += [(value, functools.partial(_write_hyper, optimizer, key)) for key, value in computed.items()]
        builder = Builder(graph, location="optimizer")
        for parameter in updated:
            self._update(builder, optimizer, parameter, hyper)
        self.guards.append(lambda signature=optimizer.signature(): optimizer.signature() == signature)
        self.after_call.append(functools.partial(count_step, optimizer, updated))

    def _update(self, builder: Builder, optimizer: Optimizer, parameter: Parameter, hyper: dict[tuple[int, str], Value]) -> None:
        graph, group = self.context.graph, optimizer.group_of(parameter)
        name = self.context.parameter_names.get(id(parameter), "param")
        state = optimizer.state_of(parameter)
        states = {key: graph.add_input(optimizer.state_type(parameter, key), f"{name}.{key}") for key in state}
        step = graph.add_input(TensorType((), DType.i64), f"{name}.step")
        index = next(i for i, g in enumerate(optimizer.param_groups) if g is group)
        group_hyper = {key: hyper[(index, key)] for key in optimizer.group_hyperparameters(group)} | {"step": step}
        value = self.context.current_value_of(parameter)
        group_hyper = parameter_hyper(builder, optimizer, group, group_hyper, value.type.dtype)
        new_value, new_state = optimizer.emit_update(builder, value, self.grads[id(parameter)], states, group_hyper, group)
        for key in [key for key in states if key not in new_state and not states[key].uses]:
            graph.inputs.remove(states.pop(key))  # a state the update leaves alone (momentum set to 0 after some steps)
        self.inputs += [(states[key], functools.partial(_state_array, optimizer, parameter, key)) for key in states]
        self.outputs += [(new_state[key], functools.partial(_write_state, optimizer, parameter, key)) for key in new_state]
        self.donated += [(states[key], new_state[key]) for key in new_state if key in states]
        if step.uses:
            self.inputs.append((step, functools.partial(_own_step, optimizer, parameter)))
        else:
            graph.inputs.remove(step)
        record_replaced(self.context, parameter)  # a loss read before the update still reaches the old value
        self.context.update_buffer(parameter, new_value)  # written back as the buffers are; later reads see it
        self.after_call.append(functools.partial(count_update, parameter))

    # --- the trace's end ---------------------------------------------------------------------------

    def captured(self) -> bool:
        """Whether the trace touched a ``.grad`` or stepped an optimizer: a training step, not a plain function."""
        return bool(self.touched or self.stepped)

    def finish(self) -> CapturedStep:
        """Lay the step's inputs after the parameters (before the seed) and its outputs last."""
        graph = self.context.graph
        self._grad_outputs()
        extra = [value for value, _ in self.inputs]
        fed = set(extra)
        kept = [value for value in graph.inputs if value not in fed]
        seed = [self.context.seed_input] if self.context.seed_input in kept else []
        graph.inputs = [v for v in kept if v not in seed] + extra + seed
        graph.outputs += [value for value, _ in self.outputs]
        return CapturedStep([feed for _, feed in self.inputs], [write for _, write in self.outputs], self.after_call,
                            self.guards + [self._requires_grad_guard()])

    def _grad_outputs(self) -> None:
        """Each touched parameter's ``.grad`` as the call leaves it: written back (None: cleared); unchanged: left."""
        entry = {id(value) for value, _ in self.inputs}
        for key, (parameter, _) in self.touched.items():
            grad = self.grads[key]
            if grad is None:
                self.after_call.append(functools.partial(_clear_grad, parameter))
            elif id(grad) not in entry:
                self.outputs.append((grad, functools.partial(_write_grad, parameter)))

    def _requires_grad_guard(self) -> Callable[[], bool]:
        parameters = list(self.context.parameters)
        flags = [p.requires_grad for p in parameters]
        return lambda: [p.requires_grad for p in parameters] == flags

    def restore(self) -> None:
        """Give each touched parameter back the ``.grad`` it held before the trace, and each optimizer state entry its
        contents (the call writes the real ones)."""
        for parameter, held in self.touched.values():
            self._written_in_place(parameter)
            parameter.__dict__["grad"] = held
        for entry in self.state_entries.values():  # the optimizer state entries a user's step stored into
            entry.restore()


@dataclass
class Modes:
    """What a traced function did with modules' ``training`` flags, as ``torch.compile`` guards and replays them."""

    read: list[tuple[Any, bool]] = field(default_factory=list)
    """Modules whose mode the trace read (dropout, BatchNorm's batch statistics), with that mode: a call in another
    mode traces again."""
    left: list[tuple[Any, bool]] = field(default_factory=list)
    """Modules whose mode the trace set (``model.train()`` at the step's top), with the mode it left: set by each call."""

    def hold(self) -> bool:
        return all(module.training == mode for module, mode in self.read)

    def replay(self) -> None:
        for module, mode in self.left:
            object.__setattr__(module, "training", mode)


def capturing(fn: Callable[..., Any], captures: list[StepCapture], grad_arguments: GradArguments = GradArguments(),
              arguments_now: Callable[[], Sequence[Any]] = tuple) -> Callable[..., Any]:
    """``fn`` traced with a ``StepCapture`` on its context (appended to ``captures``), ``.grad``s restored after; a
    None result traces as no outputs, and Python values beside the tensors (``return loss, use_the_queue``) stay in
    ``capture.structure``, returned as traced, as ``torch.compile`` returns them. The new values of the arguments it
    wrote in place follow its own outputs (``runtime/argument_writes.py``). ``grad_arguments``: the arguments given
    tensors that require grad; leaves among them are the step's own leaves, their ``.grad`` read at each call from
    ``arguments_now()`` where they hold one (``frontend/whole_step_inputs.py``)."""

    @functools.wraps(fn)
    def traced(*inputs: Any) -> Any:
        chained = [inputs[k].value for k in grad_arguments.positions if k not in grad_arguments.leaves]
        capture = StepCapture(TraceContext.current(), grad_arguments=chained)
        captures.append(capture)
        TraceContext.current().step_capture = capture
        for k in grad_arguments.positions:  # requires grad as the caller's: autograd.grad(u, x) may differentiate by it
            mark_traced_for_grad(inputs[k], True)  # a leaf among them is marked on the capture too (a backward fills it)
        for k in grad_arguments.held:
            inputs[k].grad = Tensor(capture.argument_grad_input(inputs[k], lambda k=k: arguments_now()[k]))
        try:
            before = values_before(inputs)
            result = fn(*inputs)
            capture.argument_writes = written_arguments(inputs, before)
            written = tuple(inputs[k] for k in capture.argument_writes)  # their new values: outputs after fn's own
            capture.marked_arguments = marked_arguments(inputs, capture.marked)
            capture.argument_grads = tuple(k for k in capture.marked_arguments if inputs[k].grad is not None)
            written += tuple(inputs[k].grad for k in capture.argument_grads)  # the .grad backward() gave them: last
            if result is None:
                capture.returned_none = True
                return written
            tensors, capture.structure = flatten_keeping(result, lambda leaf: isinstance(leaf, Tensor))
            return (*tensors, *written)
        finally:
            capture.restore()

    return traced


def _listed(parameters: Any) -> list[Parameter]:
    return [parameters] if isinstance(parameters, ArrayLeaf) else list(parameters)


def _seed(gradient: Any, loss: Tensor) -> Value:
    if isinstance(gradient, Tensor):
        return gradient.value
    return apply("tensor.constant", value=np.asarray(gradient, dtype=loss.value.type.dtype.numpy)).value


def _hyper_feed(optimizer: Optimizer, key: tuple[int, str]) -> np.ndarray:
    return hyper_feeds(optimizer, [key])[0]


def _write_hyper(optimizer: Optimizer, key: tuple[int, str], value: np.ndarray) -> None:
    """A hyper-parameter the step computed (``computed_hyper``) written into its group as a Python float (a fed
    ``beta1`` as ``betas[0]``)."""
    group, name = optimizer.param_groups[key[0]], key[1]
    if name == "beta1" and name not in group:
        group["betas"] = (float(value), *group["betas"][1:])
    else:
        group[name] = float(value)


def _state_array(optimizer: Optimizer, parameter: Parameter, name: str) -> np.ndarray:
    return optimizer.state_of(parameter)[name]


def _write_state(optimizer: Optimizer, parameter: Parameter, name: str, value: np.ndarray) -> None:
    np.copyto(optimizer.state_of(parameter)[name], value)


def _own_step(optimizer: Optimizer, parameter: Parameter) -> np.ndarray:
    return np.asarray(own_step(optimizer, parameter), dtype=np.int64)


def _write_grad(parameter: Parameter, value: np.ndarray) -> None:
    parameter.grad = torch_array(np.array(value, dtype=parameter._data.dtype))


def _clear_grad(parameter: Parameter) -> None:
    parameter.grad = None


__all__ = ["CapturedStep", "Modes", "StepCapture", "capturing"]
