"""``kiln.nn.functional`` (``F``): PyTorch's functional API, with its argument names and defaults."""

from __future__ import annotations

from typing import Any

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


from kiln.frontend.functional_losses import *  # noqa: E402,F401,F403  (losses: cross_entropy, mse_loss, l1_loss, ...)
from kiln.frontend.functional_nn import *  # noqa: E402,F401,F403  (CNN and transformer functions: gelu, layer_norm, conv2d, ...)
from kiln.frontend.functional_activation import *  # noqa: E402,F401,F403  (silu, leaky_relu, elu, softplus, mish, ...)
from kiln.frontend.functional_norm import *  # noqa: E402,F401,F403  (group_norm, rms_norm, ...)
from kiln.frontend.functional_conv import *  # noqa: E402,F401,F403  (conv1d, conv_transpose2d, adaptive_avg_pool2d, ...)
