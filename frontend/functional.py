"""``kiln.nn.functional`` (``F``): PyTorch's functional API, with its argument names and defaults."""

from __future__ import annotations

from typing import Any

from kiln.compiler.errors import TraceError
from kiln.frontend.tensor import Tensor, apply


def relu(input: Tensor) -> Tensor:
    return apply("tensor.relu", input)


def sigmoid(input: Tensor) -> Tensor:
    return apply("tensor.sigmoid", input)


def tanh(input: Tensor) -> Tensor:
    return apply("tensor.tanh", input)


def exp(input: Tensor) -> Tensor:
    return apply("tensor.exp", input)


def log(input: Tensor) -> Tensor:
    return apply("tensor.log", input)


def sqrt(input: Tensor) -> Tensor:
    return apply("tensor.sqrt", input)


def maximum(input: Tensor, other: Any) -> Tensor:
    return apply("tensor.maximum", input, other)


def minimum(input: Tensor, other: Any) -> Tensor:
    return apply("tensor.minimum", input, other)


def where(condition: Tensor, input: Any, other: Any) -> Tensor:
    return apply("tensor.where", condition, input, other)


def softmax(input: Tensor, dim: int = -1) -> Tensor:
    return apply("nn.softmax", input, axis=dim)


def log_softmax(input: Tensor, dim: int = -1) -> Tensor:
    return apply("nn.log_softmax", input, axis=dim)


def linear(input: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``input @ weight.T + bias`` with PyTorch's ``(out_features, in_features)`` weight."""
    output = input @ weight.T
    return output if bias is None else output + bias


def cross_entropy(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy of ``(N, C)`` logits against ``(N,)`` integer class indices."""
    return apply("nn.cross_entropy", input, target, reduction=reduction)


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    if input.shape != target.shape:
        raise TraceError(f"mse_loss: input {input.type} and target {target.type} differ in shape; reshape one (PyTorch would broadcast and warn)")
    return apply("nn.mse", input, target, reduction=reduction)
