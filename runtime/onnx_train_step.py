"""The training step as an ONNX file that is also a checkpoint.

```python
kiln.export_onnx_train_step(step, "train.onnx")      # (params, state, lr, step, batch) -> (loss, new params, new state)
resumed = kiln.load_onnx_train_step("train.onnx", backend="onnxruntime")
loss = resumed(x, y)                                  # continues exactly where `step` stopped
```

Every non-batch input (parameters, optimizer state, learning rates, loss
scale) is an ONNX input whose initializer holds its current value, so a stock
``InferenceSession`` runs the step with the batch alone, and
``load_onnx_train_step`` resumes from those values on any backend. The file's
metadata (``kiln.train_step``, JSON) says which output updates which input.

A step with dropout has one more input per random draw, ``uniform.<stream>``,
after the others and with no default: ONNX cannot compute NumPy's Philox
stream, which kiln's masks come from, so the draws are fed. The metadata
``kiln.random_inputs`` (see ``kiln.backends.onnx.export``) lists each one's
seed input, stream, dtype and shape (``N`` is the batch input's first dim);
``load_onnx_train_step`` fills them itself. To run the file in a stock
``InferenceSession``, feed the batch and, for step ``k`` (``k`` steps done;
the ``rng_seed`` default is the next step's seed), ``rng_seed = seed * 2**20 + k`` and::

    key = np.array([rng_seed & 0xFFFF_FFFF_FFFF_FFFF, stream], np.uint64)
    feeds["uniform.<stream>"] = np.random.Generator(np.random.Philox(key=key)).random(shape, dtype=dtype)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kiln.backends import get_backend
from kiln.backends.onnx.export import RANDOM_INPUTS_KEY, RandomInput, graph_to_onnx, random_inputs, save_model
from kiln.backends.onnx.runtime import draw_random_inputs
from kiln.backends.onnx.importer import import_onnx
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.printer import assign_names
from kiln.runtime.executable import check_inputs

METADATA_KEY = "kiln.train_step"


def export_onnx_train_step(step: Any, path: str, batch_size: int | None = None) -> Any:
    """Write the step's most recent compiled graph with its current state as initializers; returns the ModelProto.

    The batch dim stays symbolic unless ``batch_size`` fixes it. A static batch is what
    ``load_onnx_train_step`` needs for steps with convolutions: their weight gradient is an ONNX
    ``Conv`` over the batch axis, which kiln imports only when that axis is static.
    """
    if not step.compiled:
        raise KilnError("export_onnx_train_step: the step has not been compiled yet; call it on one batch first")
    compiled = list(step.compiled.values())[-1]
    if batch_size is not None:
        compiled = step.compile(*_static_batch_specs(step, compiled, batch_size))
    step_graph, graph = compiled.step_graph, compiled.graph
    sync = getattr(step, "sync", None)
    if callable(sync):
        sync()
    names = assign_names(graph)
    batch_count = len(graph.inputs) - len(step._feeds(step_graph, []))
    defaults = {index: np.array(value, copy=True) for index, value in enumerate(step._feeds(step_graph, []), start=batch_count)}
    model = graph_to_onnx(graph, output_names=[names[v] for v in graph.outputs])
    _add_defaults(model, {names[graph.inputs[i]]: value for i, value in defaults.items()})
    metadata = _metadata(step, step_graph, names, batch_count)
    model.metadata_props.add(key=METADATA_KEY, value=json.dumps(metadata))
    save_model(model, path)
    return model


def _static_batch_specs(step: Any, compiled: Any, batch_size: int) -> list[Any]:
    """The compiled step's batch specs with the batch dim (rows per micro-batch) fixed at ``batch_size``."""
    from kiln.frontend.trace import TensorSpec
    from kiln.runtime.batch_dims import BATCH

    inputs = compiled.graph.inputs
    batch = inputs[: len(inputs) - len(step._feeds(compiled.step_graph, []))]
    fixed = lambda shape: tuple(batch_size if dim == BATCH else dim for dim in shape)  # noqa: E731  (wherever batch_dim put it)
    return [TensorSpec(fixed(v.type.shape), v.type.dtype) for v in batch[: len(batch) // step.accumulate]]


def _add_defaults(model: Any, defaults: dict[str, np.ndarray]) -> None:
    """Initializers named like inputs: ONNX's default values for inputs, which a caller may override."""
    from onnx import numpy_helper

    for name, value in defaults.items():
        model.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))


def _metadata(step: Any, step_graph: Any, names: dict, batch_count: int) -> dict[str, Any]:
    graph = step_graph.graph
    count = len(step_graph.parameters)
    updated_inputs = [names[graph.inputs[source]] for source in _update_sources(step_graph, batch_count)]
    return {
        "batch_inputs": [names[v] for v in graph.inputs[:batch_count]],
        "updates": dict(zip([names[v] for v in graph.outputs[1:]], updated_inputs)),
        "parameters": [names[v] for v in graph.inputs[batch_count : batch_count + count]],
        "step_input": names[graph.inputs[-1]] if step_graph.reads_step else None,
        "seed_input": names[graph.inputs[batch_count + count + len(step_graph.frozen)]] if step_graph.reads_seed else None,
        "seed": int(getattr(step, "seed", 0)),
        "step_count": int(step.optimizer.step_count),
        "hyper_inputs": {names[v]: list(role) for v, role in zip(_hyper_values(step_graph), step_graph.hyper_inputs)},
        "accumulate": int(getattr(step, "accumulate", 1)),
        "batch_dim": _json_batch_dim(getattr(step, "batch_dim", 0)),
    }


def _json_batch_dim(batch_dim: Any) -> Any:
    return batch_dim if batch_dim is None or isinstance(batch_dim, int) else [None if d is None else int(d) for d in batch_dim]


def _update_sources(step_graph: Any, batch_count: int) -> list[int]:
    """Input index updated by each output after the loss: parameters, then optimizer state."""
    count = len(step_graph.parameters)
    states = sum(len(names) for names in step_graph.state_names)
    first_state = batch_count + count + len(step_graph.frozen) + (1 if step_graph.reads_seed else 0)
    return list(range(batch_count, batch_count + count)) + list(range(first_state, first_state + states))


def _hyper_values(step_graph: Any) -> list[Any]:
    graph = step_graph.graph
    end = len(graph.inputs) - (1 if step_graph.reads_step else 0)
    return graph.inputs[end - len(step_graph.hyper_inputs) : end]


@dataclass
class OnnxTrainStep:
    """A training step loaded from an exported file: ``step(*batch) -> loss``, state kept here as arrays."""

    executable: Any
    input_names: list[str]
    values: dict[str, np.ndarray]
    """Current value of every non-batch input, by name (parameters, optimizer state, hyper-parameters)."""
    metadata: dict[str, Any]
    step_count: int = 0
    output_names: list[str] = field(default_factory=list)
    random_inputs: list[RandomInput] = field(default_factory=list)
    """The random draws (dropout) the file takes as inputs, last; filled from the seed on each call."""

    def __call__(self, *batch: Any) -> float:
        arrays = [np.asarray(a) for a in batch]
        outputs = self.executable(*self._feeds(arrays))
        for name, value in zip(self.output_names[1:], outputs[1:]):
            target = self.values[self.metadata["updates"][name]]
            np.copyto(target, np.asarray(value))
        self.step_count += 1
        return float(np.asarray(outputs[0]))

    def _feeds(self, batch: list[np.ndarray]) -> list[np.ndarray]:
        from kiln.runtime.train_step import split_micro_batches

        feeds = split_micro_batches(batch, self.metadata["accumulate"], self.metadata.get("batch_dim", 0))  # files before batch_dim: 0
        step_input, seed_input = self.metadata["step_input"], self.metadata["seed_input"]
        count = len(self.input_names) - len(self.random_inputs)
        for name in self.input_names[len(feeds):count]:
            if name == step_input:
                feeds.append(np.asarray(self.step_count + 1, np.int64))
            elif name == seed_input:
                feeds.append(np.asarray(self.metadata["seed"] * 2**20 + self.step_count, np.int64))
            else:
                feeds.append(self.values[name])
        if self.random_inputs:
            executable = self.executable
            bound = check_inputs(executable.graph.name, executable.input_names[:count], executable.input_types[:count], feeds)
            feeds += draw_random_inputs(self.random_inputs, dict(zip(self.input_names, feeds)), bound)
        return feeds

    def set_hyperparameter(self, name: str, value: float) -> None:
        """Change ``lr`` (or ``lr1``... per group) between steps; it is an input, nothing recompiles."""
        if name not in self.metadata["hyper_inputs"]:
            raise KilnError(f"no hyper-parameter input {name!r}; the step has {sorted(self.metadata['hyper_inputs'])}")
        self.values[name][...] = value

    def parameters(self) -> dict[str, np.ndarray]:
        """The trained parameters by name (live arrays)."""
        return {name: self.values[name] for name in self.metadata["parameters"]}


def load_onnx_train_step(path: str, backend: str = "numpy") -> OnnxTrainStep:
    """Resume the training step saved by ``export_onnx_train_step`` on any backend."""
    import onnx

    imported = import_onnx(path, trainable_initializers=False)
    model = onnx.load(path, load_external_data=False)
    entries = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in entries:
        raise KilnError(f"{path} is an ONNX model but not a kiln training step (no {METADATA_KEY} metadata); load it with kiln.import_onnx")
    metadata = json.loads(entries[METADATA_KEY])
    values = {name: np.array(array, copy=True) for name, array in imported.defaults.items()}
    executable = get_backend(backend).compile(imported.graph)
    names = [v.name_hint for v in imported.graph.inputs]
    draws = random_inputs(model)
    if [d.name for d in draws] != names[len(names) - len(draws):]:
        raise KilnError(f"{path}: the random inputs {[d.name for d in draws]} of its {RANDOM_INPUTS_KEY} metadata are not its last inputs ({names})")
    return OnnxTrainStep(executable, names, values, metadata, metadata["step_count"], imported.output_names, draws)
