"""Generates one straight-line Python function for a whole graph.

```python
def mlp(x, w1, b1):
    N = x.shape[0]
    h = k_tensor_matmul(x, w1)
    ...
    return (loss, w1_new)
```

Kernels and constant attributes are bound in the function's namespace, so
a call costs one NumPy call per op and nothing else. Attributes that mention
symbolic dims are emitted as tuple expressions over the bound dims.
"""

from __future__ import annotations

import re
from typing import Any

from kiln.backends.base import LoweringTable
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.printer import assign_names


def generate(graph: Graph, table: LoweringTable) -> tuple[str, dict[str, Any]]:
    """The source of a function computing ``graph`` and the namespace it runs in."""
    names = variable_names(graph)
    namespace: dict[str, Any] = {}
    lines = [f"def {function_name(graph)}({', '.join(names[v] for v in graph.inputs)}):"]
    lines += _bind_symbols(graph, names)
    for index, op in enumerate(graph.ops):
        lines.append("    " + _emit_op(index, op, names, table, graph, namespace))
    outputs = "".join(f"{names[v]}, " for v in graph.outputs)
    lines.append(f"    return ({outputs})")
    return "\n".join(lines) + "\n", namespace


def compile_function(graph: Graph, table: LoweringTable) -> tuple[Any, str]:
    source, namespace = generate(graph, table)
    code = compile(source, f"<kiln:{graph.name}>", "exec")
    exec(code, namespace)
    return namespace[function_name(graph)], source


def function_name(graph: Graph) -> str:
    return "graph_" + re.sub(r"\W", "_", graph.name)


def variable_names(graph: Graph) -> dict[Value, str]:
    """``v_<printed name>`` for every value: valid, unique, and apart from kernel and attribute names."""
    names: dict[Value, str] = {}
    used: set[str] = set()
    for value, printed in assign_names(graph).items():
        base = "v_" + re.sub(r"\W", "_", printed)
        name, suffix = base, 1
        while name in used:
            name, suffix = f"{base}_{suffix}", suffix + 1
        used.add(name)
        names[value] = name
    return names


def _bind_symbols(graph: Graph, names: dict[Value, str]) -> list[str]:
    lines, seen = [], set()
    for value in graph.inputs:
        for axis, dim in enumerate(value.type.shape):
            if isinstance(dim, str) and dim not in seen:
                seen.add(dim)
                lines.append(f"    {symbol_variable(dim)} = {names[value]}.shape[{axis}]")
    return lines


def _emit_op(index: int, op: Op, names: dict[Value, str], table: LoweringTable, graph: Graph, namespace: dict[str, Any]) -> str:
    results = ", ".join(names[r] for r in op.results) + ("," if len(op.results) > 1 else "")
    if op.name == "tensor.constant":
        return f"{results} = {_attr_expression(op.attrs['value'], f'c{index}', namespace)}"
    kernel = table.require(op, graph)
    kernel_name = "k_" + op.name.replace(".", "_")
    namespace[kernel_name] = kernel
    arguments = [names[v] for v in op.operands]
    for key, value in op.attrs.items():
        arguments.append(f"{key}={_attr_expression(value, f'a{index}_{key}', namespace)}")
    return f"{results} = {kernel_name}({', '.join(arguments)})"


def _attr_expression(value: Any, name: str, namespace: dict[str, Any]) -> str:
    """A literal for tuples that contain symbolic dims, else a namespace constant."""
    if isinstance(value, tuple) and _mentions_symbol(value):
        return "(" + "".join(f"{_dim_expression(item)}, " for item in value) + ")"
    namespace[name] = value
    return name


def _mentions_symbol(value: Any) -> bool:
    return any(isinstance(item, str) or (isinstance(item, tuple) and _mentions_symbol(item)) for item in value)


def _dim_expression(item: Any) -> str:
    return symbol_variable(item) if isinstance(item, str) else repr(item)


def symbol_variable(symbol: str) -> str:
    return f"dim_{symbol}"

