"""Helpers the rewriting passes share."""

from __future__ import annotations

from kiln.compiler.ir.core import Graph, Value


def replace_uses(graph: Graph, old: Value, new: Value) -> None:
    """``graph.replace_all_uses``, rebuilding the outputs list only when ``old`` is in it.

    (That method rebuilds it on every call; a step graph returns every parameter and optimizer
    state, so passes that rewrite per op were quadratic in the model's depth.)
    """
    for op, index in list(old.uses):
        op.set_operand(index, new)
    if old in graph.outputs:
        outputs = list(graph.outputs)
        index = -1
        while old in outputs:  # list.index and `in` compare by identity in C: no Python loop over every output
            index = outputs.index(old, index + 1)
            outputs[index] = new
        graph.outputs = outputs
