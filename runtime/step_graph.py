"""Builds the training-step graph: forward, backward, gradient transforms and optimizer update.

```
(batch, params, frozen params, optimizer state, [loss_scale], lr [and a cycled momentum] per group, [step])
    -> (loss, new params, new optimizer state)
```

In order: the loss is traced once per micro-batch and averaged; a loss scale
multiplies it before autodiff and ``optim.unscale_grad`` divides it out of
each gradient; ``optim.clip_grad_value`` clamps each gradient;
``optim.clip_grad_norm`` rescales them all by their global norm; the
optimizer appends one update op per parameter. ``step`` (the 1-based number
of this update) is an input only where an update reads it.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from kiln.compiler.autodiff.differentiate import differentiate
from kiln.compiler.errors import InputError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ops.optim import hyper_dtype, scaled
from kiln.frontend.module import Module, Parameter
from kiln.frontend.module_hooks import PARAMETER_HOOK_KINDS
from kiln.frontend.optim import Optimizer
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TensorSpec, TraceContext, as_value, input_names
from kiln.frontend.traced_builtins import traced_builtin_extremes


@dataclass(frozen=True)
class GradientOptions:
    """The gradient transforms compiled into the step (``compile_train_step`` options)."""

    accumulate: int = 1
    """Micro-batches per update: the batch splits into this many equal parts, each traced, one update."""
    loss_scale: bool = False
    """Whether the graph takes a ``loss_scale`` input that multiplies the loss and divides the gradients."""
    clip_grad_value: float | None = None
    clip_grad_norm: float | None = None
    data_parallel_ranks: int = 1
    """Ranks each batch is sharded over (``DataParallel`` sets it): BatchNorm in training normalizes with, and
    updates its running statistics from, the statistics of all the ranks' shards (``SyncBatchNorm``)."""


@dataclass
class StepGraph:
    """The step's graph and where each of its inputs and outputs comes from."""

    graph: Graph
    parameters: list[Parameter]
    """Trained parameters, in the optimizer's order; the graph returns a new value for each."""
    frozen: list[Parameter]
    """Parameters the model reads that the optimizer does not train (inputs only)."""
    state_names: list[tuple[str, ...]]
    """Per trained parameter, its optimizer state names: inputs after the frozen parameters, outputs after the new parameters."""
    hyper_inputs: list[tuple[int, str]]
    """``(group index, hyper-parameter name)`` per hyper-parameter input, in graph order."""
    reads_step: bool
    """Whether the last input is the ``step`` counter."""
    reads_seed: bool = False
    """Whether the model traced random ops (dropout): then the input right after the frozen parameters is the int64 ``rng_seed``."""
    buffers: list[Parameter] = field(default_factory=list)
    """Module buffers the step updates (BatchNorm's running statistics): their new values are the last outputs."""


def build_step_graph(
    model: Module, loss_fn: Callable[..., Tensor], optimizer: Optimizer, specs: Sequence[TensorSpec], options: GradientOptions = GradientOptions()
) -> StepGraph:
    """Trace ``loss_fn(model(*inputs), target)`` per micro-batch, differentiate, transform the gradients, append the update."""
    graph, loss, parameters, frozen, buffer_updates = _trace_loss(model, loss_fn, optimizer, specs, options)
    reads_seed = len(graph.inputs) > len(specs) * options.accumulate + len(parameters) + len(frozen)
    values = graph.inputs[len(specs) * options.accumulate :][: len(parameters)]
    state_names = [optimizer.param_state_names(p, optimizer.group_of(p)) for p in parameters]
    states = [{name: graph.add_input(optimizer.state_type(p, name), f"{v.name_hint}.{name}") for name in names}
              for p, v, names in zip(parameters, values, state_names)]
    scale = graph.add_input(TensorType((), hyper_dtype(loss.type.dtype)), "loss_scale") if options.loss_scale else None
    hyper, hyper_inputs = _hyper_inputs(graph, optimizer, parameters)
    step = graph.add_input(TensorType((), DType.i64), "step")
    grads = transform_gradients(graph, loss, values, scale, options)
    new_params, new_states = _emit_updates(graph, optimizer, parameters, values, grads, states, hyper, step)
    graph.outputs = [loss, *new_params, *new_states, *(value for _, value in buffer_updates)]
    reads_step = bool(step.uses)
    if not reads_step:
        graph.inputs.remove(step)
    return StepGraph(graph, parameters, frozen, state_names, hyper_inputs, reads_step, reads_seed, [buffer for buffer, _ in buffer_updates])


def _check_model_inputs(model: Module, count: int) -> None:
    """An ``InputError`` before tracing when ``model.forward`` cannot take the ``count`` arrays before the target (a
    step called without its target, or with one array too many), instead of the forward's own ``TypeError``."""
    forward = getattr(model, "forward", model)
    try:
        inspect.signature(forward).bind(*range(count))
    except TypeError as error:
        raise InputError(
            f"the training step got {count + 1} batch array(s): the model's input(s), then the target; but "
            f"{type(model).__name__}.forward does not take {count} positional argument(s) ({error}); call step(*model_inputs, target)"
        ) from None
    except ValueError:  # no signature to check: the trace finds out
        pass


def _trace_loss(
    model: Module, loss_fn: Callable[..., Tensor], optimizer: Optimizer, specs: Sequence[TensorSpec], options: GradientOptions
) -> tuple[Graph, Value, list[Parameter], list[Parameter], list[tuple[Parameter, Value]]]:
    """The mean loss over the micro-batches; inputs are the batches, then trained, then frozen parameters (and buffers).

    Also returns the buffers the model updated while tracing, with their new values.
    """
    _check_model_inputs(model, len(specs) - 1)
    with TraceContext("train_step") as context, traced_builtin_extremes():
        context.parameter_names.update({id(p): name for name, p in [*model.named_parameters(), *model.named_buffers()]})
        context.data_parallel_ranks = options.data_parallel_ranks
        names = input_names(model, len(specs) - 1) + ["target"]
        batch_inputs, losses = [], []
        for index in range(options.accumulate):
            suffix = "" if options.accumulate == 1 else f".{index}"
            inputs = [Tensor(context.graph.add_input(spec.type, name + suffix)) for spec, name in zip(specs, names)]
            batch_inputs += [tensor.value for tensor in inputs]
            losses.append(as_value(loss_fn(model(*inputs[:-1]), inputs[-1]), "the loss function's result"))
        parameters = optimizer.trained_parameters()  # requires_grad=False: frozen, as in PyTorch
        refuse_parameter_hooks(parameters, lambda: context.parameter_names)
        param_values = [context.value_of(p) for p in parameters]
        trained = set(map(id, parameters))
        frozen = [p for p in context.parameters if id(p) not in trained]
    graph = context.graph
    graph.inputs = batch_inputs + param_values + [context.value_of(p) for p in frozen]
    graph.inputs += [context.seed_input] if context.seed_input is not None else []  # dropout's seed, fed per step
    loss = _mean(Builder(graph, location="accumulate"), losses)
    loss.name_hint = loss.name_hint or "loss"
    return graph, loss, parameters, frozen, list(context.buffer_updates.values())


def refuse_parameter_hooks(parameters: Sequence[Parameter], names: Callable[[], dict[int, str]]) -> None:
    """``compile_train_step`` differentiates in the IR, outside the trace, where a parameter's ``register_hook`` and
    ``register_post_accumulate_grad_hook`` hooks cannot run: refused by name (``names()``: by ``id``), where a
    ``kiln.compile``d step calls them. Checked when the step is traced and again when hooks may have been added."""
    hooked = [p for p in parameters if any(p.__dict__.get(kind) for kind in PARAMETER_HOOK_KINDS)]
    if hooked:
        named = names()
        raise InputError(f"compile_train_step cannot call the register_hook or register_post_accumulate_grad_hook hooks "
                         f"of {', '.join(named.get(id(p), 'a parameter') for p in hooked)}: its gradients are computed "
                         "in the compiled graph; compile a step that calls loss.backward() with kiln.compile (which calls "
                         "them), or remove the hooks")


def _mean(b: Builder, losses: list[Value]) -> Value:
    # (l_0 + ... + l_{k-1}) / k: each micro-batch's gradient weighs 1/k, as loss / k per backward in PyTorch
    if len(losses) == 1:
        return losses[0]
    total = losses[0]
    for loss in losses[1:]:
        total = b.add(total, loss)
    return b.div(total, b.scalar_like(float(len(losses)), total))


def _hyper_inputs(
    graph: Graph, optimizer: Optimizer, parameters: list[Parameter]
) -> tuple[dict[tuple[int, str], Value], list[tuple[int, str]]]:
    """One scalar input per group and graph hyper-parameter (``lr``, ``lr1``, ..., a fed momentum: ``momentum``,
    ``beta1``, ``beta1_1``), typed by ``hyper_input_dtype``."""
    hyper, order = {}, []
    for index, group in enumerate(optimizer.param_groups):
        for name in optimizer.group_hyperparameters(group):
            dtype = hyper_input_dtype(optimizer, group, name)
            hyper[(index, name)] = graph.add_input(TensorType((), dtype), _hyper_input_name(name, index))
            order.append((index, name))
    return hyper, order


def computed_hyper(graph: Graph, optimizer: Optimizer, hyper: dict[tuple[int, str], Value],
                   order: list[tuple[int, str]]) -> dict[tuple[int, str], Value]:
    """The hyper-parameters the step itself wrote into their groups as tensors it computed (EDM's ramp-up ``g['lr'] =
    lr * min(cur_nimg / ..., 1)`` of a traced ``cur_nimg``), each that value: in ``hyper`` it replaces the input (which
    leaves the graph and ``order``), cast to the input's dtype. The caller writes its value back into the group after
    each call, as the Python float PyTorch's store leaves there."""
    from kiln.runtime.attribute_writes import is_traced_tensor

    builder, computed = Builder(graph, location="optimizer"), {}
    for key in list(order):
        value = optimizer.hyperparameter(optimizer.param_groups[key[0]], key[1])
        if is_traced_tensor(value):
            graph.inputs.remove(hyper[key])
            order.remove(key)
            computed[key] = value.value
            hyper[key] = builder.op("tensor.cast", value.value, dtype=hyper[key].type.dtype)
    return computed


def _hyper_input_name(name: str, index: int) -> str:
    if index == 0:
        return name
    return f"{name}_{index}" if name[-1].isdigit() else f"{name}{index}"


def hyper_input_dtype(optimizer: Optimizer, group: dict, name: str) -> DType:
    """A hyper-parameter is PyTorch's Python float: float64 where PyTorch computes with it on the host first (a fed
    momentum's ``1 - beta1``, Adam's ``lr / (1 - beta1^t)``: ``Optimizer.lr_on_host``; a float32 lr there put Adam's
    step a float32 ulp off torch's in one element in eight). Where PyTorch's kernels read ``lr`` itself (SGD's
    ``add_(grad, alpha=-lr)``), in the group's parameter dtype (``hyper_dtype``: float64 for a half group), so no cast
    sits between the input and the update; a group of float32 and float64 parameters gets float64, read in each
    parameter's dtype (``parameter_hyper``)."""
    if name != "lr" or optimizer.computes_lr_on_host(group):
        return DType.f64
    dtypes = {hyper_dtype(DType.of(param._data.dtype)) for param in group["params"]}
    if len(dtypes) > 1:
        return DType.f64
    return dtypes.pop() if dtypes else DType.f32


def parameter_hyper(builder: Builder, optimizer: Optimizer, group: dict, hyper: dict[str, Value], dtype: DType) -> dict[str, Value]:
    """The group's hyper-parameter inputs for a parameter of ``dtype``: a mixed group's float64 ``lr`` cast to the
    parameter's ``hyper_dtype``, rounded once, as torch's kernel reads the Python float; left in float64 where PyTorch
    computes with it on the host (``lr_on_host``)."""
    lr, wanted = hyper.get("lr"), hyper_dtype(dtype)
    if lr is None or lr.type.dtype is wanted or optimizer.computes_lr_on_host(group):
        return hyper
    return hyper | {"lr": builder.op("tensor.cast", lr, dtype=wanted)}


def hyper_feeds(optimizer: Optimizer, hyper_inputs: list[tuple[int, str]]) -> list[np.ndarray]:
    """The current value of each hyper-parameter input (``lr`` of each group, after any scheduler), in graph order."""
    return [hyper_value(optimizer, group, name) for group, name in hyper_inputs]


def hyper_value(optimizer: Optimizer, group: int, name: str) -> np.ndarray:
    """Group ``group``'s hyper-parameter ``name`` as its graph input: 0-d, in ``hyper_input_dtype``."""
    entries = optimizer.param_groups[group]
    return np.asarray(optimizer.hyperparameter(entries, name), dtype=hyper_input_dtype(optimizer, entries, name).numpy)


def transform_gradients(graph: Graph, loss: Value, params: list[Value], scale: Value | None, options: GradientOptions) -> list[Value]:
    """Differentiate the (scaled) loss, then unscale, clip by value and clip by global norm."""
    b = Builder(graph, location="gradients")
    objective = loss if scale is None else scaled(b, loss, scale)
    grads = differentiate(graph, objective, params)
    graph.gradients = list(grads)  # the raw gradients, for passes that act on them (data-parallel's allreduce)
    if scale is not None:
        grads = [b.unscale_grad(g, scale) for g in grads]
    if options.clip_grad_value is not None:
        grads = [b.clip_grad_value(g, clip_value=options.clip_grad_value) for g in grads]
    if options.clip_grad_norm is not None and grads:
        clipped = b.clip_grad_norm(*grads, max_norm=options.clip_grad_norm)
        grads = list(clipped) if isinstance(clipped, tuple) else [clipped]
    return grads


def _emit_updates(
    graph: Graph, optimizer: Optimizer, parameters: list[Parameter], values: list[Value], grads: list[Value],
    states: list[dict[str, Value]], hyper: dict[tuple[int, str], Value], step: Value,
) -> tuple[list[Value], list[Value]]:
    builder = Builder(graph, location="optimizer")
    new_params, new_states = [], []
    for param, value, grad, state in zip(parameters, values, grads, states):
        group = optimizer.group_of(param)
        index = next(i for i, g in enumerate(optimizer.param_groups) if g is group)
        group_hyper = {name: hyper[(index, name)] for name in optimizer.group_hyperparameters(group)} | {"step": step}
        group_hyper = parameter_hyper(builder, optimizer, group, group_hyper, value.type.dtype)
        grad.name_hint = grad.name_hint or f"{value.name_hint}.grad"
        new_param, new_state = optimizer.emit_update(builder, value, grad, state, group_hyper, group)
        new_param.name_hint = f"{value.name_hint}.new"
        for name in state:
            new_state[name].name_hint = f"{value.name_hint}.{name}.new"
            new_states.append(new_state[name])
        new_params.append(new_param)
    return new_params, new_states
