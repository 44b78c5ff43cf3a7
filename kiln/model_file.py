"""Model files for the ``kiln`` command: a Python file that names a model and its input specs.

```python
# model.py
import kiln, kiln.nn as nn

def model():                                   # a Module, or a function/class that returns one
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

input_specs = [kiln.TensorSpec(("N", 64), "float32")]
loss = kiln.nn.functional.cross_entropy        # optional, for `kiln ir --train` and `kiln train`
target_spec = kiln.TensorSpec(("N",), "int64") # optional; this is the default
```

``--model NAME`` picks another attribute; ``--input N,64:float32`` gives (or
overrides) the input specs from the command line.
"""

from __future__ import annotations

import os
import runpy
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from kiln.compiler.errors import KilnError
from kiln.frontend.module import Module
from kiln.frontend.trace import TensorSpec


@dataclass
class ModelFile:
    """What a model file defines: the model, its input specs and (optionally) a loss and target spec."""

    path: str
    model: Module
    input_specs: list[TensorSpec]
    loss: Callable[..., Any] | None
    target_spec: TensorSpec
    namespace: dict[str, Any]


def load_model_file(path: str, attribute: str = "model", inputs: Sequence[str] = ()) -> ModelFile:
    """Run ``path`` (not as ``__main__``) and collect its model and specs; errors name the file and what to add."""
    if not os.path.exists(path):
        raise KilnError(f"model file {path} does not exist")
    namespace = runpy.run_path(path, run_name="kiln_model_file")
    model = _model(namespace, attribute, path)
    specs = [parse_spec(text) for text in inputs] or list(namespace.get("input_specs", []))
    if not specs:
        raise KilnError(f"{path} defines no input_specs; add `input_specs = [kiln.TensorSpec((\"N\", 64), \"float32\")]` or pass --input N,64:float32")
    target = namespace.get("target_spec") or TensorSpec(("N",), "int64")
    return ModelFile(path, model, specs, namespace.get("loss"), target, namespace)


def _model(namespace: dict[str, Any], attribute: str, path: str) -> Module:
    if attribute not in namespace:
        modules = sorted(name for name, value in namespace.items() if isinstance(value, type) and issubclass(value, Module) and value.__module__ == "kiln_model_file")
        raise KilnError(f"{path} defines no {attribute!r}; define `{attribute} = ...` (a Module or a function returning one), or pass --model NAME (classes here: {modules})")
    found = namespace[attribute]
    model = found if isinstance(found, Module) else found()
    if not isinstance(model, Module):
        raise KilnError(f"{path}: {attribute} gave a {type(model).__name__}, expected a kiln Module")
    return model


def parse_spec(text: str) -> TensorSpec:
    """``"N,64:float32"`` -> ``TensorSpec(("N", 64), "float32")``; the dtype defaults to float32."""
    shape_text, _, dtype = text.partition(":")
    dims = tuple(int(d) if d.strip().lstrip("-").isdigit() else d.strip() for d in shape_text.split(",") if d.strip())
    return TensorSpec(dims, dtype or "float32")
