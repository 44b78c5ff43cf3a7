"""The built-in layers' ``reset_parameters`` and the norms' ``reset_running_stats``, PyTorch's bodies: each draws a
layer's parameters again, in place, from the distribution its constructor draws from (kiln's generator,
``kiln.manual_seed``), and resets running statistics to mean 0, variance 1, count 0.

Reference code calls them: torch_geometric's models chain ``reset_parameters`` into their layers
(``self.embedding.reset_parameters()``), and ``for m in model.modules(): if hasattr(m, 'reset_parameters'):
m.reset_parameters()`` re-initialises a model (which, without them, silently did nothing). Each layer class binds
the function of its family (``reset_parameters = layer_resets.fan_in_uniform``), as a method, and its constructor
ends with ``reset_if_overridden``, so a subclass's own ``reset_parameters`` initialises it, as in PyTorch."""

from __future__ import annotations

import math
from typing import Any, Callable

from kiln.frontend import init


def fan_in_uniform(layer: Any) -> None:
    """``Linear``, ``Conv*d``, ``ConvTranspose*d``: the weight ``kaiming_uniform_(a=sqrt(5))``, i.e.
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with ``fan_in`` the weight's (dim 1 times the kernel's size), the bias the same
    bound."""
    init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
    if layer.bias is not None:
        fan_in = init.fan_in_and_fan_out(tuple(layer.weight.shape))[0]
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(layer.bias, -bound, bound)


def bilinear_uniform(layer: Any) -> None:
    """``Bilinear``: weight and bias U(-1/sqrt(in1_features), 1/sqrt(in1_features))."""
    bound = 1 / math.sqrt(layer.weight.shape[1])
    init.uniform_(layer.weight, -bound, bound)
    if layer.bias is not None:
        init.uniform_(layer.bias, -bound, bound)


def standard_normal_rows(layer: Any) -> None:
    """``Embedding``, ``EmbeddingBag``: N(0, 1), the ``padding_idx`` row zero."""
    init.normal_(layer.weight)
    if layer.padding_idx is not None:
        layer.weight.data[layer.padding_idx] = 0


def ones_and_zeros(layer: Any) -> None:
    """``LayerNorm``, ``GroupNorm``, ``RMSNorm``: weight ones, bias zeros (those the layer has)."""
    if getattr(layer, "weight", None) is not None:
        init.ones_(layer.weight)
    if getattr(layer, "bias", None) is not None:
        init.zeros_(layer.bias)


def running_stats(norm: Any) -> None:
    """``reset_running_stats`` of a batch or instance norm that tracks them: mean 0, variance 1, count 0."""
    if norm.track_running_stats:
        norm.running_mean.data[...] = 0
        norm.running_var.data[...] = 1
        norm.num_batches_tracked.data[...] = 0


def running_stats_and_affine(norm: Any) -> None:
    """``BatchNorm*d``, ``InstanceNorm*d``: the running statistics reset, then weight ones and bias zeros."""
    running_stats(norm)
    ones_and_zeros(norm)


def recurrent_uniform(layer: Any) -> None:
    """``RNN``, ``LSTM``, ``GRU`` and their cells: every parameter U(-1/sqrt(hidden_size), 1/sqrt(hidden_size))."""
    bound = 1 / math.sqrt(layer.hidden_size) if layer.hidden_size > 0 else 0
    for parameter in layer.parameters():
        init.uniform_(parameter, -bound, bound)


def prelu_constant(layer: Any) -> None:
    """``PReLU``: every slope the constructor's ``init``."""
    init.constant_(layer.weight, layer.init)


def attention_xavier(layer: Any) -> None:
    """``MultiheadAttention._reset_parameters``: the input projections Xavier-uniform, their bias and the output
    projection's bias zeros, ``bias_k``/``bias_v`` Xavier-normal (the output projection's weight is left alone)."""
    for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"):
        if getattr(layer, name) is not None:
            init.xavier_uniform_(getattr(layer, name))
    for bias in (layer.in_proj_bias, layer.out_proj.bias):
        if bias is not None:
            init.zeros_(bias)
    for bias in (layer.bias_k, layer.bias_v):
        if bias is not None:
            init.xavier_normal_(bias)


def matrices_xavier(model: Any) -> None:
    """``Transformer._reset_parameters``: every parameter of more than one dim Xavier-uniform."""
    for parameter in model.parameters():
        if parameter.data.ndim > 1:
            init.xavier_uniform_(parameter)


def reset_if_overridden(layer: Any, default: Callable[[Any], None]) -> None:
    """The end of a layer's constructor: a subclass's own ``reset_parameters`` runs, as PyTorch's constructors end with
    ``self.reset_parameters()`` (schnetpack's ``Dense(nn.Linear)`` puts its Xavier-uniform weight and zero bias there
    and never calls it itself). The constructor has drawn the defaults (``default``'s distributions) already."""
    if type(layer).reset_parameters is not default:
        layer.reset_parameters()
