"""Reverse-mode autodiff over the IR: the pass owns the walk, rules own the math.

``differentiate(graph, of=loss, wrt=params)`` appends the backward ops to the
same graph (one joint forward+backward graph) and returns one gradient value
per ``wrt``. The walk visits only ops between ``wrt`` and ``of``, sums
cotangents where a value fans out, and un-broadcasts a cotangent to its
operand's shape (JAX's ``ad.py``, tinygrad's ``compute_gradient``). A
composite op without a VJP rule is first expanded into its primitives.

```
func @f(%x: tensor<3xf32>) {              func @f(%x: tensor<3xf32>) {
  %y = "tensor.mul"(%x, %x) ...             %y = "tensor.mul"(%x, %x) ...
  %s = "tensor.reduce_sum"(%y) ...    ->    %s = "tensor.reduce_sum"(%y) ...
  return %s                                 ... backward: 1 -> broadcast -> g*x + g*x
}                                           return %s, %dx
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.printer import assign_names
from kiln.compiler.ir.types import Dim, TensorType
from kiln.compiler.autodiff.rules import VJP_RULES
from kiln.compiler.ops.registry import has_trait, lookup
from kiln.compiler.passes.decompose import decompose_op
from kiln.compiler.passes.manager import Pass, register_pass


class AutodiffError(KilnError):
    """Autodiff cannot differentiate this graph (a missing rule, a non-scalar output...)."""


def differentiate(graph: Graph, of: Value, wrt: Sequence[Value], seed: Value | None = None) -> list[Value]:
    """Append the backward of ``of`` w.r.t. each of ``wrt``; returns the gradients in order.

    ``of`` must be a floating-point scalar unless a ``seed`` cotangent of its type is given.
    """
    if seed is None and (of.type.shape != () or not of.type.dtype.is_float):
        raise AutodiffError(f"autodiff needs a floating-point scalar to differentiate, got {of.type}; reduce it first (e.g. .sum())")
    of, wrt = _expand_composites_without_rules(graph, of, wrt)
    path = ops_between(graph, wrt, of)
    varying = {id(v) for v in wrt} | {id(r) for op in path for r in op.results}
    builder = Builder(graph, location="autodiff")
    cotangents: dict[Value, Value] = {of: seed if seed is not None else builder.constant(1.0, of.type.dtype, name_hint="seed")}
    for op in reversed(path):
        _backpropagate(builder, graph, op, cotangents, varying)
    return [cotangents.get(value) or _zeros(builder, value.type) for value in wrt]


def ops_between(graph: Graph, wrt: Sequence[Value], of: Value) -> list[Op]:
    """Differentiable ops that depend on some ``wrt`` and that ``of`` depends on, in graph order."""
    varying = set(map(id, wrt))
    forward = []
    for op in graph.ops:
        if not has_trait(op.name, "non_differentiable") and any(id(v) in varying for v in op.operands):
            forward.append(op)
            varying.update(id(r) for r in op.results if r.type.dtype.is_float)
    needed = {id(of)}
    path = []
    for op in reversed(forward):
        if any(id(r) in needed for r in op.results):
            path.append(op)
            needed.update(id(v) for v in op.operands)
    return path[::-1]


def _expand_composites_without_rules(graph: Graph, of: Value, wrt: Sequence[Value]) -> tuple[Value, list[Value]]:
    """Expand the composites on the path that have no VJP rule; ``of`` and ``wrt`` follow their results to the values
    replacing them (``of`` made by ``nn.layer_norm_grad`` in a Hessian: its seed would otherwise reach nothing)."""
    wrt = list(wrt)
    while True:
        pending = [op for op in ops_between(graph, wrt, of) if op.name not in VJP_RULES and lookup(op.name).is_composite]
        if not pending:
            return of, wrt
        for op in pending:
            replaced = dict(zip(map(id, op.results), decompose_op(graph, op)))
            of = replaced.get(id(of), of)
            wrt = [replaced.get(id(value), value) for value in wrt]


def _backpropagate(builder: Builder, graph: Graph, op: Op, cotangents: dict[Value, Value], varying: set[int]) -> None:
    result_cotangents = tuple(cotangents.get(r) for r in op.results)
    if all(g is None for g in result_cotangents):
        return
    rule = VJP_RULES.get(op.name)
    if rule is None:
        raise _missing_rule(graph, op)
    builder.location = f"vjp of {op.name}" + (f" from {op.location}" if op.location else "")
    g = result_cotangents[0] if len(op.results) == 1 else result_cotangents
    for operand, cotangent in zip(op.operands, rule(builder, op, g)):
        if cotangent is None or id(operand) not in varying or not operand.type.dtype.is_float:
            continue
        cotangent = unbroadcast(builder, cotangent, operand.type)
        previous = cotangents.get(operand)
        cotangents[operand] = cotangent if previous is None else builder.add(previous, cotangent)


def unbroadcast(builder: Builder, cotangent: Value, target: TensorType) -> Value:
    """Sum a cotangent over the axes along which its operand was broadcast."""
    shape = cotangent.type.shape
    if shape == target.shape:
        return cotangent
    leading = len(shape) - target.rank
    if leading > 0:
        cotangent = builder.reduce_sum(cotangent, axes=tuple(range(leading)))
    stretched = _stretched_axes(cotangent.type.shape, target.shape)
    if stretched:
        cotangent = builder.reduce_sum(cotangent, axes=stretched, keepdims=True)
    return cotangent


def _stretched_axes(shape: tuple[Dim, ...], target: tuple[Dim, ...]) -> tuple[int, ...]:
    return tuple(axis for axis, (dim, want) in enumerate(zip(shape, target)) if want == 1 and dim != 1)


def _zeros(builder: Builder, type: TensorType) -> Value:
    return builder.broadcast_to(builder.constant(0.0, type.dtype), shape=type.shape)


def _missing_rule(graph: Graph, op: Op) -> AutodiffError:
    name = assign_names(graph).get(op.results[0], "?") if op.results else "?"
    where = f" from {op.location}" if op.location else ""
    return AutodiffError(
        f"no VJP rule for {op.name!r} (%{name} in @{graph.name}{where}); "
        f"register one with @vjp_rule({op.name!r}); rules exist for: {', '.join(sorted(VJP_RULES))}"
    )


@register_pass
@dataclass(frozen=True)
class Autodiff(Pass):
    """Differentiate output ``output`` w.r.t. the floating-point inputs (or those at ``wrt``); gradients are appended to the outputs."""

    name = "autodiff"
    output: int = 0
    wrt: tuple[int, ...] | None = None

    def run(self, graph: Graph) -> bool:
        indices = self.wrt if self.wrt is not None else [i for i, v in enumerate(graph.inputs) if v.type.dtype.is_float]
        grads = differentiate(graph, graph.outputs[self.output], [graph.inputs[i] for i in indices])
        for index, grad in zip(indices, grads):
            grad.name_hint = grad.name_hint or f"d_{graph.inputs[index].name_hint or index}"
        graph.outputs.extend(grads)
        return True
