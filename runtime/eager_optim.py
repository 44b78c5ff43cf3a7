"""``optimizer.step()`` in eager mode: the optimizer's own update ops, compiled once, applied to ``.grad``.

```
(params, grads, optimizer state, lr per group, [step]) -> (new params, new state)
```

The graph is the update part of a compiled training step (the same
``emit_update`` ops, so eager and compiled training agree bit for bit),
cached per optimizer by its signature and by which parameters have a
gradient; the learning rate and step counter are inputs, so a scheduler never
recompiles it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Hashable

import numpy as np

from kiln.backends import get_backend
from kiln.compiler.ir.core import Graph
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.passes.manager import PassManager
from kiln.frontend.eager_values import count_update
from kiln.frontend.module import Parameter
from kiln.frontend.optim import Optimizer
from kiln.frontend.optim_sparse import check_sparse_gradients
from kiln.frontend.sparse_grad import is_sparse_grad
from kiln.frontend.torch_array import plain
from kiln.runtime.donation import value_donations
from kiln.runtime.executable import Executable
from kiln.frontend.trace import step_capture
from kiln.runtime.step_graph import _emit_updates, _hyper_inputs, hyper_feeds
from kiln.runtime.train_step import DEFAULT_PIPELINE


@dataclass
class EagerUpdate:
    executable: Executable
    state_names: list[tuple[str, ...]]
    hyper_inputs: list[tuple[int, str]]
    reads_step: bool


_UPDATES: "weakref.WeakKeyDictionary[Optimizer, dict[Hashable, EagerUpdate]]" = weakref.WeakKeyDictionary()


def apply_gradients(optimizer: Optimizer) -> None:
    """One update of every trained parameter that has a ``.grad``; counts the step. Traced in a ``kiln.compile``d step,
    the update is appended to its graph instead (``runtime/step_capture.py``)."""
    capture = step_capture()
    if capture is not None:
        capture.optimizer_step(optimizer)
        return
    parameters = [p for p in optimizer.trained_parameters() if p.grad is not None]
    if not parameters:
        return
    check_sparse_gradients(optimizer, parameters)  # embedding(sparse=True)'s .grad: SGD and Adagrad take it, as torch's
    for step, same_step in _by_own_step(optimizer, parameters).items():
        _update(optimizer, same_step, step)
    count_step(optimizer, parameters)


def own_step(optimizer: Optimizer, parameter: Parameter) -> int:
    """The 1-based number of this update of ``parameter``, as ``torch.optim``'s ``state[p]['step']``: it counts only the
    steps that updated it, so Adam's bias correction of a parameter first used late starts at 1."""
    return optimizer.step_count + 1 - optimizer.__dict__.get("skipped_steps", {}).get(id(parameter), 0)


def count_step(optimizer: Optimizer, updated: list[Parameter]) -> None:
    """Count one step: ``Optimizer.skipped_steps`` goes up for each parameter not ``updated`` (no ``.grad``, or frozen:
    unfrozen later, it starts at 1, as torch's), then ``step_count``."""
    skipped = optimizer.__dict__.setdefault("skipped_steps", {})
    stepped = set(map(id, updated))
    for parameter in optimizer.parameters():
        if id(parameter) not in stepped:
            skipped[id(parameter)] = skipped.get(id(parameter), 0) + 1
    optimizer.step_count += 1


def _by_own_step(optimizer: Optimizer, parameters: list[Parameter]) -> dict[int, list[Parameter]]:
    """The parameters by their own 1-based step number (one group unless some step found one without a gradient)."""
    groups: dict[int, list[Parameter]] = {}
    for parameter in parameters:
        groups.setdefault(own_step(optimizer, parameter), []).append(parameter)
    return groups


def _update(optimizer: Optimizer, parameters: list[Parameter], step: int) -> None:
    """Run the compiled update of ``parameters`` (cached per optimizer signature and parameter list) at ``step``."""
    cache = _UPDATES.setdefault(optimizer, {})
    key = (optimizer.signature(), tuple(map(id, parameters)))
    update = cache.get(key)
    if update is None:
        update = cache[key] = _compile_update(optimizer, parameters)
    written = [plain(p._data) for p in parameters]  # plain views: an output updated in place comes back as its view
    states = [optimizer.state_of(p) for p in parameters]  # looked up once: the update writes into the same arrays
    written += [state[name] for state, names in zip(states, update.state_names) for name in names]
    feeds = written[: len(parameters)] + [grad_array_of(p) for p in parameters] + written[len(parameters) :]
    feeds += hyper_feeds(optimizer, update.hyper_inputs)
    if update.reads_step:
        feeds.append(np.asarray(step, dtype=np.int64))
    for target, output in zip(written, update.executable(*feeds)):
        if output is not target:  # not updated in place (the memory plan declined): copied back
            np.copyto(target, output)
    for parameter in parameters:
        count_update(parameter)


def grad_array_of(parameter: Parameter) -> np.ndarray:
    """``parameter.grad`` as the array an update is fed: checked against the parameter's shape, in its dtype."""
    grad = parameter.grad
    grad = grad.dense_array() if is_sparse_grad(grad) else np.asarray(grad)  # optim_sparse.py: the same update
    if grad.shape != parameter._data.shape:
        raise ValueError(f"a parameter of shape {parameter._data.shape} has a .grad of shape {grad.shape}")
    return grad.astype(parameter._data.dtype, copy=False)


def _compile_update(optimizer: Optimizer, parameters: list[Parameter]) -> EagerUpdate:
    graph = Graph("eager_update")
    names = {id(p): name for name, p in _named(optimizer)}
    values = [graph.add_input(TensorType.of_array(p._data), names[id(p)]) for p in parameters]
    grads = [graph.add_input(v.type, f"{v.name_hint}.grad") for v in values]
    state_names = [optimizer.param_state_names(p, optimizer.group_of(p)) for p in parameters]
    states = [{name: graph.add_input(optimizer.state_type(p, name), f"{v.name_hint}.{name}") for name in names}
              for p, v, names in zip(parameters, values, state_names)]
    hyper, hyper_inputs = _hyper_inputs(graph, optimizer, parameters)
    step = graph.add_input(TensorType((), DType.i64), "step")
    new_params, new_states = _emit_updates(graph, optimizer, parameters, values, grads, states, hyper, step)
    graph.outputs = [*new_params, *new_states]
    reads_step = bool(step.uses)
    if not reads_step:
        graph.inputs.remove(step)
    flat_states = [value for named in states for value in named.values()]
    donations = value_donations(graph, zip([*values, *flat_states], graph.outputs))  # parameters, state: in place
    PassManager(DEFAULT_PIPELINE).run(graph)
    graph.donations = donations
    return EagerUpdate(get_backend("numpy").compile(graph), state_names, hyper_inputs, reads_step)


def _named(optimizer: Optimizer) -> list[tuple[str, Parameter]]:
    return [(f"param{index}", p) for index, p in enumerate(optimizer.parameters())]


__all__ = ["apply_gradients", "count_step", "grad_array_of", "own_step"]
