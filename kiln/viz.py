"""Draw a graph: one node per input and op, edges along data flow, fusion groups in one colour each.

```python
draw_graph(graph, "graph.svg")      # Graphviz ``dot`` when installed, else networkx + matplotlib
print(to_dot(graph))                # the DOT text itself
```

The groups are those ``fuse-elementwise`` would form (``elementwise_groups``);
ops outside every group are grey, already fused ops (``fused.*``) are gold.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from kiln.compiler.errors import KilnError
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.passes.fuse_elementwise import elementwise_groups

PALETTE = ["#8dd3c7", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5", "#bc80bd", "#ccebc5", "#ffed6f", "#bebada"]
PLAIN, FUSED, INPUT = "#e0e0e0", "#ffd700", "#ffffff"


def node_colours(graph: Graph) -> dict[Op, str]:
    """The fill colour of each op: its fusion group's, gold for fused ops, grey otherwise."""
    colours = {op: (FUSED if op.name.startswith("fused.") else PLAIN) for op in graph.ops}
    for index, members in enumerate(elementwise_groups(graph)):
        for op in members:
            colours[op] = PALETTE[index % len(PALETTE)]
    return colours


def _node_ids(graph: Graph) -> tuple[dict[Value, str], dict[Op, str]]:
    inputs = {value: f"in{i}" for i, value in enumerate(graph.inputs)}
    ops = {op: f"op{i}" for i, op in enumerate(graph.ops)}
    return inputs, ops


def _edges(graph: Graph) -> list[tuple[str, str]]:
    inputs, ops = _node_ids(graph)
    edges = []
    for op in graph.ops:
        for operand in op.operands:
            source = inputs.get(operand) or (ops.get(operand.producer) if operand.producer is not None else None)
            if source is not None:
                edges.append((source, ops[op]))
    return edges


def to_dot(graph: Graph) -> str:
    """The graph in Graphviz's DOT language, top to bottom."""
    inputs, ops = _node_ids(graph)
    colours = node_colours(graph)
    lines = [f'digraph "{graph.name}" {{', "  rankdir=TB; node [style=filled, shape=box, fontname=Helvetica, fontsize=10];"]
    for value, node in inputs.items():
        lines.append(f'  {node} [label="{value.name_hint or node}\\n{value.type}", shape=ellipse, fillcolor="{INPUT}"];')
    for op, node in ops.items():
        lines.append(f'  {node} [label="{op.name}", fillcolor="{colours[op]}"];')
    lines += [f"  {source} -> {target};" for source, target in _edges(graph)]
    return "\n".join(lines + ["}"]) + "\n"


def draw_graph(graph: Graph, path: str, engine: str = "auto") -> str:
    """Write ``graph`` to ``path`` (``.svg``, ``.png`` or ``.pdf``); returns the engine used (``dot`` or ``matplotlib``)."""
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension not in ("svg", "png", "pdf"):
        raise KilnError(f"cannot draw to {path}: use a .svg, .png or .pdf file name")
    if engine in ("auto", "dot") and shutil.which("dot"):
        subprocess.run(["dot", f"-T{extension}", "-o", path], input=to_dot(graph), text=True, check=True)
        return "dot"
    if engine == "dot":
        raise KilnError("Graphviz `dot` is not on PATH; install graphviz or use engine='matplotlib'")
    _draw_with_matplotlib(graph, path)
    return "matplotlib"


def _draw_with_matplotlib(graph: Graph, path: str) -> None:
    import networkx

    from kiln.runtime.callbacks import new_figure

    inputs, ops = _node_ids(graph)
    colours = node_colours(graph)
    network = networkx.DiGraph(_edges(graph))
    network.add_nodes_from(list(inputs.values()) + list(ops.values()))
    positions = _layered_positions(network)
    labels = {node: (value.name_hint or node) for value, node in inputs.items()} | {node: op.name for op, node in ops.items()}
    fills = {node: INPUT for node in inputs.values()} | {node: colours[op] for op, node in ops.items()}
    figure = new_figure(figsize=(max(6, 1.6 * _width(positions)), max(4, 0.7 * _depth(positions))), dpi=100)
    axes = figure.subplots()
    axes.set_axis_off()
    networkx.draw_networkx(network, positions, ax=axes, labels=labels, node_color=[fills[n] for n in network.nodes],
                           node_shape="s", node_size=900, font_size=7, edgecolors="#555555", arrowsize=8)
    figure.tight_layout()
    figure.savefig(path)


def _layered_positions(network: Any) -> dict[str, tuple[float, float]]:
    """Rows by topological generation (inputs on top), nodes spread evenly in each row."""
    import networkx

    positions = {}
    for depth, layer in enumerate(networkx.topological_generations(network)):
        for index, node in enumerate(sorted(layer)):
            positions[node] = (index - (len(layer) - 1) / 2, -depth)
    return positions


def _width(positions: dict[str, tuple[float, float]]) -> float:
    xs = [x for x, _ in positions.values()]
    return max(xs) - min(xs) + 1 if xs else 1


def _depth(positions: dict[str, tuple[float, float]]) -> float:
    return -min((y for _, y in positions.values()), default=0) + 1
