"""Which inputs of a training step the backend may overwrite: each parameter, optimizer-state and updated buffer array.

The runtime copies every new parameter and state back into the array it fed,
so the backend may as well write it there directly (JAX's ``donate_argnums``).
Backends read the map from ``graph.donations``; those that ignore it copy.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from kiln.compiler.ir.core import Graph, Value
    from kiln.runtime.step_graph import StepGraph


def step_donations(step_graph: "StepGraph", batch_inputs: int) -> dict[int, int]:
    """``{input index: output index}``: parameter ``i`` feeds input ``batch_inputs + i`` and comes back as output ``1 + i``;
    the optimizer states follow the frozen parameters (and the seed) as inputs and the new parameters as outputs; a
    buffer the step updates (BatchNorm's running statistics) is read among the frozen parameters and comes back among
    the last outputs."""
    graph = step_graph.graph
    count = len(step_graph.parameters)
    states = sum(len(names) for names in step_graph.state_names)
    first_state = batch_inputs + count + len(step_graph.frozen) + (1 if step_graph.reads_seed else 0)
    pairs = [(batch_inputs + i, 1 + i) for i in range(count)] + [(first_state + j, 1 + count + j) for j in range(states)]
    pairs += list(buffer_donations(step_graph, batch_inputs).items())
    return {source: target for source, target in pairs if _same_type(graph, source, target)}


def buffer_donations(step_graph: "StepGraph", batch_inputs: int) -> dict[int, int]:
    """``{input index: output index}`` of the buffers the step updates."""
    first_buffer_output = len(step_graph.graph.outputs) - len(step_graph.buffers)
    output_of = {id(b): first_buffer_output + j for j, b in enumerate(step_graph.buffers)}
    return {index: output_of[id(buffer)] for index, buffer in buffer_inputs(step_graph, batch_inputs).items()}


def buffer_inputs(step_graph: "StepGraph", batch_inputs: int) -> dict[int, Any]:
    """``{input index: buffer}`` of the buffers the step updates, read among the frozen parameters."""
    updated = {id(b) for b in step_graph.buffers}
    first_frozen = batch_inputs + len(step_graph.parameters)
    return {first_frozen + i: p for i, p in enumerate(step_graph.frozen) if id(p) in updated}


def _same_type(graph, source: int, target: int) -> bool:
    return source < len(graph.inputs) and target < len(graph.outputs) and graph.inputs[source].type == graph.outputs[target].type


def value_donations(graph: "Graph", pairs: "Iterable[tuple[Value, Value]]") -> dict[int, int]:
    """``{input index: output index}`` of the (input, output) pairs whose output may be written into the input's array:
    both in the graph, of one type, the output given once and the input never returned (``plan-memory`` checks the
    rest: that nothing reads the input after the write). Indices, as passes may replace the values themselves."""
    input_index = {id(value): index for index, value in enumerate(graph.inputs)}
    given = Counter(id(value) for value in graph.outputs)
    output_index = {id(value): index for index, value in reversed(list(enumerate(graph.outputs)))}
    return {input_index[id(source)]: output_index[id(target)] for source, target in pairs
            if id(source) in input_index and given[id(target)] == 1 and not given[id(source)] and source.type == target.type}
