"""The op registry: one record per op with its shape rule, traits and decomposition.

```python
@register_op("tensor.matmul", traits={"pure"})
def matmul_shape(a: TensorType, b: TensorType) -> TensorType: ...
```

A shape rule takes the operand types positionally and the op's attributes as
keywords and returns the result type (or a tuple of them); it raises
``ShapeError`` with a message naming both shapes when they do not fit.
A composite op (``nn.*``, ``optim.*``) also registers a decomposition: a
function ``(builder, *operands, **attrs) -> Value | tuple[Value, ...]`` that
emits the same computation with primitives.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import TensorType

ShapeRule = Callable[..., "TensorType | tuple[TensorType, ...]"]


@dataclass
class OpDef:
    """What kiln knows about one op name."""

    name: str
    shape_rule: ShapeRule
    traits: frozenset[str] = frozenset()
    """``pure``, ``elementwise``, ``reduction``, ``composite``, ``movement``, ``non_differentiable``."""
    defaults: dict[str, Any] = field(default_factory=dict)
    """Attribute defaults filled in by the builder, so every op carries all its attributes."""
    decomposition: Callable[..., Any] | None = None

    @property
    def is_composite(self) -> bool:
        return self.decomposition is not None


OPS: dict[str, OpDef] = {}


def register_op(name: str, traits: set[str] | frozenset[str] = frozenset(), **defaults: Any) -> Callable[[ShapeRule], ShapeRule]:
    """Register ``name`` with the decorated shape rule; keyword arguments are attribute defaults."""

    def decorate(rule: ShapeRule) -> ShapeRule:
        if name in OPS:
            raise ValueError(f"op {name!r} is registered twice")
        OPS[name] = OpDef(name, rule, frozenset(traits) | {"pure"}, dict(defaults))
        return rule

    return decorate


def register_decomposition(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Attach the decorated function as the primitive expansion of composite op ``name``."""

    def decorate(expand: Callable[..., Any]) -> Callable[..., Any]:
        lookup(name).decomposition = expand
        return expand

    return decorate


def lookup(name: str) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise ShapeError(f"unknown op {name!r}; registered ops: {', '.join(sorted(OPS))}") from None


def infer_types(name: str, operand_types: list[TensorType], attrs: dict[str, Any]) -> tuple[TensorType, ...]:
    """Run ``name``'s shape rule; always returns a tuple of result types."""
    result = lookup(name).shape_rule(*operand_types, **attrs)
    return result if isinstance(result, tuple) else (result,)


def has_trait(name: str, trait: str) -> bool:
    return name in OPS and trait in OPS[name].traits
