"""``kiln.saliency``: how much each input element moves a class score, by the compiled input gradient.

```python
heat = kiln.saliency(model, x, target=3)      # d logit_3 / d x, one map per sample, shaped like x
heat = kiln.saliency(model, x)                # for each sample's predicted class
```

The score ``sum_i logits[i, target_i]`` is traced, ``differentiate`` appends
its backward with respect to the *input* (not the parameters), and the
gradient graph is compiled like any other (``kiln.grad``). Samples do not
interact in eval mode, so each row of the result is that sample's own
gradient (Simonyan et al., 2014: take ``abs`` of it for the classic map).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kiln.compiler.errors import InputError
from kiln.frontend.tensor import Tensor
from kiln.runtime.compiled_function import CompiledFunction
from kiln.runtime.grad import GradFunction


def _class_score(model: Any) -> Any:
    def score(x: Tensor, selector: Tensor) -> Tensor:
        return (model(x) * selector).sum()

    return score


@dataclass
class Saliency:
    """Input gradients of a model's class scores; compiles once per input shape and reuses it."""

    model: Any
    backend: str = "numpy"
    forward: CompiledFunction = field(init=False)
    gradient: GradFunction = field(init=False)

    def __post_init__(self) -> None:
        self.forward = CompiledFunction(self.model, self.backend)
        self.gradient = GradFunction(_class_score(self.model), (0,), False, self.backend)

    def __call__(self, x: Any, target: Any = None) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        was_training = getattr(self.model, "training", False)
        if hasattr(self.model, "eval"):
            self.model.eval()
        try:
            logits = np.asarray(self.forward(x))
            return np.asarray(self.gradient(x, _selector(logits, target)))
        finally:
            if hasattr(self.model, "train"):
                self.model.train(was_training)


def _selector(logits: np.ndarray, target: Any) -> np.ndarray:
    """A one-hot ``(N, C)`` mask picking each sample's target class (its predicted class when target is None)."""
    if logits.ndim != 2:
        raise InputError(f"saliency needs a model that returns (N, classes) scores, got shape {logits.shape}")
    count, classes = logits.shape
    labels = logits.argmax(axis=1) if target is None else np.broadcast_to(np.asarray(target, dtype=np.int64), (count,))
    if labels.min() < 0 or labels.max() >= classes:
        raise InputError(f"saliency target {labels.max() if labels.max() >= classes else labels.min()} is not a class of the model's {classes} outputs")
    return np.eye(classes, dtype=logits.dtype)[labels]


def saliency(model: Any, x: Any, target: Any = None, backend: str = "numpy") -> np.ndarray:
    """``d logits[i, target_i] / d x[i]`` for every sample ``i`` (shaped like ``x``); see the module docstring."""
    return Saliency(model, backend)(x, target)
