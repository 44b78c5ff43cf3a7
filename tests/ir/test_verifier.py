"""The verifier: accepts well-formed graphs, and names the op, the problem and the IR for malformed ones."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.compiler.errors import VerificationError
from kiln.compiler.ir import Builder, DType, Graph, Op, TensorType, parse, verify

F32 = TensorType(("N", 4), DType.f32)


def build_graph() -> Graph:
    """``y = exp(x) + x; z = softmax(y)``, returning ``z`` and ``y``."""
    graph = Graph("main")
    x = graph.add_input(F32, "x")
    b = Builder(graph)
    h = b.exp(x, name_hint="h")
    y = b.add(h, x, name_hint="y")
    graph.outputs = [b.softmax(y, name_hint="z"), y]
    return graph


def verification_error(graph: Graph) -> str:
    with pytest.raises(VerificationError) as info:
        verify(graph)
    return str(info.value)


def assert_noted_under(message: str, op_line: str, note: str) -> None:
    """The printed IR has ``note`` on an ``error:`` line under the line of the bad op, after a caret underline."""
    lines = message.splitlines()
    index = next(i for i, line in enumerate(lines) if line.startswith("  " + op_line))
    assert set(lines[index + 1].strip()) == {"^"}
    assert lines[index + 2].startswith("  error: ") and note in lines[index + 2]


def test_accepts_well_formed_graphs():
    verify(build_graph())
    verify(Graph("empty"))


def test_accepts_a_parsed_graph_with_constants_and_every_family():
    text = (
        "func @f(%x: tensor<Nx3xf32>, %l: tensor<Nxi64>, %lr: tensor<f32>, %w: tensor<3x3xf32>) {\n"
        '  %c = "tensor.constant"() {value = dense<[[1.0, 0.0, -2.5], [0.5, 1e-45, 3.0], [0.0, 0.0, 1.0]]>} : () -> tensor<3x3xf32>\n'
        '  %h = "tensor.matmul"(%x, %c) : (tensor<Nx3xf32>, tensor<3x3xf32>) -> tensor<Nx3xf32>\n'
        '  %loss = "nn.cross_entropy"(%h, %l) : (tensor<Nx3xf32>, tensor<Nxi64>) -> tensor<f32>\n'
        '  %w2 = "optim.sgd_update"(%w, %c, %lr) : (tensor<3x3xf32>, tensor<3x3xf32>, tensor<f32>) -> tensor<3x3xf32>\n'
        "  return %loss, %w2 : tensor<f32>, tensor<3x3xf32>\n}\n"
    )
    verify(parse(text))


def test_rejects_a_wrong_result_type_naming_the_op():
    graph = build_graph()
    graph.ops[0].results[0].type = F32.with_dtype(DType.f64)
    message = verification_error(graph)
    assert message.startswith('verification of @main failed at op #0 `%h = "tensor.exp"`: result types (tensor<Nx4xf64>)')
    assert "differ from (tensor<Nx4xf32>), which the shape rule of tensor.exp infers" in message
    assert_noted_under(message, '%h = "tensor.exp"(%x)', "result types (tensor<Nx4xf64>) differ")


def test_rejects_a_use_before_its_definition():
    graph = build_graph()
    graph.ops[0], graph.ops[1] = graph.ops[1], graph.ops[0]
    message = verification_error(graph)
    assert message.startswith('verification of @main failed at op #0 `%y = "tensor.add"`: use before definition')
    assert "operand #0 %h is defined later, by op #1; move that op above this one" in message
    assert_noted_under(message, '%y = "tensor.add"(%h, %x)', "use before definition")


def test_rejects_a_missing_use_entry():
    graph = build_graph()
    add = graph.ops[1]
    add.operands[1].uses.remove((add, 1))
    message = verification_error(graph)
    assert 'at op #1 `%y = "tensor.add"`: operand #1 %x lists this use 0 times in its use list, not once' in message
    assert_noted_under(message, '%y = "tensor.add"', "use list")


def test_rejects_an_operand_assigned_without_updating_uses():
    graph = build_graph()
    softmax = graph.ops[2]
    softmax.operands[0] = graph.inputs[0]  # bypasses set_operand: %x gains no use, %y keeps a stale one
    message = verification_error(graph)
    assert 'at op #1 `%y = "tensor.add"`: result #0 %y lists a use as operand #0 of op #2 (nn.softmax), which reads another value' in message


def test_rejects_a_use_by_an_op_outside_the_graph():
    graph = build_graph()
    Op("tensor.neg", [graph.inputs[0]], [F32])  # attaches a use to %x but is never inserted
    message = verification_error(graph)
    assert message.startswith("verification of @main failed: graph input %x lists a use by a tensor.neg op that is not in the graph")
    assert "func @main(%x: tensor<Nx4xf32>)" in message


def test_rejects_a_duplicate_use_entry():
    graph = build_graph()
    exp = graph.ops[0]
    exp.operands[0].uses.append((exp, 0))
    assert 'at op #0 `%h = "tensor.exp"`: operand #0 %x lists this use 2 times' in verification_error(graph)


def test_unregistered_op_suggests_close_names():
    graph = build_graph()
    graph.insert(Op("tensor.expp", [graph.inputs[0]], [F32]), 1)
    assert "op 'tensor.expp' is not registered; register it with @register_op; did you mean tensor.exp" in verification_error(graph)


def test_rejects_an_op_listed_twice():
    graph = build_graph()
    graph.ops.insert(2, graph.ops[1])
    message = verification_error(graph)
    assert "the same op object appears twice in graph.ops, at #1 and #2" in message


def test_rejects_an_unregistered_op():
    graph = build_graph()
    graph.insert(Op("q.q", [graph.inputs[0]], [F32]), 1)
    message = verification_error(graph)
    assert "op 'q.q' is not registered; register it with @register_op; registered ops: " in message and "tensor.add" in message
    assert_noted_under(message, '%0 = "q.q"(%x)', "not registered")


def test_rejects_an_operand_from_an_erased_op():
    graph = build_graph()
    orphan = Op("tensor.neg", [graph.inputs[0]], [F32])
    graph.inputs[0].uses.remove((orphan, 0))
    graph.ops[1].set_operand(0, orphan.result)
    message = verification_error(graph)
    assert 'op #1 `%y = "tensor.add"`: operand #0 is a result of a tensor.neg op that is not in the graph' in message
    assert '%y = "tensor.add"(%<undefined>, %x)' in message


def test_rejects_an_input_of_another_graph():
    graph = build_graph()
    stranger = Graph("other").add_input(F32, "s")
    graph.ops[0].set_operand(0, stranger)
    assert "operand #0 is an input of another graph, not of @main" in verification_error(graph)


def test_rejects_attributes_the_shape_rule_refuses():
    graph = build_graph()
    graph.ops[2].attrs["axis"] = 5
    message = verification_error(graph)
    assert ('op #2 `%z = "nn.softmax"`: the shape rule of nn.softmax rejects its operands and attributes: Dimension out '
            'of range (expected to be in range of [-2, 1], but got 5)') in message


def test_rejects_an_undefined_output():
    graph = build_graph()
    other = build_graph()
    graph.outputs.append(other.ops[0].result)
    message = verification_error(graph)
    assert message.startswith("verification of @main failed: return operand #2 is not defined in @main")
    assert "return %z, %y, %<undefined>" in message


def test_reports_only_the_first_problem():
    graph = build_graph()
    graph.ops[0].results[0].type = F32.with_dtype(DType.f64)
    graph.ops[2].attrs["axis"] = 5
    message = verification_error(graph)
    assert message.count("error:") == 1 and "tensor.exp" in message.splitlines()[0]


def test_constants_are_checked_against_their_value():
    graph = Graph("main")
    constant = Builder(graph).constant(np.ones((2, 3), np.float32))
    graph.outputs = [constant]
    verify(graph)
    constant.type = TensorType((3, 2), DType.f32)
    assert '`%0 = "tensor.constant"`: result types (tensor<3x2xf32>) differ from (tensor<2x3xf32>)' in verification_error(graph)
