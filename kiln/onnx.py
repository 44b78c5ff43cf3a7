"""``kiln.onnx.export``: ``torch.onnx.export``'s call, over ``kiln.export_onnx``.

```python
import kiln.onnx

model.eval()
dummy_input = kiln.zeros(35, 1, dtype=kiln.long)
kiln.onnx.export(model, (dummy_input, model.init_hidden(1)), "model.onnx")  # (h, c) nested, as in PyTorch
kiln.onnx.export(model, (x,), "model.onnx", input_names=["x"], dynamic_axes={"x": {0: "batch"}})
```

The example ``args`` give each input's shape and dtype; nested tuples and lists become one ONNX input per tensor, in
order, named after ``forward``'s parameters (``hidden.0``, ``hidden.1`` for a tuple) unless ``input_names`` says;
nested outputs become one ONNX output each (``(log_probs, (h, c))`` gives three). ``dynamic_axes`` makes the named
inputs' axes symbolic. A Python number, bool or None among ``args`` is no input: it is hard-coded into the exported
model, as torch's (``model(ids, mask, is_global_attn=False)``). The model is traced in eval mode and left in its mode;
``f`` is a path or a binary file.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping, Sequence

import numpy as np

from kiln.backends.onnx.export import OPSET
from kiln.compiler.errors import KilnError
from kiln.frontend.trace import TensorSpec, input_names as parameter_names
from kiln.runtime.export import export_onnx
from kiln.runtime.pytree import flatten, unflatten


def export(model: Any, args: Any, f: Any, export_params: bool = True, verbose: bool = False, training: Any = None,
           input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None, opset_version: int | None = None,
           dynamic_axes: Mapping[str, Any] | None = None, **ignored: Any) -> Any:
    """Write ``model`` called on ``args`` (a tensor or a tuple of them, nested as ``forward`` takes them) to ``f``;
    returns the ModelProto."""
    if opset_version is not None and opset_version > OPSET:
        raise KilnError(f"kiln.onnx.export writes opset {OPSET}; opset_version={opset_version} is newer than kiln knows")
    arguments = args if isinstance(args, tuple) else (args,)
    every_leaf, structure = flatten(list(arguments))
    constants = {index: leaf for index, leaf in enumerate(every_leaf) if _hard_coded(leaf)}
    leaves = [leaf for index, leaf in enumerate(every_leaf) if index not in constants]
    names = list(input_names) if input_names is not None else \
        [name for index, name in enumerate(_leaf_names(model, arguments)) if index not in constants]
    if len(names) != len(leaves):
        raise KilnError(f"kiln.onnx.export: {len(names)} input_names for {len(leaves)} input tensors (nested tuples count "
                        "one name per tensor)")
    specs = [_spec(leaf, name, (dynamic_axes or {}).get(name)) for leaf, name in zip(leaves, names)]
    flat = _flat_call(model, structure, names, constants)
    was_training = getattr(model, "training", False)
    try:
        getattr(model, "eval", lambda: None)()
        return _write(flat, specs, f, output_names)
    finally:
        getattr(model, "train", lambda mode: None)(was_training)


def _leaf_names(model: Any, arguments: tuple[Any, ...]) -> list[str]:
    """``forward``'s parameter names, ``name.i`` for the tensors of a nested argument."""
    names = []
    for name, argument in zip(parameter_names(model, len(arguments)), arguments):
        leaves, structure = flatten(argument)
        names += [name] if structure is None else [f"{name}.{index}" for index in range(len(leaves))]
    return names


def _hard_coded(leaf: Any) -> bool:
    """A Python number, bool or None: hard-coded into the model, not an input (torch.onnx.export's rule)."""
    return leaf is None or (isinstance(leaf, (bool, int, float)) and not isinstance(leaf, np.ndarray))


def _spec(leaf: Any, name: str, axes: Any) -> TensorSpec:
    array = np.asarray(leaf)
    shape: list[Any] = list(array.shape)
    for axis, label in (axes.items() if isinstance(axes, Mapping) else ((axis, None) for axis in axes or ())):
        shape[axis] = label or f"{name}_{axis}"
    return TensorSpec(tuple(shape), str(array.dtype))


def _flat_call(model: Any, structure: Any, names: list[str], constants: dict[int, Any]) -> Any:
    """``model`` called on the inputs, the hard-coded ``constants`` (by leaf position) put back among them."""
    def call(*leaves: Any) -> Any:
        fed = iter(leaves)
        every_leaf = [constants[index] if index in constants else next(fed)
                      for index in range(len(leaves) + len(constants))]
        return model(*unflatten(structure, every_leaf))

    call.input_names = names  # the graph's input names (frontend/trace.py input_names)
    if hasattr(model, "named_parameters"):
        call.named_parameters = model.named_parameters  # initializers named as the state_dict's keys
    call.__name__ = type(model).__name__
    return call


def _write(flat: Any, specs: list[TensorSpec], f: Any, output_names: Sequence[str] | None) -> Any:
    if isinstance(f, (str, os.PathLike)):
        return export_onnx(flat, specs, os.fspath(f), output_names)
    with tempfile.TemporaryDirectory(prefix="kiln-onnx-") as folder:
        path = os.path.join(folder, "model.onnx")
        model = export_onnx(flat, specs, path, output_names)
        with open(path, "rb") as written:
            f.write(written.read())
    return model


__all__ = ["export"]
