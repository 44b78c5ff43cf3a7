"""Checks that a graph is well formed, and says where it is not.

In graph order, stopping at the first problem, ``verify`` checks that

- graph inputs are plain inputs, and every use they list is real;
- every op appears once in ``graph.ops`` and is registered;
- every operand is defined before the op that reads it (a graph input or a
  result of an earlier op: dominance in a straight-line graph);
- use lists are exact: ``(op, i)`` is in ``v.uses`` exactly once iff
  ``op.operands[i] is v``, and no use comes from an op outside the graph;
- re-running the op's shape rule gives its result types;
- every graph output is defined.

The error names the op and prints the whole IR with the message under it:

```
verification of @main failed at op #0 `%h = "tensor.exp"`: result types (tensor<3xf64>) differ from ...
func @main(%x: tensor<3xf32>) {
  %h = "tensor.exp"(%x) : (tensor<3xf32>) -> tensor<3xf64>
  ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  error: result types (tensor<3xf64>) differ from (tensor<3xf32>), which the shape rule of tensor.exp infers; ...
  return %h : tensor<3xf64>
}
```
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from kiln.compiler.errors import VerificationError
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.printer import assign_names, print_graph
from kiln.compiler.ir.types import TensorType
from kiln.compiler.ops.registry import OPS, infer_types

_FIX_USES = (
    "keep use lists in step with Op.set_operand, Graph.replace_all_uses and Graph.erase instead of editing op.operands"
)


def verify(graph: Graph) -> None:
    """Raise ``VerificationError`` describing the first malformed spot of ``graph``; return if it is well formed."""
    problem = _Checker(graph).first_problem()
    if problem is not None:
        raise VerificationError(_report(graph, problem))


@dataclass(frozen=True)
class Problem:
    """What is wrong, and the op to show it under (``None`` for a graph input or output)."""

    message: str
    op: Op | None = None


class _Checker:
    """The checks, in the order ``verify`` runs them; each returns a message or ``None``."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.names = assign_names(graph)
        self.positions: dict[Op, int] = {}
        """Each op's first position in ``graph.ops``."""
        for index, op in enumerate(graph.ops):
            self.positions.setdefault(op, index)
        self.defined: set[Value] = set()

    def first_problem(self) -> Problem | None:
        for value in self.graph.inputs:
            message = self.input_problem(value)
            if message:
                return Problem(message)
            self.defined.add(value)
        for index, op in enumerate(self.graph.ops):
            message = self.op_problem(op, index)
            if message:
                return Problem(message, op)
            self.defined.update(op.results)
        return self.output_problem()

    def name(self, value: Value) -> str:
        return f"%{self.names.get(value, '<undefined>')}"

    # Graph inputs and outputs.

    def input_problem(self, value: Value) -> str | None:
        if value.producer is not None:
            return f"graph input {self.name(value)} is a result of {value.producer.name}; graph inputs have no producer"
        return self.stale_use_problem(value, f"graph input {self.name(value)}")

    def output_problem(self) -> Problem | None:
        for index, value in enumerate(self.graph.outputs):
            if value not in self.defined:
                where = "an op outside the graph" if value.producer else "an input of another graph"
                return Problem(f"return operand #{index} is not defined in @{self.graph.name}: it is {where}")
        return None

    # Ops.

    def op_problem(self, op: Op, index: int) -> str | None:
        return (
            self.duplicate_problem(op, index)
            or self.registration_problem(op)
            or self.operands_problem(op)
            or self.results_problem(op)
            or self.type_problem(op)
        )

    def duplicate_problem(self, op: Op, index: int) -> str | None:
        first = self.positions[op]
        if first != index:
            return f"the same op object appears twice in graph.ops, at #{first} and #{index}; insert a new Op instead"
        return None

    def registration_problem(self, op: Op) -> str | None:
        if op.name in OPS:
            return None
        guesses = difflib.get_close_matches(op.name, OPS, n=3)
        hint = f"did you mean {' or '.join(guesses)}?" if guesses else f"registered ops: {', '.join(sorted(OPS))}"
        return f"op {op.name!r} is not registered; register it with @register_op; {hint}"

    def operands_problem(self, op: Op) -> str | None:
        for index, operand in enumerate(op.operands):
            message = self.dominance_problem(operand, index) or self.use_entry_problem(op, operand, index)
            if message:
                return message
        return None

    def dominance_problem(self, operand: Value, index: int) -> str | None:
        if operand in self.defined:
            return None
        producer = operand.producer
        if producer is None:
            return f"operand #{index} is an input of another graph, not of @{self.graph.name}"
        if producer in self.positions:
            later = f"operand #{index} {self.name(operand)} is defined later, by op #{self.positions[producer]}"
            return f"use before definition: {later}; move that op above this one"
        return f"operand #{index} is a result of a {producer.name} op that is not in the graph (erased while still used?)"

    def use_entry_problem(self, op: Op, operand: Value, index: int) -> str | None:
        count = operand.uses.count((op, index))
        if count == 1:
            return None
        return f"operand #{index} {self.name(operand)} lists this use {count} times in its use list, not once; {_FIX_USES}"

    def results_problem(self, op: Op) -> str | None:
        for index, result in enumerate(op.results):
            if result.producer is not op or result.index != index:
                return f"result #{index} {self.name(result)} does not record this op as its producer with index {index}"
            message = self.stale_use_problem(result, f"result #{index} {self.name(result)}")
            if message:
                return message
        return None

    def stale_use_problem(self, value: Value, described: str) -> str | None:
        """Every ``(user, i)`` in ``value.uses`` must be an op of the graph whose operand ``i`` is ``value``."""
        for user, index in value.uses:
            if user not in self.positions:
                return f"{described} lists a use by a {user.name} op that is not in the graph; {_FIX_USES}"
            if index >= len(user.operands) or user.operands[index] is not value:
                user_text = f"operand #{index} of op #{self.positions[user]} ({user.name})"
                return f"{described} lists a use as {user_text}, which reads another value; {_FIX_USES}"
        return None

    def type_problem(self, op: Op) -> str | None:
        try:
            inferred = infer_types(op.name, [value.type for value in op.operands], op.attrs)
        except (TypeError, ValueError) as error:  # ShapeError, or a shape rule called with the wrong arity
            return f"the shape rule of {op.name} rejects its operands and attributes: {error}"
        declared = tuple(result.type for result in op.results)
        if inferred != declared:
            differ = f"result types ({_types(declared)}) differ from ({_types(inferred)})"
            return f"{differ}, which the shape rule of {op.name} infers; build ops with the Builder, which infers them"
        return None


def _types(types: tuple[TensorType, ...]) -> str:
    return ", ".join(str(t) for t in types)


def _report(graph: Graph, problem: Problem) -> str:
    """The header naming the op, then the IR with the message under it."""
    where = "" if problem.op is None else f" at {_describe(graph, problem.op)}"
    header = f"verification of @{graph.name} failed{where}: {problem.message}"
    notes = {problem.op: problem.message} if problem.op is not None else None
    try:
        ir = print_graph(graph, notes=notes)
    except TypeError as error:  # an attribute without a text form
        ir = f"(the IR cannot be printed: {error})\n"
    return f"{header}\n{ir}"


def _describe(graph: Graph, op: Op) -> str:
    """``op #3 `%h = "tensor.matmul"```: its position, its result names and its name."""
    names = assign_names(graph)
    results = ", ".join(f"%{names.get(result, '?')}" for result in op.results)
    prefix = f"{results} = " if results else ""
    return f'op #{graph.ops.index(op)} `{prefix}"{op.name}"`'
