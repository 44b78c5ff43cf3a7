"""The compiled training step: forward, backward and optimizer update as one graph.

```python
step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
loss = step(x, y)     # compiles on the first call; the batch dim is symbolic
```

The graph maps ``(batch, params, optimizer state, hyper-parameters) -> (loss,
new params, new state)``. After each call the new values are written into the
parameters' and the optimizer's arrays in place, so ``model.state_dict()``
sees them. A new compile happens only for a new non-batch shape or dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from kiln.backends import get_backend
from kiln.compiler.autodiff.differentiate import differentiate
from kiln.compiler.errors import InputError
from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.passes.manager import PassManager
from kiln.frontend.module import Module, Parameter
from kiln.frontend.optim import Optimizer
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TensorSpec, TraceContext, as_value, input_names
from kiln.runtime.executable import Executable

DEFAULT_PIPELINE = "cse,dce"


@dataclass
class CompiledStep:
    """One compiled variant: its graph, executable and where each graph input comes from."""

    graph: Graph
    executable: Executable
    parameters: list[Parameter]
    """Trained parameters, in the optimizer's order; the graph returns a new value for each."""
    frozen: list[Parameter]
    """Parameters the model reads that the optimizer does not train (inputs only)."""
    hyper_inputs: list[tuple[int, str]]
    """``(group index, hyper-parameter name)`` per hyper-parameter input, in graph order."""


@dataclass
class TrainStep:
    model: Module
    loss_fn: Callable[..., Tensor]
    optimizer: Optimizer
    backend: str = "numpy"
    pipeline: str = DEFAULT_PIPELINE
    verify_each: bool = False
    print_ir_after_all: bool = False
    compiled: dict[tuple[Any, ...], CompiledStep] = field(default_factory=dict)
    compile_count: int = 0
    """How many times a graph was traced and compiled (a new input signature each)."""

    def __call__(self, *batch: Any) -> float:
        arrays = [np.asarray(array) for array in batch]
        compiled = self._compiled_for(arrays)
        feeds = arrays + [p.data for p in compiled.parameters + compiled.frozen]
        feeds += [self.optimizer.state_of(p)[name] for p in compiled.parameters for name in self.optimizer.state_names]
        feeds += [self._hyper_array(group, name, compiled) for group, name in compiled.hyper_inputs]
        outputs = compiled.executable(*feeds)
        self._write_back(compiled, outputs[1:])
        return float(outputs[0])

    @property
    def graph(self) -> Graph:
        """The most recently compiled graph (the IR of the step)."""
        if not self.compiled:
            raise InputError("the step has not been compiled yet: call it on a batch first (or call step.compile(*specs))")
        return list(self.compiled.values())[-1].graph

    def compile(self, *specs: TensorSpec) -> CompiledStep:
        """Trace and compile for these batch specs (the first dim of each is usually ``"N"``)."""
        self.compile_count += 1
        graph, parameters, frozen, hyper_inputs = build_step_graph(self.model, self.loss_fn, self.optimizer, specs)
        PassManager(self.pipeline, verify_each=self.verify_each, print_ir_after_all=self.print_ir_after_all).run(graph)
        executable = get_backend(self.backend).compile(graph)
        return CompiledStep(graph, executable, parameters, frozen, hyper_inputs)

    def _compiled_for(self, arrays: Sequence[np.ndarray]) -> CompiledStep:
        key = tuple((a.shape[1:], a.dtype.str) for a in arrays)
        if key not in self.compiled:
            self.compiled[key] = self.compile(*batch_specs(arrays))
        return self.compiled[key]

    def _hyper_array(self, group: int, name: str, compiled: CompiledStep) -> np.ndarray:
        dtype = compiled.parameters[0].data.dtype if compiled.parameters else np.float32
        return np.asarray(self.optimizer.param_groups[group][name], dtype=dtype)

    def _write_back(self, compiled: CompiledStep, outputs: Sequence[Any]) -> None:
        count = len(compiled.parameters)
        for param, new in zip(compiled.parameters, outputs[:count]):
            np.copyto(param.data, new)
        states = iter(outputs[count:])
        for param in compiled.parameters:
            state = self.optimizer.state_of(param)
            for name in self.optimizer.state_names:
                np.copyto(state[name], next(states))


def batch_specs(arrays: Sequence[np.ndarray]) -> list[TensorSpec]:
    """Specs with a symbolic batch dim ``N``, so a smaller last batch does not recompile."""
    specs = []
    for index, array in enumerate(arrays):
        if array.ndim == 0:
            raise InputError(f"batch input {index} is a 0-d array; every batch input needs a leading batch dim")
        specs.append(TensorSpec(("N",) + array.shape[1:], DType.of(array.dtype)))
    return specs


def build_step_graph(
    model: Module, loss_fn: Callable[..., Tensor], optimizer: Optimizer, specs: Sequence[TensorSpec]
) -> tuple[Graph, list[Parameter], list[Parameter], list[tuple[int, str]]]:
    """Trace ``loss_fn(model(*inputs), target)``, differentiate it, and append the optimizer update."""
    with TraceContext("train_step") as context:
        context.parameter_names.update({id(p): name for name, p in model.named_parameters()})
        names = input_names(model, len(specs) - 1) + ["target"]
        inputs = [Tensor(context.graph.add_input(spec.type, name)) for spec, name in zip(specs, names)]
        loss = as_value(loss_fn(model(*inputs[:-1]), inputs[-1]), "the loss function's result")
        loss.name_hint = loss.name_hint or "loss"
        parameters = optimizer.parameters()
        param_values = [context.value_of(p) for p in parameters]
        trained = set(map(id, parameters))
        frozen = [p for p in context.parameters if id(p) not in trained]
    graph = context.graph
    # batch inputs, then trained parameters in the optimizer's order, then frozen ones
    graph.inputs = graph.inputs[: len(specs)] + param_values + [context.value_of(p) for p in frozen]
    grads = differentiate(graph, loss, param_values)
    new_params, new_states, hyper_inputs = _emit_updates(graph, optimizer, parameters, param_values, grads)
    graph.outputs = [loss, *new_params, *new_states]
    return graph, parameters, frozen, hyper_inputs


def _emit_updates(graph: Graph, optimizer: Optimizer, parameters: list[Parameter], values: list[Value], grads: list[Value]):
    from kiln.compiler.ir.builder import Builder

    builder = Builder(graph, location="optimizer")
    states = [
        {name: graph.add_input(value.type, f"{value.name_hint}.{name}") for name in optimizer.state_names}
        for value in values
    ]
    hyper, hyper_inputs = {}, []
    for index, group in enumerate(optimizer.param_groups):
        for name in optimizer.graph_hyperparameters:
            dtype = values[0].type.dtype if values else DType.f32
            hyper[(index, name)] = graph.add_input(TensorType((), dtype), name if index == 0 else f"{name}{index}")
            hyper_inputs.append((index, name))
    new_params, new_states = [], []
    for param, value, grad, state in zip(parameters, values, grads, states):
        group_index = optimizer.param_groups.index(optimizer.group_of(param))
        group_hyper = {name: hyper[(group_index, name)] for name in optimizer.graph_hyperparameters}
        new_param, new_state = optimizer.emit_update(builder, value, grad, state, group_hyper, optimizer.param_groups[group_index])
        new_param.name_hint = f"{value.name_hint}.new"
        new_params.append(new_param)
        new_states.extend(new_state[name] for name in optimizer.state_names)
    return new_params, new_states, hyper_inputs


def compile_train_step(
    model: Module, loss_fn: Callable[..., Tensor], optimizer: Optimizer, backend: str = "numpy", **options: Any
) -> TrainStep:
    """A callable ``step(*inputs, target) -> loss`` that trains ``model`` in place; compiles on the first call."""
    get_backend(backend)  # fail now, not at the first batch, on an unknown backend
    return TrainStep(model, loss_fn, optimizer, backend, **options)
