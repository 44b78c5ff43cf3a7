"""Evaluation metrics: accumulate over batches of model outputs and targets, then compute one number.

```python
kiln.fit(step, train, eval_loader=test, metrics=["accuracy"])          # or [Accuracy(), Perplexity()]
```

Outputs are class scores with the classes on the last axis (``(N, C)`` or
``(N, T, C)``); targets are integer labels, and labels equal to
``ignore_index`` (padding) are left out, as the losses do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from kiln.compiler.errors import KilnError

IGNORE_INDEX = -100


class Metric:
    """Base class: ``reset()``, ``update(outputs, target)`` per batch, ``compute() -> float``."""

    name = "metric"
    higher_is_better = True

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, outputs: np.ndarray, target: np.ndarray) -> None:
        raise NotImplementedError

    def compute(self) -> float:
        raise NotImplementedError


def _kept(outputs: np.ndarray, target: np.ndarray, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``(scores, labels)`` flattened over every axis but the class axis, without ignored labels."""
    if outputs.shape[:-1] != target.shape:
        raise KilnError(f"metric: outputs {outputs.shape} need targets of shape {outputs.shape[:-1]} (classes on the last axis), got {target.shape}")
    scores, labels = outputs.reshape(-1, outputs.shape[-1]), target.reshape(-1)
    keep = labels != ignore_index
    return scores[keep], labels[keep]


@dataclass
class Accuracy(Metric):
    """The fraction of (non-ignored) labels whose score is the highest."""

    ignore_index: int = IGNORE_INDEX
    name = "accuracy"

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.correct, self.total = 0, 0

    def update(self, outputs: np.ndarray, target: np.ndarray) -> None:
        scores, labels = _kept(np.asarray(outputs), np.asarray(target), self.ignore_index)
        self.correct += int((scores.argmax(axis=-1) == labels).sum())
        self.total += len(labels)

    def compute(self) -> float:
        return self.correct / max(self.total, 1)


@dataclass
class Perplexity(Metric):
    """``exp`` of the mean softmax cross-entropy per (non-ignored) token."""

    ignore_index: int = IGNORE_INDEX
    name = "perplexity"
    higher_is_better = False

    def __post_init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.total_nll, self.count = 0.0, 0

    def update(self, outputs: np.ndarray, target: np.ndarray) -> None:
        scores, labels = _kept(np.asarray(outputs, dtype=np.float64), np.asarray(target), self.ignore_index)
        shifted = scores - scores.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        self.total_nll -= float(log_probs[np.arange(len(labels)), labels].sum())
        self.count += len(labels)

    def compute(self) -> float:
        return math.exp(self.total_nll / max(self.count, 1))


METRICS = {"accuracy": Accuracy, "perplexity": Perplexity}


def make_metrics(metrics: Sequence[Any]) -> list[Metric]:
    """Metric objects from objects or names (``"accuracy"``, ``"perplexity"``)."""
    made = []
    for metric in metrics:
        if isinstance(metric, str):
            if metric not in METRICS:
                raise KilnError(f"unknown metric {metric!r}; known: {sorted(METRICS)} (or pass a Metric object)")
            metric = METRICS[metric]()
        made.append(metric)
    return made
