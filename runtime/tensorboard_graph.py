"""A kiln graph as TensorFlow's ``GraphDef``, for TensorBoard's Graphs tab (``SummaryWriter.add_graph``).

One ``NodeDef`` per graph input (op ``Input`` for the traced arguments, ``Parameter`` for the parameters read,
named by their module path with ``/`` so TensorBoard folds each module's into a group), one per op (op = the kiln
op name, inputs = its operands' nodes, ``name:k`` for an op's k-th result, attrs = the op's attributes as text) and
one ``Output`` per graph result. Every node carries ``_output_shapes``; a symbolic dim is size -1 with its name.

    GraphDef      node 1 (repeated NodeDef), versions 4 (VersionDef: producer 1)
    NodeDef       name 1, op 2, input 3 (repeated string), attr 5 (map<string, AttrValue>)
    AttrValue     one of list 1 (ListValue: shape 7), s 2, type 6
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.printer import assign_names, format_attr, unique_name
from kiln.compiler.ir.types import TensorType
from kiln.frontend.trace import TensorSpec, trace
from kiln.runtime.protobuf_wire import bytes_field, int_field, message_field, repeated_bytes_field
from kiln.runtime.tensorboard_summaries import as_array

_TENSORFLOW_DTYPES = {"f32": 1, "f64": 2, "i32": 3, "u8": 4, "i16": 5, "i8": 6, "i64": 9, "bool": 10, "bf16": 14,
                      "f16": 19}  # fmt: skip
"""kiln dtype -> ``tensorflow.DataType``."""
_GRAPH_DEF_PRODUCER = 22
"""``VersionDef.producer``, as torch's exporter writes it."""


def trace_model(model: Callable[..., Any], input_to_model: Any) -> tuple[Graph, int]:
    """``model`` traced on symbolic inputs shaped like ``input_to_model`` (one tensor or array, a tuple or list of
    them, or ``None`` for none); the graph and its number of arguments."""
    arguments = [] if input_to_model is None else input_to_model
    arguments = list(arguments) if isinstance(arguments, (tuple, list)) else [arguments]
    arrays = [as_array(argument, f"add_graph: input_to_model[{i}]") for i, argument in enumerate(arguments)]
    if not callable(model):
        raise TypeError(f"add_graph: model must be a Module or function, got {type(model).__name__}")
    return trace(model, *(TensorSpec(array.shape, array.dtype.name) for array in arrays)), len(arrays)


def graph_def(graph: Graph, argument_count: int) -> bytes:
    """``graph`` as a serialized ``GraphDef``; its first ``argument_count`` inputs are the traced arguments."""
    node_names = _node_names(graph)
    nodes = [_input_node(value, node_names, index < argument_count) for index, value in enumerate(graph.inputs)]
    nodes += [_op_node(op, node_names) for op in graph.ops]
    nodes += [_node(f"output{i}", "Output", [_reference(v, node_names)], v.type) for i, v in enumerate(graph.outputs)]
    return repeated_bytes_field(1, nodes) + message_field(4, int_field(1, _GRAPH_DEF_PRODUCER))


def _node_names(graph: Graph) -> dict[Value | Op, str]:
    """Inputs by their names (``0.weight`` -> ``0/weight``); ops as ``<op>_<result name>`` (``matmul_3``)."""
    printed = assign_names(graph)
    used: set[str] = set()
    names: dict[Value | Op, str] = {}
    for value in graph.inputs:
        names[value] = unique_name(printed[value].replace(".", "/"), used)
    for op in graph.ops:
        result_name = printed[op.results[0]] if op.results else str(len(names))
        names[op] = unique_name(f"{op.name.rsplit('.', 1)[-1]}_{result_name.replace('.', '_')}", used)
    return names


def _reference(value: Value, names: Mapping[Value | Op, str]) -> str:
    """How a NodeDef names ``value``: its node, with ``:k`` for an op's k-th result (k > 0)."""
    if value.producer is None:
        return names[value]
    return names[value.producer] + (f":{value.index}" if value.index else "")


def _input_node(value: Value, names: Mapping[Value | Op, str], is_argument: bool) -> bytes:
    return _node(names[value], "Input" if is_argument else "Parameter", [], value.type)


def _op_node(op: Op, names: Mapping[Value | Op, str]) -> bytes:
    inputs = [_reference(operand, names) for operand in op.operands]
    attrs = {key: bytes_field(2, format_attr(value)) for key, value in op.attrs.items() if value is not None}
    return _node(names[op], op.name, inputs, *(result.type for result in op.results), attrs=attrs)


def _node(name: str, op: str, inputs: list[str], *types: TensorType, attrs: Mapping[str, bytes] | None = None
          ) -> bytes:  # fmt: skip
    attrs = dict(attrs or {})
    attrs["_output_shapes"] = message_field(1, repeated_bytes_field(7, (_shape(t) for t in types)))
    if types and types[0].dtype.value in _TENSORFLOW_DTYPES:
        attrs["dtype"] = int_field(6, _TENSORFLOW_DTYPES[types[0].dtype.value], keep_default=True)
    entries = (bytes_field(1, key) + message_field(2, value) for key, value in sorted(attrs.items()))
    header = bytes_field(1, name) + bytes_field(2, op)
    return header + repeated_bytes_field(3, inputs) + repeated_bytes_field(5, entries)


def _shape(tensor_type: TensorType) -> bytes:
    """``TensorShapeProto``: dim 2 (``Dim``: size 1, name 2); a symbol is size -1 named by it."""
    dims = (int_field(1, d) if isinstance(d, int) else int_field(1, -1) + bytes_field(2, d) for d in tensor_type.shape)
    return repeated_bytes_field(2, dims)
