"""Function transforms on eager tensors that need gradients: their traced graph replayed op by op, so results keep a
chain.

```python
params = dict(model.named_parameters())                  # trained parameters: the results must reach them
def task_loss(params, xs, ys, xq, yq):                   # MAML: one inner step, then the query loss
    g = kiln.func.grad(support_loss)(params, xs, ys)
    fast = {k: params[k] - lr * g[k] for k in params}
    return F.mse_loss(functional_call(model, fast, (xq,)), yq)
kiln.func.vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(params, xs, ys, xq, yq).mean().backward()
```

A transform called on eager tensors normally compiles its traced graph and runs it (``runtime/traced_transform.py``,
``runtime/grad.py``): fast, but its results are new leaves, and a ``backward()`` through them would not reach the
parameters and marked tensors they were computed from. When gradients are enabled and an argument, or a parameter the
function reads, requires one (as ``torch.func``'s results then do in PyTorch), the graph is instead traced and each of
its ops run eagerly, in order, on the arguments' own eager values and on fresh reads of the parameters: the results
are eager tensors whose chains reach back to them, and the backward differentiates through the transform (a second
derivative for ``grad``, by the autodiff pass's own rules, as ``autograd.grad(..., create_graph=True)`` replays do).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from kiln.compiler.ir.core import Value
from kiln.frontend.eager_values import eager_leaf, eager_value
from kiln.frontend.grad_mode import is_grad_enabled
from kiln.frontend.init import draw_seed
from kiln.frontend.module import ArrayLeaf
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TensorSpec, TraceContext, trace_context
from kiln.runtime.pytree import flatten, unflatten


def needs_chain(tensors: Sequence[Any]) -> bool:
    """Whether a transform's eager results must keep a chain because of ``tensors`` (its argument leaves, or the
    parameters its traced function reads): gradients are enabled and one of them requires a gradient."""
    return is_grad_enabled() and any(_requires_grad(tensor) for tensor in tensors)


def _requires_grad(tensor: Any) -> bool:
    if isinstance(tensor, ArrayLeaf):
        return bool(tensor.requires_grad) and tensor.dtype.is_float
    return eager_value(tensor) is not None and bool(tensor.requires_grad)


def replayed_transform(trace_into: Callable[..., Any], name: str, args: tuple[Any, ...]) -> Any:
    """``trace_into(*args)`` traced on the arguments' types, then its ops run eagerly on their values; the results
    (in ``trace_into``'s structure) are eager tensors with chains."""
    leaves, structure = flatten(args)
    results: list[Any] = []

    def traced(*tensors: Tensor) -> Any:
        result = trace_into(*unflatten(structure, tensors))
        results.append(flatten(result)[1])
        return result

    feeds = [_eager_feed(leaf) for leaf in leaves]
    specs = [TensorSpec(feed.type.shape, feed.type.dtype) for feed in feeds]
    context = trace_context(traced, *specs, name=name, what=f"{name}'s result")
    eager = TraceContext.current()
    reads = [eager.value_of(parameter) for parameter in context.parameters]
    values: dict[int, Value] = {id(i): v for i, v in zip(context.graph.inputs, [*feeds, *reads])}
    if context.seed_input is not None:  # random ops (dropout in training mode) draw anew, as torch.func's eager draws
        values[id(context.seed_input)] = eager_leaf(draw_seed()).value
    for op in context.graph.ops:
        made = eager.emit(op.name, *[values[id(operand)] for operand in op.operands], **op.attrs)
        values.update({id(r): v for r, v in zip(op.results, made if isinstance(made, tuple) else (made,))})
    return unflatten(results[0], [Tensor(values[id(output)]) for output in context.graph.outputs])


def _eager_feed(leaf: Any) -> Value:
    """The eager value an argument leaf stands for: a tensor's own (its chain kept), a fresh read of a parameter, or
    a new leaf holding an array or a number."""
    if isinstance(leaf, ArrayLeaf):
        return TraceContext.current().value_of(leaf)
    value = eager_value(leaf)
    if value is not None:
        return value
    return eager_leaf(np.asarray(leaf)).value


__all__ = ["needs_chain", "replayed_transform"]
