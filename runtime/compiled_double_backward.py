"""A double backward through a ``kiln.compile``d call: its residuals recomputed eagerly, so that they have a chain.

A recorded call (``runtime/compiled_training.py``) keeps its residuals (activations, masks) as leaves: exact for one
backward, but a ``create_graph`` backward replays the call's backward graph on them, and a second derivative would
miss how they depend on the parameters (a gradient penalty's, MAML's). So before such a backward each compiled call
on the chain runs its traced forward again, op by op, from the operands it was given (the batch, the parameters as
read then), and its residual operands become those eager values: the replayed backward reads values whose chain
reaches the parameters, as PyTorch's eager double backward does. A first-order backward never pays for it.

```python
critic = kiln.compile(critic)
(g,) = kiln.autograd.grad(critic(mix).sum(), mix, create_graph=True)
penalty = ((g.norm(2, dim=1) - 1) ** 2).mean()     # penalty.backward() reaches the critic's weights
```
"""

from __future__ import annotations

from typing import Sequence

from kiln.compiler.ir.core import Graph, Op, Value
from kiln.frontend.trace import TraceContext, located_error
from kiln.runtime.compiled_training import SPLITS, SplitForward
from kiln.runtime.eager_backward import chain_of


def differentiable_residuals(outputs: Sequence[Value], what: str) -> None:
    """Give every compiled call behind ``outputs`` residuals with a chain (once per call)."""
    for op in chain_of(outputs):
        split = SPLITS.get(op.attrs["backward"]) if op.name == "custom.vjp" else None
        if split is not None:
            first_residual = op.attrs["num_inputs"] + split.num_outputs
            if all(value.producer is None for value in op.operands[first_residual:]):
                _recompute(op, split, first_residual, what)


def _recompute(op: Op, split: SplitForward, first_residual: int, what: str) -> None:
    graph, num_inputs = split.recompute, op.attrs["num_inputs"]
    assert graph is not None
    if len(graph.inputs) > num_inputs:
        raise located_error(
            f"{what}: the graph runs through {op.attrs['function']} (at {op.location or 'an unknown line'}), which draws "
            "random numbers (dropout in training mode), so its double backward cannot recompute its activations; call "
            "the uncompiled module for a double backward through it, or put it in eval() mode")
    values = _replayed(graph, op.operands[:num_inputs])
    op.operands[first_residual:] = values[split.num_outputs + split.num_buffers :]


def _replayed(graph: Graph, operands: Sequence[Value]) -> list[Value]:
    """``graph``'s outputs computed eagerly, op by op, from eager ``operands`` (its inputs)."""
    context = TraceContext.current()
    values = {id(value): operand for value, operand in zip(graph.inputs, operands)}
    for op in graph.ops:
        made = context.emit(op.name, *[values[id(value)] for value in op.operands], **op.attrs)
        values.update(zip(map(id, op.results), made if isinstance(made, tuple) else (made,)))
    return [values[id(value)] for value in graph.outputs]


__all__ = ["differentiable_residuals"]
