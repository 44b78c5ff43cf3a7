"""Graph -> ONNX model: standard ops only (opset 20), symbolic dims as ``dim_param``.

```python
kiln.export_onnx(model, [kiln.TensorSpec(("N", 64), "float32")], "model.onnx")
```

Composites without an ONNX emitter are expanded into primitives first;
symbolic dims in shapes become ``Shape``/``Concat`` subgraphs over the inputs
that carry them, so one file serves every batch size.

Random draws are inputs (JAX's "randomness as an input"): ONNX cannot compute
NumPy's Philox-4x64 stream, which every kiln backend draws from, so each
``tensor.random_uniform`` becomes a graph input, ``uniform.<stream>``, after the
graph's own inputs. The model's ``kiln.random_inputs`` metadata (JSON) says how
to fill each one, which is how kiln's onnxruntime backend and
``load_onnx_train_step`` fill them::

    {"inputs": [{"name": "uniform.0", "seed_input": "rng_seed", "stream": 0,
                 "dtype": "float32", "shape": ["N", 128]}],
     "symbols": {"N": ["input", 0]}}      # N = input.shape[0]

    key = np.array([int(feeds[seed_input]) & 0xFFFF_FFFF_FFFF_FFFF, stream], np.uint64)
    feeds[name] = np.random.Generator(np.random.Philox(key=key)).random(shape, dtype=dtype)

with ``shape`` resolved from the fed inputs (``symbols`` names an input and axis
for each symbol; a dim like ``5*N`` is a product).

A float16 or bfloat16 model (``model.half()``, ``model.bfloat16()``) exports
with FLOAT16/BFLOAT16 inputs, outputs and weights, so the file is half the
size; inside, each op that computes keeps the Casts of ``widen-half`` (Cast to
float32, the op, Cast back: ``backends/onnx/half.py``)::

    kiln.export_onnx(model.half(), [kiln.TensorSpec(("N", 64), "float16")], "model.onnx")

The Casts stay on purpose. onnxruntime's CPU provider has float16 kernels for
only some ops and bfloat16 kernels for almost none, so an unwidened graph would
not load there; ``onnx.reference`` would run it, but rounding inside every
step of a composite (a Softmax's exp, sum and divide). Widened, the file has
PyTorch's CPU semantics (each op computed in float32, rounded once) and gives
kiln's numbers: bit for bit in onnxruntime for the MLP, CNN and GPT of
``tests/onnx/test_half_precision.py`` (an element may differ by one ulp where
another float32 summation order crosses a rounding boundary); in the
reference evaluator the MLP's and CNN's bit for bit, the GPT's logits within
two ulps of their scale (its LayerNormalization and Gelu compute their own way).
A GPU provider with native half kernels pays a Cast before and after each op.
(To feed a bfloat16 model from Python, whose onnxruntime API takes no
``ml_dtypes.bfloat16`` array, use ``session.run_with_ort_values`` with
``half.bfloat16_ortvalue`` and read results with ``half.ortvalue_to_numpy``.)
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from kiln.backends.onnx.half import widen_half_for_onnxruntime
from kiln.backends.onnx.lowering import ONNX
from kiln.compiler.errors import LoweringError
from kiln.compiler.ir.core import Graph, Value, clone_graph
from kiln.compiler.ir.printer import assign_names
from kiln.compiler.ir.types import Dim, DType, dim_factors, dim_value
from kiln.compiler.ops.registry import lookup
from kiln.compiler.passes.dce import DCE
from kiln.compiler.passes.chunk_causal_attention import split_long_causal_attention
from kiln.compiler.passes.cse import CSE
from kiln.compiler.passes.decompose import decompose_where
from kiln.compiler.passes.widen_half import WidenHalf

OPSET = 20
IR_VERSION = 9  # opset 20 came with IR 9; current onnxruntime loads it
RANDOM_INPUTS_KEY = "kiln.random_inputs"
"""Metadata key: the graph inputs that hold random draws and how to fill them (see the module docstring)."""


@dataclass(frozen=True)
class RandomInput:
    """A graph input holding ``tensor.random_uniform(seed_input, like, dtype=dtype, stream=stream)``, shaped ``shape``."""

    name: str
    seed_input: str
    stream: int
    dtype: str
    """A NumPy dtype name (``float32``)."""
    shape: tuple[Dim, ...]

    def resolved_shape(self, bindings: Mapping[str, int]) -> tuple[int, ...]:
        """The concrete shape, given the symbolic dims bound from the inputs (``check_inputs`` returns them)."""
        return tuple(dim_value(dim, dict(bindings)) for dim in self.shape)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "seed_input": self.seed_input, "stream": self.stream, "dtype": self.dtype, "shape": list(self.shape)}

    @staticmethod
    def from_json(entry: Mapping[str, Any]) -> "RandomInput":
        return RandomInput(entry["name"], entry["seed_input"], int(entry["stream"]), entry["dtype"], tuple(entry["shape"]))


def random_inputs(model: Any) -> list[RandomInput]:
    """The random-draw inputs a model exported by kiln declares (none for most models), in input order."""
    entries = {p.key: p.value for p in model.metadata_props}
    if RANDOM_INPUTS_KEY not in entries:
        return []
    return [RandomInput.from_json(entry) for entry in json.loads(entries[RANDOM_INPUTS_KEY])["inputs"]]


class ExportContext:
    """Names, nodes and initializers of the model being built."""

    def __init__(self, graph: Graph):
        import onnx

        self.onnx = onnx
        self.graph = graph
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.counter = 0
        self.names = assign_names(graph)
        self.symbol_sources = _symbol_sources(graph, self.names)
        self.symbol_tensors: dict[str, str] = {}
        self.random_inputs: dict[tuple[Any, ...], RandomInput] = {}
        """Draws that became graph inputs, keyed by what they draw (the same key is the same numbers)."""

    def fresh(self, hint: str = "t") -> str:
        self.counter += 1
        return f"_{hint}{self.counter}"

    def node(self, op_type: str, inputs: Sequence[str], outputs: int = 1, **attrs: Any) -> Any:
        """Append one ONNX node; returns its output name (or names, when ``outputs > 1``)."""
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def constant(self, array: np.ndarray) -> str:
        """A ``Constant`` node (not an initializer: initializers are the model's weights, which importers may train)."""
        name = self.fresh("const")
        self.nodes.append(self.onnx.helper.make_node("Constant", [], [name], value=self.onnx.numpy_helper.from_array(np.asarray(array), name)))
        return name

    def onnx_dtype(self, dtype: DType) -> int:
        return self.onnx.helper.np_dtype_to_tensor_dtype(dtype.numpy)

    def shape_tensor(self, shape: Sequence[Dim]) -> str:
        """A 1-D int64 tensor holding ``shape``, reading symbolic dims from the inputs that carry them."""
        if all(isinstance(dim, int) for dim in shape):
            return self.constant(np.array(shape, np.int64))
        parts = [self._dim_tensor(dim) if isinstance(dim, str) else self.constant(np.array([dim], np.int64)) for dim in shape]
        return self.node("Concat", parts, axis=0)

    def _dim_tensor(self, dim: str) -> str:
        """A one-element int64 tensor holding a symbolic dim: a symbol, or a product (``5*N``) of them."""
        factor, symbols = dim_factors(dim)
        tensor = self._symbol_tensor(symbols[0])
        for symbol in symbols[1:]:
            tensor = self.node("Mul", [tensor, self._symbol_tensor(symbol)])
        return tensor if factor == 1 else self.node("Mul", [tensor, self.constant(np.array([factor], np.int64))])

    def _symbol_tensor(self, symbol: str) -> str:
        if symbol not in self.symbol_tensors:
            if symbol not in self.symbol_sources:
                raise LoweringError(f"symbolic dim {symbol} appears in no input of @{self.graph.name}; ONNX cannot compute it")
            input_name, axis = self.symbol_sources[symbol]
            self.symbol_tensors[symbol] = self.node("Shape", [input_name], start=axis, end=axis + 1)
        return self.symbol_tensors[symbol]

    def random_input(self, op: Any, seed: str) -> str:
        """A graph input standing for the draw of ``op`` (``tensor.random_uniform``): ONNX cannot compute NumPy's Philox stream."""
        if op.operands[0] not in self.graph.inputs:
            raise LoweringError(
                f"tensor.random_uniform in @{self.graph.name} draws from %{self.names[op.operands[0]]}, which is not an input of the graph; "
                "the ONNX export turns each draw into an input filled from its seed input, so the seed must be a graph input (as a training step's rng_seed is)"
            )
        result, stream = op.results[0], int(op.attrs["stream"])
        key = (seed, stream, result.type.dtype.numpy.name, tuple(result.type.shape))  # seed input, stream, dtype, shape
        if key not in self.random_inputs:
            used = set(self.names.values()) | {r.name for r in self.random_inputs.values()}
            name, index = f"uniform.{stream}", 1
            while name in used:
                name, index = f"uniform.{stream}.{index}", index + 1
            self.random_inputs[key] = RandomInput(name, *key)
        return self.random_inputs[key].name

    def random_metadata(self) -> str:
        """The ``kiln.random_inputs`` metadata: each draw input, and which input axis gives each symbolic dim of their shapes."""
        draws = list(self.random_inputs.values())
        symbols = sorted({symbol for draw in draws for dim in draw.shape for symbol in dim_factors(dim)[1]})
        sources = {symbol: list(self.symbol_sources[symbol]) for symbol in symbols if symbol in self.symbol_sources}
        return json.dumps({"inputs": [draw.to_json() for draw in draws], "symbols": sources})

    def value_info(self, value: Value, name: str) -> Any:
        return self.onnx.helper.make_tensor_value_info(name, self.onnx_dtype(value.type.dtype), list(value.type.shape))


def _symbol_sources(graph: Graph, names: Mapping[Value, str]) -> dict[str, tuple[str, int]]:
    sources: dict[str, tuple[str, int]] = {}
    for value in graph.inputs:
        for axis, dim in enumerate(value.type.shape):
            if isinstance(dim, str):
                sources.setdefault(dim, (names[value], axis))
    return sources


def graph_to_onnx(graph: Graph, initializers: Mapping[int, np.ndarray] | None = None, output_names: Sequence[str] | None = None) -> Any:
    """An ONNX ModelProto computing ``graph``; inputs at the indices in ``initializers`` become weights (those the
    graph never reads are left out, as onnxruntime would drop them with a warning)."""
    import onnx

    graph = clone_graph(graph)
    WidenHalf().run(graph)  # before decomposing, as the NumPy backend: a half composite computes whole in float32
    split_long_causal_attention(graph)
    decompose_where(graph, lambda op: lookup(op.name).is_composite and op.name not in ONNX)
    widen_half_for_onnxruntime(graph)  # what decomposition inlined in half, and the moves onnxruntime has no bfloat16 kernel for
    CSE().run(graph)  # a backward's recomputed attention weights meet the forward's (onnxruntime would merge them too)
    DCE().run(graph)
    ctx = ExportContext(graph)
    initializers = dict(initializers or {})
    env = {value: ctx.names[value] for value in graph.inputs}
    for op in graph.ops:
        env.update(zip(op.results, ONNX.require(op, graph)(ctx, op, [env[v] for v in op.operands])))
    for index, array in initializers.items():
        if graph.inputs[index].uses or graph.inputs[index] in graph.outputs:  # not an unread one (a flag read as a value)
            ctx.initializers.append(onnx.numpy_helper.from_array(np.asarray(array), ctx.names[graph.inputs[index]]))
    inputs = [ctx.value_info(v, ctx.names[v]) for i, v in enumerate(graph.inputs) if i not in initializers]
    outputs = _outputs(ctx, graph, env, output_names)
    draws = [onnx.helper.make_tensor_value_info(d.name, ctx.onnx_dtype(DType.of(d.dtype)), list(d.shape)) for d in ctx.random_inputs.values()]
    body = onnx.helper.make_graph(ctx.nodes, graph.name, inputs + draws, outputs, ctx.initializers)
    model = onnx.helper.make_model(body, opset_imports=[onnx.helper.make_opsetid("", OPSET)], producer_name="kiln")
    model.ir_version = IR_VERSION
    if ctx.random_inputs:
        model.metadata_props.add(key=RANDOM_INPUTS_KEY, value=ctx.random_metadata())
    return model


def _outputs(ctx: ExportContext, graph: Graph, env: Mapping[Value, str], output_names: Sequence[str] | None) -> list[Any]:
    """Each output under its own printed name (or ``output_names``), copied there by an Identity node."""
    outputs, used = [], set(ctx.names[v] for v in graph.inputs)
    for index, value in enumerate(graph.outputs):
        name = output_names[index] if output_names else ctx.names[value]
        while name in used:
            name += "_out"
        used.add(name)
        ctx.nodes.append(ctx.onnx.helper.make_node("Identity", [env[value]], [name]))
        outputs.append(ctx.value_info(value, name))
    return outputs


EXTERNAL_DATA_THRESHOLD = 2**31 - 2**24
"""Past this many bytes of weights (protobuf's 2 GB limit, less headroom) they go to an external data file."""


def save_model(model: Any, path: str, external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> None:
    """Write atomically: into a temporary folder beside ``path``, then renamed, so a failed save loses nothing.

    Weights larger than ``external_data_threshold`` bytes in all go to ``<path>.data`` beside the model.
    """
    import onnx

    directory = os.path.dirname(os.path.abspath(path))
    external = sum(len(t.raw_data) or _tensor_bytes(t) for t in model.graph.initializer) > external_data_threshold
    data_name = os.path.basename(path) + ".data"
    with tempfile.TemporaryDirectory(prefix=".kiln-save-", dir=directory) as staging:
        staged = os.path.join(staging, os.path.basename(path))
        if external:
            onnx.save_model(model, staged, save_as_external_data=True, all_tensors_to_one_file=True, location=data_name, size_threshold=0)
            os.replace(os.path.join(staging, data_name), os.path.join(directory, data_name))
        else:
            onnx.save_model(model, staged)
        os.replace(staged, path)


def _tensor_bytes(tensor: Any) -> int:
    from onnx import numpy_helper

    return numpy_helper.to_array(tensor).nbytes
