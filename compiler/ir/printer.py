"""Prints a graph in the MLIR generic text form, one op a line.

```
func @mlp(%x: tensor<Nx784xf32>, %w1: tensor<784x128xf32>) {
  %h = "tensor.matmul"(%x, %w1) : (tensor<Nx784xf32>, tensor<784x128xf32>) -> tensor<Nx128xf32>
  return %h : tensor<Nx128xf32>
}
```

Name hints are kept (made unique with ``_1``, ``_2``...); values without a
hint get numbers. An op traced inside ``kiln.utils.checkpoint`` (or recomputed
for one) ends with its region: ``... -> tensor<Nx128xf32> checkpoint(0)``. An
attribute holding a sub-graph (``custom.vjp``'s ``backward``) prints as a nested
``func``, its lines indented one level deeper.
``parse(print(g))`` prints identically.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import numpy as np

from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import DType, is_float_array_dtype

_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.]")


def print_graph(graph: Graph, notes: Mapping[Op, str] | None = None) -> str:
    """The graph as text; ``notes`` puts a message under an op (the verifier's diagnostics)."""
    names = assign_names(graph)
    params = ", ".join(f"%{names[v]}: {v.type}" for v in graph.inputs)
    lines = [f"func @{graph.name}({params}) {{"]
    for op in graph.ops:
        line = "  " + format_op(op, names)
        lines.append(line)
        if notes and op in notes:
            lines.append("  " + "^" * (len(line) - 2))
            lines.extend(f"  error: {text}" for text in notes[op].splitlines())
    outputs = ", ".join(f"%{names.get(v, '<undefined>')}" for v in graph.outputs)
    output_types = ", ".join(str(v.type) for v in graph.outputs)
    lines.append(f"  return {outputs} : {output_types}" if graph.outputs else "  return")
    lines.append("}")
    return "\n".join(lines) + "\n"


def assign_names(graph: Graph) -> dict[Value, str]:
    """A unique printable name for every value, from its hint where it has one."""
    names: dict[Value, str] = {}
    used: set[str] = set()
    suffixes: dict[str, int] = {}
    counter = 0
    for value in graph.values():
        base = _NAME_CHARS.sub("_", value.name_hint or "")
        if not base:
            while str(counter) in used:
                counter += 1
            base = str(counter)
        names[value] = unique_name(base, used, suffixes)
    return names


def unique_name(base: str, used: set[str], suffixes: dict[str, int] | None = None) -> str:
    """``base``, or ``base_1``, ``base_2``... whichever is free first; the name is added to ``used``.

    ``suffixes`` (kept across calls with one ``used``, which only grows) remembers where each base's search stopped,
    so the k-th value named ``h`` (an unrolled loop's) does not try ``h_1`` .. ``h_k-1`` again: quadratic otherwise.
    """
    name, suffix = base, 1 if suffixes is None else suffixes.get(base, 1)
    if name in used and suffix > 1:
        name, suffix = f"{base}_{suffix}", suffix + 1
    while name in used:
        name, suffix = f"{base}_{suffix}", suffix + 1
    used.add(name)
    if suffixes is not None:
        suffixes[base] = suffix
    return name


def format_op(op: Op, names: Mapping[Value, str]) -> str:
    results = ", ".join(f"%{names.get(r, '?')}" for r in op.results)
    operands = ", ".join(f"%{names.get(v, '<undefined>')}" for v in op.operands)
    attrs = format_attrs(op.attrs)
    operand_types = ", ".join(str(v.type) for v in op.operands)
    result_types = ", ".join(str(r.type) for r in op.results)
    if len(op.results) != 1:
        result_types = f"({result_types})"
    prefix = f"{results} = " if op.results else ""
    region = f" {op.region}" if op.region is not None else ""
    return f'{prefix}"{op.name}"({operands}){attrs} : ({operand_types}) -> {result_types}{region}'


def format_attrs(attrs: Mapping[str, Any]) -> str:
    shown = [f"{key} = {format_attr(value)}" for key, value in attrs.items() if value is not None]
    return " {" + ", ".join(shown) + "}" if shown else ""


def format_attr(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, DType):
        return value.value  # the IR spelling (f32), not str(): kiln.float32 as torch's
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(format_attr(item) for item in value) + "]"
    if isinstance(value, np.ndarray):
        return format_dense(value)
    if isinstance(value, Graph):  # a sub-graph (custom.vjp's backward): a nested func, indented one level deeper
        return print_graph(value).rstrip("\n").replace("\n", "\n  ")
    raise TypeError(f"attribute value {value!r} of type {type(value).__name__} has no text form")


def format_dense(array: np.ndarray) -> str:
    """``dense<0.5>`` for a splat, else ``dense<[[1.0, 2.0], ...]>``; the shape comes from the op's type."""
    if array.size > 0 and _is_splat(array):
        return f"dense<{_format_element(array.flat[0])}>"
    return f"dense<{_format_nested(array)}>"


def _is_splat(array: np.ndarray) -> bool:
    """Every element equals the first, sign of zero included (``[0.0, -0.0]`` is no splat); nan never splats."""
    same = array == array.flat[0]
    if is_float_array_dtype(array.dtype):
        same &= np.signbit(array) == np.signbit(array.flat[0])
    return bool(same.all())


def _format_nested(array: np.ndarray) -> str:
    if array.ndim == 0:
        return _format_element(array[()])
    return "[" + ", ".join(_format_nested(row) for row in array) + "]"


def _format_element(item: Any) -> str:
    if isinstance(item, (bool, np.bool_)):
        return "true" if item else "false"
    if isinstance(item, np.floating):
        return _float_text(str(item))
    return format_number(item.item() if isinstance(item, np.generic) else item)


def format_number(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    return _float_text(repr(value))


def _float_text(text: str) -> str:
    """Floats always show as floats (``1.0``, ``1e-05``, ``inf``) so the parser can tell them from ints."""
    if any(mark in text for mark in ".eEna"):
        return text
    return text + ".0"
