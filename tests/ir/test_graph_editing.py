"""``Graph``'s editing primitives: deferred insertion before an anchor (placed when ``ops`` is next read, in creation
order, nested anchors included), erasing an anchor, and appending while insertions are pending."""

from __future__ import annotations

import pytest

from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph
from kiln.compiler.ir.types import DType, TensorType


def chain_graph():
    """``x -> neg -> exp -> log``, returned with its three ops."""
    graph = Graph("g")
    x = graph.add_input(TensorType((3,), DType.f32), "x")
    b = Builder(graph)
    a = b.neg(x)
    e = b.exp(a)
    graph.outputs = [b.log(e)]
    return graph, x, graph.ops[:]


def names(graph):
    return [op.name.split(".")[1] for op in graph.ops]


def test_ops_inserted_before_an_anchor_land_before_it_in_creation_order():
    graph, x, (neg, exp, log) = chain_graph()
    before_exp = Builder(graph, insert_before=exp)
    before_exp.tanh(x)
    before_exp.sqrt(x)
    Builder(graph, insert_before=neg).abs(x)
    assert names(graph) == ["abs", "neg", "tanh", "sqrt", "exp", "log"]


def test_an_op_inserted_before_a_pending_op_lands_before_it():
    graph, x, (neg, exp, log) = chain_graph()
    pending = Builder(graph, insert_before=log).tanh(x).producer
    Builder(graph, insert_before=pending).sqrt(x)
    assert names(graph) == ["neg", "exp", "sqrt", "tanh", "log"]


def test_appending_keeps_pending_insertions_in_place():
    graph, x, (neg, exp, log) = chain_graph()
    Builder(graph, insert_before=exp).tanh(x)
    Builder(graph).sqrt(x)
    assert names(graph) == ["neg", "tanh", "exp", "log", "sqrt"]


def test_erasing_an_anchor_leaves_what_was_inserted_before_it_in_its_place():
    graph, x, (neg, exp, log) = chain_graph()
    replacement = Builder(graph, insert_before=exp).exp(x)
    graph.replace_all_uses(exp.results[0], replacement)
    graph.erase(exp)
    assert names(graph) == ["neg", "exp", "log"]
    assert graph.ops[1] is replacement.producer and graph.ops[2].operands[0] is replacement


def test_erasing_a_pending_op_places_the_others():
    graph, x, (neg, exp, log) = chain_graph()
    pending = Builder(graph, insert_before=log).tanh(x).producer
    Builder(graph, insert_before=log).sqrt(x)
    graph.erase(pending)
    assert names(graph) == ["neg", "exp", "sqrt", "log"]


def test_an_insertion_before_an_op_outside_the_graph_is_an_error():
    graph, x, _ = chain_graph()
    other, _, (stranger, _, _) = chain_graph()
    Builder(graph, insert_before=stranger).tanh(x)
    with pytest.raises(ValueError, match="tensor.tanh was inserted before an op that is not in @g"):
        graph.ops


def test_replacing_the_op_list_with_insertions_pending_is_an_error():
    graph, x, (neg, exp, log) = chain_graph()
    Builder(graph, insert_before=exp).tanh(x)
    with pytest.raises(ValueError, match="read graph.ops first"):
        graph.ops = [neg, exp, log]
