"""NumPy statements that write an op's result into given storage (``out=``), for the planned code generator.

An emitter takes the operand expressions, the output expression and the op's
attributes, and returns statements. Ops listed in ``IN_PLACE`` may write into
the storage of an operand of the same type (NumPy ufuncs read each element
before writing it). Ops without an emitter are called through the lowering
table and allocate their result.

```python
OUT_KERNELS["tensor.relu"](["b3"], "b3", {})  ->  ["np.maximum(b3, 0, out=b3)"]
```
"""

from __future__ import annotations

from typing import Any, Callable

Emitter = Callable[[list[str], str, dict[str, Any]], list[str]]

UFUNCS = {
    "tensor.neg": "np.negative",
    "tensor.exp": "np.exp",
    "tensor.log": "np.log",
    "tensor.tanh": "np.tanh",
    "tensor.sqrt": "np.sqrt",
    "tensor.sin": "np.sin",
    "tensor.cos": "np.cos",
    "tensor.floor": "np.floor",
    "tensor.ceil": "np.ceil",
    "tensor.round": "np.rint",
    "tensor.atan": "np.arctan",
    "tensor.asin": "np.arcsin",
    "tensor.acos": "np.arccos",
    "tensor.add": "np.add",
    "tensor.sub": "np.subtract",
    "tensor.mul": "np.multiply",
    "tensor.div": "np.divide",
    "tensor.pow": "np.power",
    "tensor.maximum": "np.maximum",
    "tensor.minimum": "np.minimum",
    "tensor.equal": "np.equal",
    "tensor.not_equal": "np.not_equal",
    "tensor.less": "np.less",
    "tensor.less_equal": "np.less_equal",
    "tensor.greater": "np.greater",
    "tensor.greater_equal": "np.greater_equal",
    "tensor.bitwise_and": "np.bitwise_and",
    "tensor.bitwise_or": "np.bitwise_or",
    "tensor.bitwise_xor": "np.bitwise_xor",
    "tensor.bitwise_not": "np.invert",
}
REDUCTIONS = {"tensor.reduce_sum": "np.add.reduce", "tensor.reduce_mean": "np.mean"}
"""``np.add.reduce`` is what ``np.sum`` calls, without its Python wrapper. ``reduce_max`` keeps its kernel (an empty
reduction gives the dtype's lowest value there)."""


def _ufunc(function: str) -> Emitter:
    return lambda args, out, attrs: [f"{function}({', '.join(args)}, out={out})"]


def _reduction(function: str) -> Emitter:
    def emit(args: list[str], out: str, attrs: dict[str, Any]) -> list[str]:
        axes = attrs["axes"] if attrs["axes"] is None or isinstance(attrs["axes"], int) else tuple(attrs["axes"])
        return [f"{function}({args[0]}, axis={axes!r}, keepdims={bool(attrs['keepdims'])}, out={out})"]

    return emit


def row_reduction(x: str, out: str, width: int, mean: bool) -> list[str]:
    """A sum (or mean) over the last axis of ``x`` (``out_nn.row_sums_into``: a GEMV with ones where contiguous)."""
    lines = [f"_nn.row_sums_into({x}, {out})"]
    return lines + [f"np.divide({out}, {width}, out={out})"] if mean else lines


def _relu(args: list[str], out: str, attrs: dict[str, Any]) -> list[str]:
    return [f"np.maximum({args[0]}, 0, out={out})"]


def _cast(args: list[str], out: str, attrs: dict[str, Any]) -> list[str]:
    if attrs["dtype"].name in ("f16", "bf16", "f32"):  # half_cast.cast_into: faster NumPy float16 and ml_dtypes casts
        return [f"_nn.cast_into({args[0]}, {out})"]
    return [f"np.copyto({out}, {args[0]}, casting='unsafe')"]


def _one_hot(args: list[str], out: str, attrs: dict[str, Any]) -> list[str]:
    # onehot(y)_c = [y == c]; the comparison's bools cast safely into the float output
    return [f"np.equal({args[0]}[..., None], np.arange({int(attrs['num_classes'])}), out={out})"]


def _into(function: str, *attributes: str) -> Emitter:
    """A call of ``out_nn.<function>(operands..., out, attribute=...)`` (bound as ``_nn`` in the generated code)."""

    def emit(args: list[str], out: str, attrs: dict[str, Any]) -> list[str]:
        keywords = "".join(f", {name}={attrs[name]!r}" for name in attributes)
        return [f"_nn.{function}({', '.join(args)}, {out}{keywords})"]

    return emit


def _cross_entropy_grad(args: list[str], out: str, attrs: dict[str, Any]) -> list[str]:
    # lowering_losses.cross_entropy_grad_into, bound as _cross_entropy_grad in the generated code
    keywords = "".join(f", {name}={attrs[name]!r}" for name in ("reduction", "ignore_index", "label_smoothing"))
    return [f"_cross_entropy_grad({', '.join(args)}, out={out}{keywords})"]


def _concatenate(args: list[str], out: str, attrs: dict[str, Any]) -> list[str]:
    return [f"np.concatenate(({''.join(arg + ', ' for arg in args)}), axis={int(attrs['axis'])}, out={out})"]


OUT_KERNELS: dict[str, Emitter] = {
    **{name: _ufunc(function) for name, function in UFUNCS.items()},
    **{name: _reduction(function) for name, function in REDUCTIONS.items()},
    "tensor.matmul": _ufunc("np.matmul"),
    "tensor.relu": _relu,
    "tensor.sigmoid": _into("sigmoid_into"),
    "tensor.cast": _cast,
    "tensor.one_hot": _one_hot,
    "tensor.where": _into("where_into"),
    "nn.softmax": _into("softmax_into", "axis"),
    "nn.gelu": _into("gelu_into", "approximate"),
    "nn.layer_norm": _into("layer_norm_into", "eps"),
    "nn.cross_entropy_grad": _cross_entropy_grad,
    "tensor.concat": _concatenate,
}
IN_PLACE = frozenset(UFUNCS) | {"tensor.relu", "tensor.sigmoid"}
"""Emitters that may overwrite an operand of the result's type (never matmul, reductions or cast)."""


def _transpose_view(args: list[str], attrs: dict[str, Any], literal: Callable[[Any], str], rank: int) -> str:
    perm = attrs["perm"]
    reverse = perm is None or tuple(perm) == tuple(reversed(range(len(perm))))
    return f"{args[0]}.T" if reverse else f"{args[0]}.transpose({literal(tuple(perm))})"


def _reshape_view(args: list[str], attrs: dict[str, Any], literal: Callable[[Any], str], rank: int) -> str:
    return f"{args[0]}.reshape({literal(attrs['shape'])})"


def index_expression(x: str, items: dict[int, str], rank: int) -> str:
    """``x[...]`` with ``items[axis]`` at those axes (of ``rank``) and ``:`` between; trailing ``:`` left out."""
    if not items:
        return x
    last = max(axis % rank for axis in items)
    parts = [items.get(axis, ":") for axis in range(last + 1)]
    if len(parts) == rank and not any(":" in part for part in parts):
        parts.append("...")  # every axis taken by an int: x[i, ...] is a 0-d view; x[i] would be a NumPy scalar, no out= target
    return f"{x}[{', '.join(parts)}]"


def _slice_view(args: list[str], attrs: dict[str, Any], literal: Callable[[Any], str], rank: int) -> str:
    # x[:, ..., start:stop:step] at the slice's axis (static bounds, checked by the shape rule)
    start, stop, step = (int(attrs[key]) for key in ("start", "stop", "step"))
    return index_expression(args[0], {attrs["axis"] % rank: f"{start}:{stop}" + (f":{step}" if step != 1 else "")}, rank)


def _squeeze_view(args: list[str], attrs: dict[str, Any], literal: Callable[[Any], str], rank: int) -> str:
    # x[:, 0] drops a size-1 axis (the shape rule checked the sizes), as np.squeeze does, ~5x faster
    return index_expression(args[0], {axis % rank: "0" for axis in attrs["axes"]}, rank)


def _expand_dims_view(args: list[str], attrs: dict[str, Any], literal: Callable[[Any], str], rank: int) -> str:
    # x[:, None] inserts an axis at that position of the result: axes count in the result's rank
    result_rank = rank + len(attrs["axes"])
    return index_expression(args[0], {axis % result_rank: "None" for axis in attrs["axes"]}, result_rank)


VIEWS: dict[str, Callable[[list[str], dict[str, Any], Callable[[Any], str], int], str]] = {
    "tensor.transpose": _transpose_view,
    "tensor.reshape": _reshape_view,
    "tensor.slice": _slice_view,
    "tensor.squeeze": _squeeze_view,
    "tensor.expand_dims": _expand_dims_view,
}
"""Movement ops emitted inline as a method call or basic indexing (a view, as their kernels return), not a kernel
call: ``np.expand_dims`` costs ~3 us a call, ``x[None]`` ~0.1 us (an unrolled LSTM has hundreds of them). Each takes
the operand expressions, the attributes, a literal maker and the operand's rank."""
