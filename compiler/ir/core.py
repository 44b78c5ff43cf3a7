"""The IR's three records: ``Value``, ``Op`` and ``Graph``.

An ``Op`` is one generic record (name, operands, results, attrs); what an op
means lives in tables keyed by its name (``kiln.compiler.ops.registry``), so
printer, parser, verifier and passes stay generic. Every ``Value`` knows its
producer and its uses, and the ``Graph`` keeps those use lists exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Literal, Sequence

from kiln.compiler.ir.types import TensorType

RegionRole = Literal["checkpoint", "output", "recompute"]


@dataclass(frozen=True)
class Region:
    """The activation-checkpoint region an op belongs to (``kiln.utils.checkpoint``), printed after its type.

    ``checkpoint(3)``: traced inside region 3; its results are not kept for the backward (``rematerialize``
    recomputes them there). ``checkpoint(3, output)``: inside it too, but its results are what the region returns,
    which stay saved. ``recompute(3)``: a copy ``rematerialize`` made in the backward; CSE never merges it into
    the forward's op.
    """

    id: int
    role: RegionRole = "checkpoint"

    def __str__(self) -> str:
        if self.role == "recompute":
            return f"recompute({self.id})"
        return f"checkpoint({self.id}{', output' if self.role == 'output' else ''})"


class Value:
    """An SSA value: a graph input or one result of an op. Hashes by identity."""

    __slots__ = ("type", "producer", "index", "name_hint", "uses", "__weakref__")  # weakly keyed: eager arrays

    def __init__(self, type: TensorType, producer: "Op | None" = None, index: int = 0, name_hint: str | None = None):
        self.type = type
        self.producer = producer
        """The op that defines this value, or ``None`` for a graph input."""
        self.index = index
        """Which result of ``producer`` this is."""
        self.name_hint = name_hint
        """A name the printer keeps where it can (``%h``)."""
        self.uses: list[tuple[Op, int]] = []
        """``(op, operand index)`` for every operand slot that reads this value."""

    def __repr__(self) -> str:
        return f"Value(%{self.name_hint or '?'}: {self.type})"


class Op:
    """One operation: ``results = name(operands) {attrs}``."""

    __slots__ = ("name", "operands", "results", "attrs", "location", "region")

    def __init__(
        self,
        name: str,
        operands: Sequence[Value],
        result_types: Sequence[TensorType],
        attrs: dict[str, Any] | None = None,
        location: str | None = None,
        region: Region | None = None,
    ):
        self.name = name
        self.operands: list[Value] = []
        self.results = [Value(t, self, i) for i, t in enumerate(result_types)]
        self.attrs: dict[str, Any] = dict(attrs or {})
        self.location = location
        """Where the op came from in user code (``model.py:14 in forward``), for messages."""
        self.region = region
        """Its activation-checkpoint region, if it was traced inside ``kiln.utils.checkpoint.checkpoint`` or recomputes one."""
        for operand in operands:
            self._attach(operand)

    @property
    def result(self) -> Value:
        """The single result of a one-result op."""
        if len(self.results) != 1:
            raise ValueError(f"{self.name} has {len(self.results)} results; use .results")
        return self.results[0]

    def set_operand(self, index: int, value: Value) -> None:
        old = self.operands[index]
        old.uses.remove((self, index))
        self.operands[index] = value
        value.uses.append((self, index))

    def drop_operands(self) -> None:
        """Detach from every operand's use list (before erasing this op)."""
        for index, operand in enumerate(self.operands):
            operand.uses.remove((self, index))
        self.operands = []

    def _attach(self, value: Value) -> None:
        if not isinstance(value, Value):
            raise TypeError(f"operand of {self.name} must be a Value, got {type(value).__name__}")
        value.uses.append((self, len(self.operands)))
        self.operands.append(value)

    def __repr__(self) -> str:
        return f"Op({self.name}, {len(self.operands)} operands, {len(self.results)} results)"


class Graph:
    """A function in the IR: typed inputs, ops in a valid order, outputs.

    ``insert_before(op, anchor)`` defers the insertion: ``ops`` places every deferred op when next read, in one pass.
    A rewrite sweep that inserts replacements before thousands of ops would otherwise search and shift the list once
    per insertion (quadratic: 5 s of a 27k-op unrolled LSTM step's compile went to ``list.index``). ``erase`` defers
    the removal the same way: a pass erasing thousands of ops would search the list for each.
    """

    def __init__(self, name: str = "main", inputs: Iterable[Value] = (), ops: Iterable[Op] = (), outputs: Iterable[Value] = ()):
        self.name = name
        self.inputs: list[Value] = list(inputs)
        self._ops: list[Op] = list(ops)
        self._deferred: dict[Op, list[Op]] = {}
        """Anchor -> ops to insert right before it, in creation order (an anchor may itself be deferred)."""
        self._erased: set[Op] = set()
        """Ops erased since ``ops`` was last read, removed from it when it is next read."""
        self.outputs: list[Value] = list(outputs)

    @property
    def ops(self) -> list[Op]:
        """The ops in program order (the list itself: passes may edit it)."""
        if self._deferred or self._erased:
            self._place_deferred()
        return self._ops

    @ops.setter
    def ops(self, ops: list[Op]) -> None:
        if self._deferred:
            raise ValueError("Graph.ops was replaced while insertions were deferred; read graph.ops first to place them")
        self._erased = set()
        self._ops = ops

    def insert_before(self, op: Op, anchor: Op) -> Op:
        """Insert ``op`` right before ``anchor`` (after ops inserted before it earlier), placed when ``ops`` is next read."""
        self._deferred.setdefault(anchor, []).append(op)
        return op

    def _place_deferred(self) -> None:
        """Place the deferred insertions and drop the erased ops, in one pass over the list."""
        deferred, self._deferred = self._deferred, {}
        erased, self._erased = self._erased, set()
        placed: list[Op] = []

        def place(op: Op) -> None:
            for earlier in deferred.pop(op, ()):
                place(earlier)
            if op not in erased:
                placed.append(op)

        for op in self._ops:
            if op in deferred or op in erased:
                place(op)
            else:
                placed.append(op)
        if deferred:
            lost = next(iter(deferred.values()))[0]
            raise ValueError(f"{lost.name} was inserted before an op that is not in @{self.name}")
        self._ops = placed

    def add_input(self, type: TensorType, name_hint: str | None = None) -> Value:
        value = Value(type, None, len(self.inputs), name_hint)
        self.inputs.append(value)
        return value

    def insert(self, op: Op, index: int | None = None) -> Op:
        """Append ``op`` (deferred insertions stay pending), or insert it before position ``index`` of ``ops``."""
        self._ops.append(op) if index is None else self.ops.insert(index, op)
        return op

    def erase(self, op: Op) -> None:
        """Remove an op whose results are unused."""
        for result in op.results:
            if result.uses or result in self.outputs:
                raise ValueError(f"cannot erase {op.name}: its result is still used")
        op.drop_operands()
        self._erased.add(op)  # removed when ``ops`` is next read; what was to go before it then takes its place

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every reader of ``old`` (ops and graph outputs) read ``new`` instead."""
        for op, index in list(old.uses):
            op.set_operand(index, new)
        if any(value is old for value in self.outputs):  # rebuild only when needed: passes call this per op
            self.outputs = [new if value is old else value for value in self.outputs]

    def values(self) -> Iterator[Value]:
        yield from self.inputs
        for op in self.ops:
            yield from op.results

    def users(self, value: Value) -> list[Op]:
        """Distinct ops reading ``value``, in graph order of first use."""
        seen: dict[int, Op] = {}
        for op, _ in value.uses:
            seen.setdefault(id(op), op)
        return list(seen.values())

    def __str__(self) -> str:
        from kiln.compiler.ir.printer import print_graph

        return print_graph(self)

    def __repr__(self) -> str:
        return f"Graph(@{self.name}, {len(self.inputs)} inputs, {len(self.ops)} ops, {len(self.outputs)} outputs)"


def drop_all_operands(ops: Iterable[Op]) -> None:
    """``op.drop_operands()`` for every op of ``ops`` (erased together), each operand's use list rebuilt once, in order.

    One by one, each drop searches its operand's use list: quadratic in a value's readers (a weight or a constant
    read at every step of an unrolled loop, whose dead readers a DCE drops).
    """
    dropping = set(ops)
    touched: dict[int, Value] = {}
    for op in dropping:
        for operand in op.operands:
            touched[id(operand)] = operand
        op.operands = []
    for value in touched.values():
        value.uses[:] = [use for use in value.uses if use[0] not in dropping]


def clone_graph(graph: Graph) -> Graph:
    """A structural copy: new values and ops, same types, attrs, names, locations and checkpoint regions."""
    copy = Graph(graph.name)
    mapping: dict[Value, Value] = {}
    for value in graph.inputs:
        mapping[value] = copy.add_input(value.type, value.name_hint)
    for op in graph.ops:
        new = Op(op.name, [mapping[v] for v in op.operands], [r.type for r in op.results], op.attrs, op.location, op.region)
        for old_result, new_result in zip(op.results, new.results):
            new_result.name_hint = old_result.name_hint
            mapping[old_result] = new_result
        copy.ops.append(new)
    copy.outputs = [mapping[v] for v in graph.outputs]
    return copy
