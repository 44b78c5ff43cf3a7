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

``differentiate_outputs(graph, [y1, y2], wrt, [u1, u2])`` is ``sum_k u_k^T dy_k/dwrt`` from ONE reverse walk
(``torch.autograd.grad(outputs, inputs, grad_outputs)``; JAX's ``vjp`` of a tuple output): every output starts with its
cotangent and the walk sums them where the outputs share ops, so a subgraph shared by k outputs gets one backward, not
k. (``kiln.vjp``, ``kiln.jvp`` and ``kiln.jacrev`` of several outputs call it.)

```python
dx, dw = differentiate_outputs(graph, [logits, loss], [x, w], [u, None])   # None: 1, for a scalar output
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.printer import assign_names
from kiln.compiler.ir.types import Dim, TensorType
from kiln.compiler.autodiff.half_vjp import computes_in_half, rounded, summed_in_float32, widened_rule_inputs
from kiln.compiler.autodiff.rules import VJP_RULES
from kiln.compiler.ops.registry import has_trait, lookup
from kiln.compiler.passes.decompose import decompose_op
from kiln.compiler.passes.manager import Pass, register_pass


class AutodiffError(KilnError):
    """Autodiff cannot differentiate this graph (a missing rule, a non-scalar output...)."""


def differentiate(graph: Graph, of: Value, wrt: Sequence[Value], seed: Value | None = None) -> list[Value]:
    """Append the backward of ``of`` w.r.t. each of ``wrt``; returns the gradients in order.

    ``of`` must be a floating-point scalar (or one-element tensor) unless a ``seed`` cotangent of its type is given.
    """
    return differentiate_outputs(graph, [of], wrt, [seed])


def differentiate_outputs(graph: Graph, outputs: Sequence[Value], wrt: Sequence[Value],
                          seeds: Sequence[Value | None], on_cotangent: CotangentHook | None = None) -> list[Value]:
    """Append ``sum_k seeds[k]^T d outputs[k] / d wrt`` for each of ``wrt``, from one reverse walk; returns them in order.

    Each seed is a cotangent of its output's type, or ``None`` for a floating-point scalar output (then 1; ones for a
    one-element output, as PyTorch's). An output may repeat (its seeds add up) or be one of ``wrt``; one that no
    ``wrt`` reaches contributes nothing.
    ``on_cotangent(value, cotangent)``, if given, sees each value's cotangent once it is complete (before it flows to
    the value's operands) and returns the cotangent to use instead (eager ``tensor.register_hook``).
    """
    if len(seeds) != len(outputs):
        raise AutodiffError(f"differentiate_outputs needs one seed per output, got {len(seeds)} for {len(outputs)} outputs")
    for index, (output, seed) in enumerate(zip(outputs, seeds)):
        _check_seed(index, output, seed)
    outputs, wrt = _expand_composites_without_rules(graph, outputs, wrt)
    path = ops_between(graph, wrt, outputs)
    varying = {id(v) for v in wrt} | {id(r) for op in path for r in op.results}
    builder = Builder(graph, location="autodiff")
    cotangents: dict[Value, Value] = {}
    for output, seed in zip(outputs, seeds):
        _accumulate(builder, cotangents, output, seed if seed is not None else _implicit_seed(builder, output))
    for op in reversed(path):
        if on_cotangent is not None:
            _complete(op.results, cotangents, on_cotangent)
        _backpropagate(builder, graph, op, cotangents, varying)
    if on_cotangent is not None:
        _complete([v for v in dict.fromkeys(wrt) if v.producer is None or v.producer not in path], cotangents, on_cotangent)
    return [cotangents.get(value) or _zeros(builder, value.type) for value in wrt]


CotangentHook = Callable[[Value, Value], Value]
"""``(value, its complete cotangent) -> the cotangent to propagate``."""


def _complete(values: Sequence[Value], cotangents: dict[Value, Value], on_cotangent: CotangentHook) -> None:
    for value in values:
        if value in cotangents:
            cotangents[value] = on_cotangent(value, cotangents[value])


def _implicit_seed(builder: Builder, output: Value) -> Value:
    """1 of the output's type: a scalar's, or ones for another one-element output, as PyTorch's implicit gradient."""
    return builder.constant(np.ones(output.type.shape), output.type.dtype, name_hint="seed")


def _one_element(output: Value) -> bool:
    return all(isinstance(dim, int) and dim == 1 for dim in output.type.shape)


def _check_seed(index: int, output: Value, seed: Value | None) -> None:
    if seed is None and (not _one_element(output) or not output.type.dtype.is_float):
        raise AutodiffError(f"autodiff needs a floating-point scalar to differentiate, got {output.type}"
                            f"{f' (output {index})' if index else ''}; reduce it first (e.g. .sum()) or give it a seed")
    if seed is not None and (seed.type.shape != output.type.shape or seed.type.dtype != output.type.dtype):
        raise AutodiffError(f"the seed of output {index} is {seed.type}, but the output is {output.type}; a seed (the "
                            "output's cotangent) must have its output's shape and dtype")


def ops_between(graph: Graph, wrt: Sequence[Value], of: Value | Sequence[Value]) -> list[Op]:
    """Differentiable ops that depend on some ``wrt`` and that ``of`` (one value or several) depends on, in graph order."""
    varying = set(map(id, wrt))
    forward = []
    for op in graph.ops:
        if not has_trait(op.name, "non_differentiable") and any(id(v) in varying for v in op.operands):
            forward.append(op)
            varying.update(id(r) for r in op.results if r.type.dtype.is_float)
    needed = {id(of)} if isinstance(of, Value) else set(map(id, of))
    path = []
    for op in reversed(forward):
        if any(id(r) in needed for r in op.results):
            path.append(op)
            needed.update(id(v) for v in op.operands)
    return path[::-1]


def _expand_composites_without_rules(graph: Graph, outputs: Sequence[Value], wrt: Sequence[Value]) -> tuple[list[Value], list[Value]]:
    """Expand the composites on the path that have no VJP rule; ``outputs`` and ``wrt`` follow their results to the
    values replacing them (an output made by ``nn.layer_norm_grad`` in a Hessian: its seed would otherwise reach
    nothing, and with several outputs one expansion may replace the producer of another)."""
    outputs, wrt = list(outputs), list(wrt)
    while True:
        pending = [op for op in ops_between(graph, wrt, outputs) if op.name not in VJP_RULES and lookup(op.name).is_composite]
        if not pending:
            return outputs, wrt
        for op in pending:
            replaced = dict(zip(map(id, op.results), decompose_op(graph, op)))
            outputs = [replaced.get(id(value), value) for value in outputs]
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
    half = computes_in_half(op)
    rule_op, rule_g = widened_rule_inputs(builder, op, g) if half else (op, g)
    for operand, cotangent in zip(op.operands, rule(builder, rule_op, rule_g)):
        if cotangent is None or id(operand) not in varying or not operand.type.dtype.is_float:
            continue
        if half and has_trait(op.name, "elementwise"):  # torch: the elementwise backward rounds to half, then
            cotangent = summed_in_float32(builder, rounded(builder, cotangent, operand), operand.type, unbroadcast)
            _accumulate(builder, cotangents, operand, cotangent)  # sum_to_size adds in float32, rounding once
            continue
        cotangent = unbroadcast(builder, cotangent, operand.type.with_dtype(cotangent.type.dtype))
        _accumulate(builder, cotangents, operand, rounded(builder, cotangent, operand) if half else cotangent)


def _accumulate(builder: Builder, cotangents: dict[Value, Value], value: Value, cotangent: Value) -> None:
    """Fan-in: a value read by several ops (or seeded as several outputs) gets the sum of their cotangents."""
    previous = cotangents.get(value)
    cotangents[value] = cotangent if previous is None else builder.add(previous, cotangent)


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
