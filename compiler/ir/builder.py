"""The builder: creates ops with inferred result types at an insertion point.

``b.op("tensor.add", x, y)`` is the generic form; every registered op is also a
method named after it without its dialect (``b.add(x, y)``, ``b.softmax(x,
axis=-1)``), looked up in ``tensor``, then ``nn``, ``optim`` and ``comm``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.ir.core import Graph, Op, Region, Value
from kiln.compiler.ir.types import DType, TensorType
from kiln.compiler.ops.registry import OPS, infer_types, lookup

DIALECT_ORDER = ("tensor", "nn", "optim", "comm")


class Builder:
    """Appends ops to ``graph`` (or inserts them before ``insert_before``)."""

    def __init__(self, graph: Graph, insert_before: Op | None = None, location: str | None = None, region: Region | None = None):
        self.graph = graph
        self.insert_before = insert_before
        self.location = location
        """Stamped on every op built, for error messages."""
        self.region = region if region is not None else getattr(insert_before, "region", None)
        """Stamped on every op built: the trace's open checkpoint region. Ops built before an anchor default to the
        anchor's region: they are its rewrite (a decomposition, a canonical form), so they stay in its region."""

    def op(self, name: str, *operands: Value, name_hint: str | None = None, **attrs: Any) -> Any:
        """Build op ``name``; returns its result, or a tuple of results for multi-result ops."""
        op = self.create(name, list(operands), attrs, name_hint)
        return op.results[0] if len(op.results) == 1 else tuple(op.results)

    def create(self, name: str, operands: list[Value], attrs: dict[str, Any], name_hint: str | None = None) -> Op:
        full_attrs = _full_attrs(name, attrs)
        result_types = infer_types(name, [v.type for v in operands], full_attrs)
        return self._place(Op(name, operands, result_types, full_attrs, self.location, self.region), name_hint)

    def create_typed(self, name: str, operands: list[Value], attrs: dict[str, Any], result_types: list[TensorType]) -> Op:
        """``create`` for a caller that knows the result types: a pass regrouping ops whose types are inferred already
        (fusion: a fused op's shape rule re-runs the shape rule of every op of its body). The verifier still checks them."""
        return self._place(Op(name, operands, result_types, _full_attrs(name, attrs), self.location, self.region), None)

    def _place(self, op: Op, name_hint: str | None) -> Op:
        if name_hint is not None:
            for result in op.results:
                result.name_hint = name_hint
        if self.insert_before is None:
            self.graph.insert(op)
        else:
            self.graph.insert_before(op, self.insert_before)
        return op

    def constant(self, value: Any, dtype: DType | str | None = None, name_hint: str | None = None) -> Value:
        array = np.asarray(value, dtype=None if dtype is None else DType.of(dtype).numpy)
        return self.op("tensor.constant", value=array, name_hint=name_hint)

    def scalar_like(self, value: float, like: Value) -> Value:
        """A 0-d constant with ``like``'s dtype, which broadcasts against it."""
        return self.constant(value, like.type.dtype)

    def __getattr__(self, short_name: str) -> Any:
        for dialect in DIALECT_ORDER:
            name = f"{dialect}.{short_name}"
            if name in OPS:
                return lambda *operands, **attrs: self.op(name, *operands, **attrs)
        raise AttributeError(f"Builder has no op named {short_name!r} in dialects {', '.join(DIALECT_ORDER)}")


def _full_attrs(name: str, attrs: dict[str, Any]) -> dict[str, Any]:
    """``attrs`` over op ``name``'s defaults, in canonical form; a TypeError for an attribute it does not take."""
    definition = lookup(name)
    full_attrs = {key: canonical_attr(key, value) for key, value in {**definition.defaults, **attrs}.items()}
    unknown = set(full_attrs) - set(definition.defaults)
    if unknown:
        raise TypeError(f"{name} has no attribute {', '.join(sorted(unknown))}; it takes {sorted(definition.defaults)}")
    return full_attrs


def canonical_attr(key: str, value: Any) -> Any:
    """Attributes in one canonical form: lists become tuples, dtypes become ``DType``, numpy scalars become Python ones."""
    if key == "dtype" and value is not None:
        return DType.of(value)
    if isinstance(value, (list, tuple)):
        return tuple(canonical_attr("", item) for item in value)
    if isinstance(value, np.generic):
        return value.item()
    return value

