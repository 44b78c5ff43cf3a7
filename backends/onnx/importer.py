"""ONNX model -> kiln Graph.

```python
imported = kiln.import_onnx("model.onnx")
imported.graph            # inputs: the model's inputs, then its initializers (trainable)
imported.initializers     # name -> array, in the graph's input order
```

Integer tensors computed from shapes (``Shape``, ``Gather``, ``Concat``,
``Unsqueeze``...) are evaluated while importing, symbolic dims included, so
``Reshape``/``Expand`` become ops with static shape attributes, as in the
rest of kiln. An op kiln cannot import gets one error naming it, its node and
the opset.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from kiln.compiler.errors import KilnError, ShapeError
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.ir.types import Dim, DType, TensorType, is_float_array_dtype


class OnnxImportError(KilnError):
    """The ONNX file cannot be read, or uses something kiln cannot import."""


@dataclass(frozen=True)
class ShapeValue:
    """A 1-D integer tensor known while importing: dims (ints or symbols) and, when they come from one tensor, where."""

    dims: tuple[Dim, ...]
    source: Value | None = None
    axes: tuple[int, ...] = ()


@dataclass
class ImportedModel:
    graph: Graph
    initializers: dict[str, np.ndarray] = field(default_factory=dict)
    """Initializers that are not model inputs, by name; trainable ones are the last graph inputs, in this order."""
    input_names: list[str] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    defaults: dict[str, np.ndarray] = field(default_factory=dict)
    """Model inputs that have an initializer (a default value a caller may override), by name."""

    def module(self) -> Any:
        """A trainable Module running this graph: its trainable initializers become Parameters."""
        from kiln.frontend.graph_module import GraphModule

        return GraphModule(self.graph, self.initializers)


Handler = Callable[["ImportContext", Any, list[Any]], list[Any]]
HANDLERS: dict[str, Handler] = {}


def onnx_op(*op_types: str) -> Callable[[Handler], Handler]:
    def decorate(handler: Handler) -> Handler:
        for op_type in op_types:
            HANDLERS[op_type] = handler
        return handler

    return decorate


SUPPORTED_ELEMENT_TYPES = {10: DType.f16, 16: DType.bf16, 1: DType.f32, 11: DType.f64, 6: DType.i32, 7: DType.i64, 9: DType.bool,
                           2: DType.u8, 3: DType.i8, 5: DType.i16}
"""ONNX element type codes (``TensorProto.FLOAT16`` is 10, ``BFLOAT16`` 16) -> kiln dtypes."""


def element_dtype(code: int, where: str) -> DType:
    if code not in SUPPORTED_ELEMENT_TYPES:
        import onnx

        name = onnx.TensorProto.DataType.Name(code) if code in onnx.TensorProto.DataType.values() else str(code)
        raise OnnxImportError(f"{where}: element type {name} is not supported by kiln (f16, bf16, f32, f64, u8, i8, i16, i32, i64, bool)")
    return SUPPORTED_ELEMENT_TYPES[code]


class ImportContext:
    """The graph being built and what each ONNX name stands for (a Value, a known array or a ShapeValue)."""

    def __init__(self, name: str, opset: int):
        self.graph = Graph(_identifier(name) or "imported")
        self.builder = Builder(self.graph, location="onnx import")
        self.opset = opset
        self.env: dict[str, Any] = {}
        self.symbols: dict[str, str] = {}

    def value(self, item: Any) -> Value:
        """A graph value for ``item``: known arrays and shapes become constants."""
        if isinstance(item, Value):
            return item
        if isinstance(item, ShapeValue):
            if not all(isinstance(d, int) for d in item.dims):
                raise OnnxImportError(f"a shape tensor with symbolic dims {item.dims} is used as data; kiln cannot import that")
            item = np.array(item.dims, np.int64)
        return self.builder.constant(np.asarray(item))

    def op(self, name: str, *operands: Any, **attrs: Any) -> Any:
        return self.builder.op(name, *[self.value(o) for o in operands], **attrs)

    def symbol(self, dim_param: str) -> str:
        """A kiln symbol for an ONNX ``dim_param`` (kiln symbols contain no 'x')."""
        if dim_param not in self.symbols:
            candidate = re.sub(r"\W", "_", dim_param).replace("x", "X") or f"D{len(self.symbols)}"
            if candidate[0].isdigit():
                candidate = "D" + candidate
            self.symbols[dim_param] = candidate
        return self.symbols[dim_param]


def known(item: Any) -> bool:
    return not isinstance(item, Value)


def as_array(item: Any, what: str) -> np.ndarray:
    """A statically known integer/float array, or an error saying the input must be constant."""
    if isinstance(item, ShapeValue):
        if all(isinstance(d, int) for d in item.dims):
            return np.array(item.dims, np.int64)
        raise OnnxImportError(f"{what} has symbolic dims {item.dims}; kiln needs it static here")
    if isinstance(item, Value):
        raise OnnxImportError(f"{what} must be a constant (an initializer or computed from shapes); it is computed at run time")
    return np.asarray(item)


def as_dims(item: Any, what: str) -> tuple[Dim, ...]:
    if isinstance(item, ShapeValue):
        return item.dims
    return tuple(int(d) for d in as_array(item, what).reshape(-1))


def import_onnx(model_or_path: Any, trainable_initializers: bool = True, static_inputs: dict[str, np.ndarray] | None = None) -> ImportedModel:
    """Build a kiln graph from an ONNX model (a path, bytes or a ModelProto).

    ``static_inputs`` binds graph inputs to known values (like JAX's static arguments): shapes and axes
    fed as inputs then become attributes; those inputs leave the graph's signature.
    """
    model = _load(model_or_path)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    ctx = ImportContext(model.graph.name, opset)
    initializers = _initializer_arrays(model)
    ctx.env.update(static_inputs or {})
    declared = {i.name for i in model.graph.input}
    defaults = {name: array for name, array in initializers.items() if name in declared and name not in (static_inputs or {})}
    initializers = {name: array for name, array in initializers.items() if name not in declared}
    input_names = _declare_inputs(ctx, model, {**initializers, **(static_inputs or {})})
    for name, array in initializers.items():
        ctx.env[name] = ctx.graph.add_input(TensorType(array.shape, element_dtype_of(array, name)), name) if trainable_initializers and is_float_array_dtype(array.dtype) else array
    for index, node in enumerate(model.graph.node):
        _import_node(ctx, node, index)
    output_names = [o.name for o in model.graph.output]
    ctx.graph.outputs = [_output_value(ctx, name) for name in output_names]
    kept = {name: array for name, array in initializers.items() if isinstance(ctx.env.get(name), Value) and ctx.env[name] in ctx.graph.inputs}
    return ImportedModel(ctx.graph, kept, input_names, output_names, defaults)


def element_dtype_of(array: np.ndarray, name: str) -> DType:
    try:
        return DType.of(array.dtype)
    except ShapeError:
        raise OnnxImportError(f"initializer {name!r} has dtype {array.dtype}, which kiln does not support") from None


def _load(model_or_path: Any) -> Any:
    import onnx

    if isinstance(model_or_path, (str, os.PathLike)):
        if not os.path.exists(model_or_path):
            raise OnnxImportError(f"ONNX file {model_or_path} does not exist")
        try:
            model = onnx.load(model_or_path)
        except Exception as error:
            raise OnnxImportError(f"{model_or_path} is not a readable ONNX model (truncated or corrupt?): {error}") from None
    elif isinstance(model_or_path, bytes):
        model = onnx.load_from_string(model_or_path)
    else:
        model = model_or_path
    try:
        onnx.checker.check_model(model)
    except Exception as error:
        raise OnnxImportError(f"the ONNX model is invalid: {str(error).splitlines()[0]}") from None
    return model


def _initializer_arrays(model: Any) -> dict[str, np.ndarray]:
    from onnx import numpy_helper

    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def _declare_inputs(ctx: ImportContext, model: Any, initializers: dict[str, np.ndarray]) -> list[str]:
    names = []
    for graph_input in model.graph.input:
        if graph_input.name in initializers:
            continue
        tensor_type = graph_input.type.tensor_type
        dtype = element_dtype(tensor_type.elem_type, f"input {graph_input.name!r}")
        shape = tuple(_dim(ctx, d, graph_input.name, i) for i, d in enumerate(tensor_type.shape.dim))
        ctx.env[graph_input.name] = ctx.graph.add_input(TensorType(shape, dtype), graph_input.name)
        names.append(graph_input.name)
    return names


def _dim(ctx: ImportContext, dim: Any, input_name: str, axis: int) -> Dim:
    if dim.HasField("dim_value"):
        return int(dim.dim_value)
    return ctx.symbol(dim.dim_param or f"{input_name}_{axis}")


def _import_node(ctx: ImportContext, node: Any, index: int) -> None:
    where = f"node #{index} ({node.op_type} {node.name or node.output[0]!r}, opset {ctx.opset})"
    if node.domain not in ("", "ai.onnx"):
        raise OnnxImportError(f"{where}: domain {node.domain!r} is not standard ONNX; kiln imports only the default domain")
    handler = HANDLERS.get(node.op_type)
    if handler is None:
        raise OnnxImportError(f"{where}: kiln cannot import ONNX op {node.op_type!r}; importable ops: {', '.join(sorted(HANDLERS))}")
    missing = [name for name in node.input if name and name not in ctx.env]
    if missing:
        raise OnnxImportError(f"{where}: input {missing[0]!r} is defined by no node, initializer or graph input")
    inputs = [ctx.env[name] if name else None for name in node.input]
    try:
        outputs = handler(ctx, node, inputs)
    except (ShapeError, TypeError, ValueError) as error:
        raise OnnxImportError(f"{where}: {error}") from None
    for name, item in zip(node.output, outputs):
        if name:
            ctx.env[name] = item


def _output_value(ctx: ImportContext, name: str) -> Value:
    if name not in ctx.env:
        raise OnnxImportError(f"graph output {name!r} is produced by no node")
    return ctx.value(ctx.env[name])


def attributes(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


from kiln.backends.onnx import import_rules, import_rules_windows  # noqa: E402,F401  (fill HANDLERS)
