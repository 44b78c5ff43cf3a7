"""stack-summed-products: a sum of like products becomes one product of the stacked operands, summed.

A weight used at every step of an unrolled loop (an RNN's ``W_hh``) gets its gradient as a sum of one small product
per step, which autodiff adds up: ``dW = g_0^T h_0 + g_1^T h_1 + ...``, and its bias the sum of the steps' row sums.
Stacking the steps' operands along a new leading axis gives one batched product summed over that axis, which
``fold-batch-sum-matmul`` (and the NumPy code generator) compute as one GEMM with a T-times longer inner dimension,
instead of T thin GEMMs and T-1 additions:

```
%p0 = "tensor.matmul"(%a0, %b0)         %a = stack(%a0, %a1)              stack(x_i) is
%p1 = "tensor.matmul"(%a1, %b1)   ->    %b = stack(%b0, %b1)              concat(expand_dims(x_i, 0), axis=0)
%s = "tensor.add"(%p0, %p1)             %s = "tensor.reduce_sum"("tensor.matmul"(%a, %b)) {axes = [0]}

sum_i reduce_sum(x_i, axes)   ->   reduce_sum(stack(x_i), axes = [0] + (axes shifted by one))
```

A sum is a tree of ``tensor.add`` ops of one type whose inner results only the tree reads; its terms are grouped
by kind and operand types, and each group of two or more 2-D matmuls (or reductions over the same axes) becomes one
term. When every operand of a stack is the same transpose, the stack is built from the transposes' inputs and
transposed once, so it copies contiguous rows and CSE can share it (a weight's and its bias's gradients stack the
same ``g_i``). The stacked operands stay alive until the sum: T steps' worth of them instead of one.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import normalize_axes
from kiln.compiler.passes.manager import Pass, register_pass
from kiln.compiler.passes.rewrite import replace_uses


@register_pass
@dataclass(frozen=True)
class StackSummedProducts(Pass):
    name = "stack-summed-products"

    def run(self, graph: Graph) -> bool:
        outputs = {id(value) for value in graph.outputs}
        sums = summation_trees(graph, outputs)
        for root, terms in sums:
            restack_sum(graph, root, terms, outputs)
        return bool(sums)


def summation_trees(graph: Graph, outputs: set[int]) -> list[tuple[Op, list[Value]]]:
    """Each outermost ``tensor.add`` tree with a group to stack, and its terms in order."""
    inner: set[int] = set()
    found = []
    for op in reversed(graph.ops):
        if op.name != "tensor.add" or id(op) in inner:
            continue
        terms = sum_terms(op, outputs, inner)
        if any(len(group) > 1 for group in like_terms(terms, outputs).values()):
            found.append((op, terms))
    return found


def sum_terms(root: Op, outputs: set[int], inner: set[int]) -> list[Value]:
    """The terms of the add tree at ``root``: operands, expanding adds of ``root``'s type that only the tree reads."""
    terms, pending = [], list(reversed(root.operands))
    while pending:
        value = pending.pop()
        producer = value.producer
        if producer is not None and producer.name == "tensor.add" and value.type == root.result.type \
                and len(value.uses) == 1 and id(value) not in outputs:
            inner.add(id(producer))
            pending.extend(reversed(producer.operands))
        else:
            terms.append(value)
    return terms


def like_terms(terms: list[Value], outputs: set[int]) -> dict[tuple, list[Value]]:
    """Terms that stack together, keyed by kind and operand types: 2-D matmuls, and reductions over the same axes."""
    groups: dict[tuple, list[Value]] = {}
    for term in terms:
        key = stacking_key(term, outputs)
        if key is not None:
            groups.setdefault(key, []).append(term)
    return groups


def stacking_key(term: Value, outputs: set[int]) -> tuple | None:
    producer = term.producer
    if producer is None or len(term.uses) != 1 or id(term) in outputs:
        return None
    operand_types = tuple(operand.type for operand in producer.operands)
    if producer.name == "tensor.matmul" and all(t.rank == 2 for t in operand_types):
        return producer.name, operand_types
    if producer.name == "tensor.reduce_sum" and not producer.attrs["keepdims"]:
        return producer.name, operand_types, normalize_axes(producer.attrs["axes"], operand_types[0].rank)
    return None


def restack_sum(graph: Graph, root: Op, terms: list[Value], outputs: set[int]) -> None:
    """Rebuild the sum at ``root`` with each group of like terms as one stacked term."""
    b = Builder(graph, insert_before=root, location=root.location)
    groups = like_terms(terms, outputs)
    stacked = {id(group[0]): stacked_term(b, group) for group in groups.values() if len(group) > 1}
    merged = {id(term) for group in groups.values() if len(group) > 1 for term in group}
    kept = [stacked.get(id(term), term) for term in terms if id(term) in stacked or id(term) not in merged]
    total = kept[0]
    for term in kept[1:]:
        total = b.add(total, term)
    total.name_hint = root.result.name_hint
    replace_uses(graph, root.result, total)
    erase_dead_tree(graph, root, outputs)


def stacked_term(b: Builder, group: list[Value]) -> Value:
    """One term equal to the sum of ``group`` (like products), in the order of a stack the graph already has."""
    producers = in_existing_order([term.producer for term in group])
    if producers[0].name == "tensor.matmul":
        left = stack(b, [p.operands[0] for p in producers])
        right = stack(b, [p.operands[1] for p in producers])
        return b.reduce_sum(b.matmul(left, right), axes=(0,), keepdims=False)
    axes = normalize_axes(producers[0].attrs["axes"], producers[0].operands[0].type.rank)
    return b.reduce_sum(stack(b, [p.operands[0] for p in producers]), axes=(0,) + tuple(a + 1 for a in axes), keepdims=False)


def in_existing_order(producers: list[Op]) -> list[Op]:
    """``producers`` reordered (the sum does not care) to match a stack of their operands that the graph already
    builds, which CSE then reuses: an RNN's input projection stacks the same step gradients in time order, while
    autodiff adds them up in reverse."""
    for position in range(len(producers[0].operands)):
        bases = [stack_base(p.operands[position]) for p in producers]
        order = existing_stack_order(bases)
        if order is not None:
            return [producers[index] for index in order]
    return producers


def stack_base(value: Value) -> Value:
    """What ``stack`` joins for ``value``: a transpose's input, else the value itself."""
    producer = value.producer
    return producer.operands[0] if producer is not None and producer.name == "tensor.transpose" else value


def existing_stack_order(values: list[Value]) -> list[int] | None:
    """Indices into ``values`` in the order that an existing ``concat(expand_dims(v, 0) for v in ...)`` joins them."""
    index_of = {id(value): index for index, value in enumerate(values)}
    for expanded_use, _ in values[0].uses:
        if expanded_use.name != "tensor.expand_dims" or tuple(expanded_use.attrs["axes"]) != (0,):
            continue
        for concat, _ in expanded_use.result.uses:
            if concat.name != "tensor.concat" or concat.attrs["axis"] != 0 or len(concat.operands) != len(values):
                continue
            joined = [operand.producer.operands[0] if operand.producer is not None and operand.producer.name == "tensor.expand_dims"
                      else None for operand in concat.operands]
            order = [index_of.get(id(value)) for value in joined]
            if None not in order and len(set(order)) == len(values):
                return order
    return None


def stack(b: Builder, values: list[Value]) -> Value:
    """``values`` (one type) joined along a new leading axis; transposes of one perm are stacked below the transpose."""
    perms = {value.producer.attrs["perm"] if value.producer is not None and value.producer.name == "tensor.transpose"
             else None for value in values}
    if len(perms) == 1 and None not in perms:
        (perm,) = perms
        inner = stack(b, [stack_base(value) for value in values])
        return b.transpose(inner, perm=(0,) + tuple(axis + 1 for axis in perm))
    return b.concat(*(b.expand_dims(value, axes=(0,)) for value in values), axis=0)


def erase_dead_tree(graph: Graph, root: Op, outputs: set[int]) -> None:
    """Erase ``root`` and, transitively, the adds and summed products that only it read."""
    pending, erased = [root], set()
    while pending:
        op = pending.pop()
        if id(op) in erased or any(result.uses or id(result) in outputs for result in op.results):
            continue
        erased.add(id(op))
        producers = [operand.producer for operand in op.operands]
        graph.erase(op)
        pending.extend(p for p in producers if p is not None and p.name in ("tensor.add", "tensor.matmul", "tensor.reduce_sum"))
