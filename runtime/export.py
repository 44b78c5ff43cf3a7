"""``kiln.export_onnx``: a model's forward graph (eval mode) as a deployable ONNX file."""

from __future__ import annotations

from typing import Any, Sequence

from kiln.backends.onnx.export import EXTERNAL_DATA_THRESHOLD, graph_to_onnx, save_model
from kiln.backends.onnx.importer import import_onnx
from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.passes.manager import PassManager
from kiln.frontend.trace import TensorSpec, TraceContext, set_attribute, trace_context
from kiln.runtime.attribute_writes import holds_traced_tensor


def export_onnx(model: Any, input_specs: Sequence[TensorSpec], path: str, output_names: Sequence[str] | None = None,
                external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> Any:
    """Trace ``model`` (a Module or a function) in eval mode and write it with its weights as initializers.

    Returns the ModelProto. Weights over ``external_data_threshold`` bytes (2 GB) go to ``<path>.data``.
    """
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        context = trace_context(model, *input_specs, what="the model's output", exporting=True)
        graph, parameters = context.graph, context.parameters
        _no_traced_attributes(context)
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    if context.seed_input is not None:  # made at the first draw, maybe among the weights: after them, as their positions
        graph.inputs.remove(context.seed_input)  # below assume (it stayed there, so each weight took its neighbour's name)
        graph.inputs.append(context.seed_input)
    PassManager("cse,dce").run(graph)
    _drop_unused_seed(graph, context.seed_input)
    first = len(input_specs)
    if output_names is None:
        count = len(graph.outputs)
        output_names = ["output"] if count == 1 else [f"output{i}" for i in range(count)]
    onnx_model = graph_to_onnx(graph, {first + i: p.data for i, p in enumerate(parameters)}, output_names)
    save_model(onnx_model, path, external_data_threshold)
    return onnx_model


def _no_traced_attributes(context: TraceContext) -> None:
    """Each module attribute the export's trace set to a tensor it computed (the style tutorial's loss modules:
    ``self.loss = F.mse_loss(input, self.target)``) gets back its value from before the export: the trace ran on
    symbolic inputs, so that tensor has no values outside it (reading it after the export failed)."""
    for module, name, before in context.attribute_writes.values():
        if holds_traced_tensor(module.__dict__.get(name)):
            set_attribute(module, name, before)


def _drop_unused_seed(graph: Graph, seed_input: Value | None) -> None:
    """Remove the ``rng_seed`` input when no draw is left after DCE: an eval forward that draws and never reads the
    draw (HF's LayerDrop: ``torch.rand([])`` compared only ``if self.training``) needs no seed, as torch.onnx.export's
    file asks none. It is the last input, so the weights keep their positions."""
    if seed_input is not None and not seed_input.uses:
        graph.inputs.remove(seed_input)


__all__ = ["export_onnx", "import_onnx"]
