"""``torch.*``'s functional forms of the neural-network ops: ``kiln.conv2d``, ``kiln.layer_norm``, ``kiln.embedding``,
``kiln.dropout``, ``kiln.kl_div``... with the signatures ``torch.*`` gives them, each forwarding to its
``kiln.nn.functional`` implementation (no second copy of any of them).

Where ``torch.*`` differs from ``torch.nn.functional`` the difference is PyTorch's, kept here so code written against
``torch.*`` runs unchanged:

```python
kiln.embedding(weight, indices)                      # weight first; padding_idx=-1 means none
kiln.batch_norm(x, w, b, mean, var, training, momentum, eps, cudnn_enabled)   # affine first, then statistics
kiln.kl_div(logp, q, 2)                              # reductions as ATen's ints: 0 none, 1 mean, 2 sum
kiln.kl_div(logp, q)                                 # unreduced: torch.*'s losses default to 0 (F's to "mean")
kiln.dropout(x, 0.1, True)                           # p and train required, as torch.dropout's
kiln.max_pool1d_with_indices(x, 3)                   # (values, indices); adaptive_max_pool1d is a pair too
kiln.grid_sampler(x, grid, 0, 0, False)              # bilinear/nearest/bicubic and zeros/border/reflection as ints
```

The ``cudnn_enable(d)`` flags are accepted and ignored (a backend picks its kernels). Random ones (the dropouts,
``rrelu`` in training) draw from the traced step's seed, as ``F.dropout`` does.
"""

from __future__ import annotations

from typing import Any

import kiln.frontend.functional as F
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import located_error

_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}
"""ATen's ``Reduction`` enum, the ``reduction`` argument of the ``torch.*`` losses."""

_INTERPOLATIONS = {0: "bilinear", 1: "nearest", 2: "bicubic"}
_PADDINGS = {0: "zeros", 1: "border", 2: "reflection"}
"""``torch.grid_sampler``'s integer modes, as ``F.grid_sample`` names them."""


def _enum(function: str, argument: str, value: Any, names: dict[int, str]) -> str:
    """An ATen enum given as its int (or already as F's string), checked."""
    if isinstance(value, str) and value in names.values():
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value in names:
        return names[value]
    choices = ", ".join(f"{number} ({name})" for number, name in names.items())
    raise located_error(f"kiln.{function}: {argument} must be one of {choices}, got {value!r}")


def _reduction(function: str, reduction: Any) -> str:
    return _enum(function, "reduction", reduction, _REDUCTIONS)


def _stride(stride: Any) -> Any:
    """ATen's empty stride (``[]``, its default) means the kernel size, ``F``'s ``None``."""
    return None if stride is None or (isinstance(stride, (list, tuple)) and len(stride) == 0) else stride


# convolutions and normalization ----------------------------------------------------------------------------------------

conv1d, conv2d, conv3d = F.conv1d, F.conv2d, F.conv3d
conv_transpose1d, conv_transpose2d, conv_transpose3d = F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d
rms_norm, bilinear, prelu = F.rms_norm, F.bilinear, F.prelu


def convolution(input: Tensor, weight: Tensor, bias: Tensor | None, stride: Any, padding: Any, dilation: Any,
                transposed: bool, output_padding: Any, groups: int) -> Tensor:
    """``torch.convolution``: ``conv{1,2,3}d`` or ``conv_transpose{1,2,3}d`` by the input's spatial dims."""
    spatial = input.ndim - 2
    if spatial not in (1, 2, 3):
        raise located_error(f"kiln.convolution: expected a (N, C, *) input with 1 to 3 spatial dims, got {input.type}")
    if transposed:
        transpose = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[spatial - 1]
        return transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)
    return (F.conv1d, F.conv2d, F.conv3d)[spatial - 1](input, weight, bias, stride, padding, dilation, groups)


def layer_norm(input: Tensor, normalized_shape: Any, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5, cudnn_enable: bool = True) -> Tensor:
    return F.layer_norm(input, normalized_shape, weight, bias, eps)


def group_norm(input: Tensor, num_groups: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5, cudnn_enabled: bool = True) -> Tensor:
    return F.group_norm(input, num_groups, weight, bias, eps)


def batch_norm(input: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor | None,
               running_var: Tensor | None, training: bool, momentum: float, eps: float, cudnn_enabled: bool = True) -> Tensor:
    """``torch.batch_norm``: ``F.batch_norm`` with the affine parameters before the running statistics."""
    return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def instance_norm(input: Tensor, weight: Tensor | None, bias: Tensor | None, running_mean: Tensor | None,
                  running_var: Tensor | None, use_input_stats: bool, momentum: float, eps: float,
                  cudnn_enabled: bool = True) -> Tensor:
    """``torch.instance_norm``: ``F.instance_norm`` with the affine parameters before the running statistics."""
    return F.instance_norm(input, running_mean, running_var, weight, bias, use_input_stats, momentum, eps)


# embeddings ------------------------------------------------------------------------------------------------------------


def embedding(weight: Tensor, indices: Tensor, padding_idx: int = -1, scale_grad_by_freq: bool = False,
              sparse: bool = False) -> Tensor:
    """``torch.embedding``: the rows ``indices`` of ``weight`` (weight first); a negative ``padding_idx`` is none."""
    padding = None if padding_idx is None or padding_idx < 0 else padding_idx
    return F.embedding(indices, weight, padding, scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)


_BAG_MODES = {0: "sum", 1: "mean", 2: "max"}


def embedding_bag(weight: Tensor, indices: Tensor, offsets: Any, scale_grad_by_freq: bool = False, mode: int = 0,
                  sparse: bool = False, per_sample_weights: Tensor | None = None, include_last_offset: bool = False,
                  padding_idx: int | None = None) -> tuple[Tensor, ...]:
    """``torch.embedding_bag`` (weight first, ``mode`` 0 sum, 1 mean, 2 max): ``(output, offset2bag, bag_size,
    max_indices)`` as ATen's. Only ``output`` is computed; the other three are ATen's backward bookkeeping, whose
    contents differ by mode and device, so asking for them is an error that says to use ``output``."""
    output = F.embedding_bag(indices, weight, offsets, scale_grad_by_freq=scale_grad_by_freq,
                             mode=_enum("embedding_bag", "mode", mode, _BAG_MODES), sparse=sparse,
                             per_sample_weights=per_sample_weights, include_last_offset=include_last_offset,
                             padding_idx=padding_idx)
    return (output, *(_Bookkeeping(name) for name in ("offset2bag", "bag_size", "max_indices")))


class _Bookkeeping:
    """A placeholder for one of ``torch.embedding_bag``'s auxiliary results: any use of it is an error."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        raise located_error(f"kiln.embedding_bag: its {self._name} result is ATen's backward bookkeeping, which kiln "
                            "does not compute (its autodiff differentiates the output); use the first result, or "
                            "F.embedding_bag, which returns only it")


# dropout ---------------------------------------------------------------------------------------------------------------


def dropout(input: Tensor, p: float, train: bool) -> Tensor:
    return F.dropout(input, p, train)


def alpha_dropout(input: Tensor, p: float, train: bool) -> Tensor:
    return F.alpha_dropout(input, p, train)


def feature_alpha_dropout(input: Tensor, p: float, train: bool) -> Tensor:
    return F.feature_alpha_dropout(input, p, train)


def feature_dropout(input: Tensor, p: float, train: bool) -> Tensor:
    """Whole channels of ``(N, C, *)`` zeroed with probability ``p``, the rest scaled by ``1 / (1 - p)``."""
    from kiln.frontend.functional_spatial import _channel_dropout

    if input.ndim < 2:
        raise located_error(f"kiln.feature_dropout: feature dropout requires at least 2 dimensions (N, C, *), got {input.type}")
    return _channel_dropout(input, p, train)


def _in_place(name: str, function: Any) -> Any:
    def write(input: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        from kiln.frontend.tensor_inplace import in_place

        return in_place(input, name, lambda x: function(x, *args, **kwargs))

    write.__name__ = write.__qualname__ = name
    write.__doc__ = f"``torch.{name}``: ``{name[:-1]}`` written into ``input`` (it keeps its shape and dtype)."
    return write


dropout_ = _in_place("dropout_", dropout)
alpha_dropout_ = _in_place("alpha_dropout_", alpha_dropout)
feature_alpha_dropout_ = _in_place("feature_alpha_dropout_", feature_alpha_dropout)
feature_dropout_ = _in_place("feature_dropout_", feature_dropout)


# activations -----------------------------------------------------------------------------------------------------------

selu, celu, threshold, hardshrink = F.selu, F.celu, F.threshold, F.hardshrink
selu_, celu_, threshold_, relu_ = F.selu_, F.celu_, F.threshold_, F.relu_


def rrelu(input: Tensor, lower: float = 1 / 8, upper: float = 1 / 3, training: bool = False, generator: Any = None) -> Tensor:
    """``torch.rrelu``: a slope drawn in ``[lower, upper]`` per negative element in training, their mean otherwise."""
    return F.rrelu(input, lower, upper, training)


rrelu_ = _in_place("rrelu_", rrelu)


def _softmax_backward_data(grad_output: Tensor, output: Tensor, dim: int, input_dtype: Any) -> Tensor:
    """ATen's softmax backward kernel (what custom ``autograd.Function``s such as EDM's ``AttentionOp`` call): the
    gradient of the input of ``output = softmax(x, dim)``, ``output * (g - (g * output).sum(dim))``, in ``input_dtype``."""
    return (output * (grad_output - (grad_output * output).sum(dim, keepdim=True))).to(input_dtype)


def _log_softmax_backward_data(grad_output: Tensor, output: Tensor, dim: int, input_dtype: Any) -> Tensor:
    """ATen's log-softmax backward kernel: ``g - exp(output) * g.sum(dim)`` for ``output = log_softmax(x, dim)``, in
    ``input_dtype``."""
    return (grad_output - output.exp() * grad_output.sum(dim, keepdim=True)).to(input_dtype)


# recurrent cells (the steps of frontend/layers_recurrent.py) ------------------------------------------------------------


def _cell(step: Any, input: Tensor, state: tuple[Tensor, ...], w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None,
          b_hh: Tensor | None) -> tuple[Tensor, ...]:
    from kiln.frontend.layers_recurrent import DirectionWeights

    if input.ndim != 2:
        raise located_error(f"the torch.*_cell functions take a batch (N, input_size), got {input.type}; nn.{step.__name__[:-5].upper()}Cell takes one sample too")
    return step(F.linear(input, w_ih, b_ih), state, DirectionWeights(w_ih, w_hh, b_ih, b_hh))


def rnn_tanh_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                  b_hh: Tensor | None = None) -> Tensor:
    """``tanh(x W_ih^T + b_ih + h W_hh^T + b_hh)``, as ``nn.RNNCell``."""
    from kiln.frontend.layers_recurrent import tanh_step

    return _cell(tanh_step, input, (hx,), w_ih, w_hh, b_ih, b_hh)[0]


def rnn_relu_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
                  b_hh: Tensor | None = None) -> Tensor:
    from kiln.frontend.layers_recurrent import relu_step

    return _cell(relu_step, input, (hx,), w_ih, w_hh, b_ih, b_hh)[0]


def lstm_cell(input: Tensor, hx: Any, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
              b_hh: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One LSTM step from ``hx = (h, c)``: ``(h', c')``, as ``nn.LSTMCell``."""
    from kiln.frontend.layers_recurrent import lstm_step

    return _cell(lstm_step, input, tuple(hx), w_ih, w_hh, b_ih, b_hh)  # type: ignore[return-value]


def gru_cell(input: Tensor, hx: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None = None,
             b_hh: Tensor | None = None) -> Tensor:
    from kiln.frontend.layers_recurrent import gru_step

    return _cell(gru_step, input, (hx,), w_ih, w_hh, b_ih, b_hh)[0]


# shuffles and distances ------------------------------------------------------------------------------------------------

pixel_shuffle, pixel_unshuffle, channel_shuffle = F.pixel_shuffle, F.pixel_unshuffle, F.channel_shuffle
native_channel_shuffle = F.channel_shuffle
cosine_similarity, pairwise_distance, pdist = F.cosine_similarity, F.pairwise_distance, F.pdist


# losses (reduction as ATen's int) --------------------------------------------------------------------------------------


def kl_div(input: Tensor, target: Tensor, reduction: Any = 0, *, log_target: bool = False) -> Tensor:
    """``torch.kl_div``: ``reduction=1`` is the mean over every element (``F.kl_div``'s ``"mean"``, not ``"batchmean"``);
    unreduced by default, as every ``torch.*`` loss here (torch 2.13's bindings, whatever their schemas say)."""
    return F.kl_div(input, target, _reduction("kl_div", reduction), log_target)


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor, weight: Tensor | None = None,
                                     pos_weight: Tensor | None = None, reduction: Any = 0) -> Tensor:
    return F.binary_cross_entropy_with_logits(input, target, weight, pos_weight=pos_weight,
                                              reduction=_reduction("binary_cross_entropy_with_logits", reduction))


def poisson_nll_loss(input: Tensor, target: Tensor, log_input: bool, full: bool, eps: float, reduction: Any) -> Tensor:
    return F.poisson_nll_loss(input, target, log_input, full, eps, _reduction("poisson_nll_loss", reduction))


def margin_ranking_loss(input1: Tensor, input2: Tensor, target: Tensor, margin: float = 0.0, reduction: Any = 0) -> Tensor:
    return F.margin_ranking_loss(input1, input2, target, margin, _reduction("margin_ranking_loss", reduction))


def hinge_embedding_loss(input: Tensor, target: Tensor, margin: float = 1.0, reduction: Any = 0) -> Tensor:
    return F.hinge_embedding_loss(input, target, margin, _reduction("hinge_embedding_loss", reduction))


def cosine_embedding_loss(input1: Tensor, input2: Tensor, target: Tensor, margin: float = 0.0, reduction: Any = 0) -> Tensor:
    return F.cosine_embedding_loss(input1, input2, target, margin, _reduction("cosine_embedding_loss", reduction))


def triplet_margin_loss(anchor: Tensor, positive: Tensor, negative: Tensor, margin: float = 1.0, p: float = 2.0,
                        eps: float = 1e-6, swap: bool = False, reduction: Any = 0) -> Tensor:
    return F.triplet_margin_loss(anchor, positive, negative, margin, p, eps, swap, _reduction("triplet_margin_loss", reduction))


def ctc_loss(log_probs: Tensor, targets: Any, input_lengths: Any, target_lengths: Any, blank: int = 0,
             reduction: Any = 0, zero_infinity: bool = False) -> Tensor:
    return F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank, _reduction("ctc_loss", reduction), zero_infinity)


# pooling and padding ---------------------------------------------------------------------------------------------------


def max_pool1d(input: Tensor, kernel_size: Any, stride: Any = (), padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False) -> Tensor:
    return F.max_pool1d(input, kernel_size, _stride(stride), padding, dilation, ceil_mode)


def max_pool1d_with_indices(input: Tensor, kernel_size: Any, stride: Any = (), padding: Any = 0, dilation: Any = 1,
                            ceil_mode: bool = False) -> tuple[Tensor, Tensor]:
    return F.max_pool1d(input, kernel_size, _stride(stride), padding, dilation, ceil_mode, return_indices=True)


def max_pool2d(input: Tensor, kernel_size: Any, stride: Any = (), padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False) -> Tensor:
    return F.max_pool2d(input, kernel_size, _stride(stride), padding, dilation, ceil_mode)


def max_pool3d(input: Tensor, kernel_size: Any, stride: Any = (), padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False) -> Tensor:
    return F.max_pool3d(input, kernel_size, _stride(stride), padding, dilation, ceil_mode)


def avg_pool1d(input: Tensor, kernel_size: Any, stride: Any = (), padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True) -> Tensor:
    return F.avg_pool1d(input, kernel_size, _stride(stride), padding, ceil_mode, count_include_pad)


adaptive_avg_pool1d = F.adaptive_avg_pool1d


def adaptive_max_pool1d(input: Tensor, output_size: Any) -> tuple[Tensor, Tensor]:
    """``torch.adaptive_max_pool1d``: the pooled values and their indices, always both (as ATen's)."""
    return F.adaptive_max_pool1d(input, output_size, return_indices=True)


def constant_pad_nd(input: Tensor, pad: Any, value: float = 0) -> Tensor:
    return F.pad(input, pad, "constant", value)


# sampling --------------------------------------------------------------------------------------------------------------


def affine_grid_generator(theta: Tensor, size: Any, align_corners: bool) -> Tensor:
    return F.affine_grid(theta, size, align_corners)


def grid_sampler(input: Tensor, grid: Tensor, interpolation_mode: int, padding_mode: int, align_corners: bool) -> Tensor:
    """``torch.grid_sampler``: ``F.grid_sample`` with its modes as ints (0 bilinear, 1 nearest, 2 bicubic; 0 zeros,
    1 border, 2 reflection)."""
    return F.grid_sample(input, grid, _enum("grid_sampler", "interpolation_mode", interpolation_mode, _INTERPOLATIONS),
                         _enum("grid_sampler", "padding_mode", padding_mode, _PADDINGS), align_corners)


grid_sampler_2d = grid_sampler
grid_sampler_3d = grid_sampler  # 5-D input (trilinear or nearest)


__all__ = [
    "_log_softmax_backward_data", "_softmax_backward_data",
    "adaptive_avg_pool1d", "adaptive_max_pool1d", "affine_grid_generator", "alpha_dropout", "alpha_dropout_", "avg_pool1d",
    "batch_norm", "bilinear", "binary_cross_entropy_with_logits", "celu", "celu_", "channel_shuffle", "constant_pad_nd",
    "conv1d", "conv2d", "convolution", "gru_cell", "lstm_cell", "rnn_relu_cell", "rnn_tanh_cell", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "cosine_embedding_loss",
    "cosine_similarity", "ctc_loss", "dropout", "dropout_", "embedding", "embedding_bag", "feature_alpha_dropout",
    "feature_alpha_dropout_", "feature_dropout", "feature_dropout_", "grid_sampler", "grid_sampler_2d", "grid_sampler_3d",
    "group_norm", "hardshrink", "hinge_embedding_loss", "instance_norm", "kl_div", "layer_norm", "margin_ranking_loss",
    "max_pool1d", "max_pool1d_with_indices", "max_pool2d", "max_pool3d", "native_channel_shuffle", "pairwise_distance",
    "pdist", "pixel_shuffle", "pixel_unshuffle", "poisson_nll_loss", "prelu", "relu_", "rms_norm", "rrelu", "rrelu_",
    "selu", "selu_", "threshold", "threshold_", "triplet_margin_loss",
]
