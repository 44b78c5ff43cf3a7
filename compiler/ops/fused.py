"""The ``fused`` dialect: fusion groups as region ops whose body is held in attributes.

A fused op reads the group's external operands and returns the group's values
used outside it. Its body is a list of primitive sub-ops in order:

```
%h, %a = "fused.elementwise"(%mm, %bias)
    {ops = ["tensor.add", "tensor.relu"], args = [[0, 1], [2]], params = [[], []], yields = [2, 3]}
```

Slot numbering: ``0 .. n-1`` are the operands, ``n + k`` is the result of
sub-op ``k``. ``params`` holds each sub-op's attributes as a flat
``[key, value, ...]`` list (defaults fill the rest). The shape rule re-runs
the sub-ops' shape rules, so the verifier and parser check bodies for free;
the decomposition re-emits the sub-ops, so a backend without a fused kernel
simply unfuses (``decompose``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import TensorType
from kiln.compiler.ops.registry import infer_types, lookup, register_decomposition, register_op

if TYPE_CHECKING:
    from kiln.compiler.ir.builder import Builder
    from kiln.compiler.ir.core import Value

FUSED_OPS = ("fused.elementwise", "fused.matmul")
"""``fused.elementwise``: elementwise ops, maybe a reduction sink; ``fused.matmul``: a matmul and its epilogue."""

Body = tuple[tuple[str, ...], tuple[tuple[int, ...], ...], tuple[tuple[Any, ...], ...], tuple[int, ...]]


def sub_op_attrs(name: str, params: tuple[Any, ...]) -> dict[str, Any]:
    """A sub-op's full attributes: its defaults overridden by the flat ``[key, value, ...]`` list."""
    if len(params) % 2:
        raise ShapeError(f"params of sub-op {name} must be [key, value, ...] pairs, got {list(params)}")
    return {**lookup(name).defaults, **dict(zip(params[::2], params[1::2]))}


def encode_params(attrs: dict[str, Any]) -> tuple[Any, ...]:
    """The flat ``[key, value, ...]`` form of a sub-op's attributes (``None`` values stay defaults)."""
    return tuple(item for key, value in attrs.items() if value is not None for item in (key, value))


def _body_types(operands: tuple[TensorType, ...], ops: tuple[str, ...], args, params) -> list[TensorType]:
    if not (len(ops) == len(args) == len(params)):
        raise ShapeError(f"fused body needs one args and one params entry per op, got {len(ops)}, {len(args)}, {len(params)}")
    slots = list(operands)
    for name, arg, param in zip(ops, args, params):
        if any(not 0 <= slot < len(slots) for slot in arg):
            raise ShapeError(f"fused body: {name} reads slot {list(arg)} but only {len(slots)} are defined before it")
        results = infer_types(name, [slots[slot] for slot in arg], sub_op_attrs(name, param))
        if len(results) != 1:
            raise ShapeError(f"fused body: {name} has {len(results)} results; sub-ops must have one")
        slots.append(results[0])
    return slots


def fused_shape(*operands: TensorType, ops: tuple[str, ...], args, params, yields) -> tuple[TensorType, ...]:
    slots = _body_types(operands, tuple(ops), tuple(args), tuple(params))
    if not yields or any(not len(operands) <= slot < len(slots) for slot in yields):
        raise ShapeError(f"fused body yields {list(yields)}, which must name sub-op results {len(operands)}..{len(slots) - 1}")
    return tuple(slots[slot] for slot in yields)


def fused_decomposition(b: "Builder", *operands: "Value", ops, args, params, yields) -> tuple["Value", ...]:
    # fused(x...) = the body's sub-ops, one op each
    slots = list(operands)
    for name, arg, param in zip(ops, args, params):
        slots.append(b.op(name, *[slots[slot] for slot in arg], **sub_op_attrs(name, param)))
    return tuple(slots[slot] for slot in yields)


for _name in FUSED_OPS:
    register_op(_name, traits={"composite", "fused"}, ops=(), args=(), params=(), yields=())(fused_shape)
    register_decomposition(_name)(fused_decomposition)
