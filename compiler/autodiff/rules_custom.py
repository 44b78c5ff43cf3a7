"""The VJP rule of ``custom.vjp`` (``compiler/ops/custom.py``): the user's backward, inlined, in the one ``VJP_RULES``
table.

The forward's own ops are never differentiated: the op passes no cotangent to the forward outputs it reads, only to
its inputs, and those come from the ``backward`` sub-graph copied into the graph being differentiated, fed the saved
tensors and the outputs' cotangents (zeros for an output nothing differentiates). A saved forward output is fed the
op's result, so a second derivative reaches ``backward`` again through it.

```
%y = "custom.vjp"(%x, %e) {..., saved = [1], gradients = [0], backward = func @b(%s, %g) { %dx = mul(%g, %s) ... }}
  backward of %y, cotangent %gy:   %dx = "tensor.mul"(%gy, %y)      (for %x)
```
"""

from __future__ import annotations

from typing import Sequence

from kiln.compiler.autodiff.differentiate import _zeros as zeros
from kiln.compiler.autodiff.rules import Cotangents, vjp_rule
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value


@vjp_rule("custom.vjp")
def custom_vjp_vjp(b: Builder, op: Op, g: "Value | tuple[Value | None, ...]") -> Cotangents:
    # d inputs = backward(saved, cotangents of the outputs); nothing for the forward outputs and residuals
    cotangents = g if isinstance(g, tuple) else (g,)
    seeds = [c if c is not None else zeros(b, r.type) for c, r in zip(cotangents, op.results)]
    saved = [_saved(op, index) for index in op.attrs["saved"]]
    grads = inline(b, op.attrs["backward"], saved + seeds)
    result: list[Value | None] = [None] * len(op.operands)
    for index, grad in zip(op.attrs["gradients"], grads):
        result[index] = grad
    return tuple(result)


def _saved(op: Op, index: int) -> Value:
    """The value fed for saved operand ``index``: a forward output's is the op's result (its derivative is ``backward``)."""
    first_output = op.attrs["num_inputs"]
    if first_output <= index < first_output + op.attrs["num_outputs"]:
        return op.results[index - first_output]
    return op.operands[index]


def inline(b: Builder, graph: Graph, arguments: Sequence[Value]) -> list[Value]:
    """Copy ``graph``'s ops through ``b`` with its inputs bound to ``arguments``; returns what its outputs became. The
    copies keep their source lines (the user's ``backward``), which errors about them name."""
    mapping: dict[Value, Value] = dict(zip(graph.inputs, arguments))
    location = b.location
    for op in graph.ops:
        b.location = op.location or location
        copy = b.create(op.name, [mapping[v] for v in op.operands], op.attrs)
        mapping.update(zip(op.results, copy.results))
    b.location = location
    return [mapping[v] for v in graph.outputs]
