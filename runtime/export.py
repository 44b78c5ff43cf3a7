"""``kiln.export_onnx``: a model's forward graph (eval mode) as a deployable ONNX file."""

from __future__ import annotations

from typing import Any, Sequence

from kiln.backends.onnx.export import EXTERNAL_DATA_THRESHOLD, graph_to_onnx, save_model
from kiln.backends.onnx.importer import import_onnx
from kiln.compiler.passes.manager import PassManager
from kiln.frontend.trace import TensorSpec, TraceContext, as_value, flatten_outputs, input_names
from kiln.frontend.tensor import Tensor


def export_onnx(model: Any, input_specs: Sequence[TensorSpec], path: str, output_names: Sequence[str] | None = None,
                external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> Any:
    """Trace ``model`` (a Module or a function) in eval mode and write it with its weights as initializers.

    Returns the ModelProto. Weights over ``external_data_threshold`` bytes (2 GB) go to ``<path>.data``.
    """
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        graph, parameters = _trace_with_parameters(model, input_specs)
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    PassManager("cse,dce").run(graph)
    first = len(input_specs)
    if output_names is None:
        count = len(graph.outputs)
        output_names = ["output"] if count == 1 else [f"output{i}" for i in range(count)]
    onnx_model = graph_to_onnx(graph, {first + i: p.data for i, p in enumerate(parameters)}, output_names)
    save_model(onnx_model, path, external_data_threshold)
    return onnx_model


def _trace_with_parameters(model: Any, specs: Sequence[TensorSpec]):
    with TraceContext(type(model).__name__) as context:
        named = getattr(model, "named_parameters", None)
        if callable(named):
            context.parameter_names.update({id(p): name for name, p in named()})
        names = input_names(model, len(specs))
        inputs = [Tensor(context.graph.add_input(spec.type, name)) for spec, name in zip(specs, names)]
        result = model(*inputs)
        context.graph.outputs = [as_value(item, "the model's output") for item in flatten_outputs(result)]
    return context.graph, context.parameters


__all__ = ["export_onnx", "import_onnx"]
