"""More ``torch.nn`` layers with PyTorch's names, arguments, defaults, reprs and ``state_dict`` keys: ``ConvTranspose1d``,
``InstanceNorm1d``/``2d``/``3d``, ``AlphaDropout``, ``FeatureAlphaDropout``, ``EmbeddingBag``, ``LocalResponseNorm``, ``LPPool1d/2d``,
``MaxUnpool1d/2d``, ``TripletMarginWithDistanceLoss`` and ``MultiLabelMarginLoss``.

Each wraps its ``F.*`` function (``frontend/functional_extra*.py``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable

import numpy as np

from kiln.frontend import layer_resets
from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.conv_transpose_output_size import output_padding_for
from kiln.frontend.functional_nn import _pair, embedding_padding_index
from kiln.frontend.functional_conv3d import triple
from kiln.frontend.functional_losses import _legacy_reduction
from kiln.frontend.layers_conv import BatchNorm2d, _check_groups, _single, conv_repr
from kiln.frontend.losses import NLLLoss
from kiln.frontend.module import Module, Parameter, layer_dtype
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import located_error


class ConvTranspose1d(Module):
    """``torch.nn.ConvTranspose1d``: ``weight (in_channels, out_channels / groups, K)``, U(-1/sqrt(fan_in), 1/sqrt(fan_in))
    with ``fan_in = out_channels / groups * K`` (the weight's dim 1, as PyTorch). ``forward(input, output_size)`` picks
    this call's output padding as PyTorch's (``frontend/conv_transpose_output_size.py``)."""

    reset_parameters = layer_resets.fan_in_uniform

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                 groups: int = 1, bias: bool = True, dilation: Any = 1, padding_mode: str = "zeros", dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        _check_groups(in_channels, out_channels, groups)
        if padding_mode != "zeros":
            raise ValueError(f'Only "zeros" padding mode is supported for ConvTranspose1d, got {padding_mode!r} (as PyTorch)')
        self.in_channels, self.out_channels, self.groups, self.padding_mode = in_channels, out_channels, groups, padding_mode
        self.kernel_size, self.stride, self.padding = _single(kernel_size), _single(stride), _single(padding)
        self.output_padding, self.dilation = _single(output_padding), _single(dilation)
        if self.output_padding[0] >= max(self.stride[0], self.dilation[0]):
            raise ValueError(f"output_padding {self.output_padding} must be smaller than stride {self.stride} or dilation {self.dilation}")
        bound = 1 / math.sqrt(out_channels // groups * self.kernel_size[0])
        self.weight = Parameter(init.uniform((in_channels, out_channels // groups) + self.kernel_size, bound, dtype))
        self.bias = Parameter(init.uniform((out_channels,), bound, dtype)) if bias else None
        layer_resets.reset_if_overridden(self, layer_resets.fan_in_uniform)

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:
        output_padding = output_padding_for(self, input, output_size, 1)
        return F.conv_transpose1d(input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups, self.dilation)

    def extra_repr(self) -> str:
        return conv_repr(self)


class _InstanceNorm(Module):
    """``torch.nn.InstanceNorm{1,2,3}d``: each sample's channels of ``(N, C, *spatial)`` (or unbatched ``(C, *spatial)``)
    normalized over the spatial dims; with ``affine``, per-channel ``weight`` (ones) and ``bias`` (zeros, unless
    ``bias=False``). With ``track_running_stats`` the buffers ``running_mean``, ``running_var`` and
    ``num_batches_tracked`` exist: training mode records the running statistics (see ``F.instance_norm``), eval mode
    normalizes with them, as PyTorch's."""

    reset_parameters = layer_resets.running_stats_and_affine
    reset_running_stats = layer_resets.running_stats

    spatial = 1

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = False,
                 track_running_stats: bool = False, dtype: Any = None, *, bias: bool = True):
        dtype = layer_dtype(dtype)
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine and bias else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        layer_resets.reset_if_overridden(self, layer_resets.running_stats_and_affine)

    def forward(self, input: Tensor) -> Tensor:
        name, batched = type(self).__name__, self.spatial + 2
        if input.ndim not in (batched - 1, batched):
            raise located_error(f"{name}: expected {batched - 1}D or {batched}D input (got {input.ndim}D input)")
        if input.shape[-self.spatial - 1] != self.num_features:
            message = (f"{name}: expected input's size at dim={input.ndim - self.spatial - 1} to match num_features "
                       f"({self.num_features}), but got: {input.shape[-self.spatial - 1]}.")
            if self.affine:
                raise located_error(message)
            warnings.warn(message, stacklevel=2)
        if input.ndim == batched - 1:
            return self.forward(input.unsqueeze(0)).squeeze(0)
        momentum = self.momentum if self.momentum is not None else 0.0
        return F.instance_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                               self.training or not self.track_running_stats, momentum, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class InstanceNorm1d(_InstanceNorm):
    spatial = 1


class InstanceNorm2d(_InstanceNorm):
    spatial = 2


class InstanceNorm3d(_InstanceNorm):
    spatial = 3


class AlphaDropout(Module):
    """``torch.nn.AlphaDropout``: ``F.alpha_dropout`` while training, the identity in eval mode (nothing traced)."""

    function = "alpha_dropout"

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def forward(self, input: Tensor) -> Tensor:
        return getattr(F, self.function)(input, self.p, self.training, inplace=self.inplace)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class FeatureAlphaDropout(AlphaDropout):
    """``torch.nn.FeatureAlphaDropout``: ``F.feature_alpha_dropout`` (whole channels) while training."""

    function = "feature_alpha_dropout"


class EmbeddingBag(Module):
    """``torch.nn.EmbeddingBag``: ``weight (num_embeddings, embedding_dim)`` initialised N(0, 1), the ``padding_idx`` row
    zero; ``forward(input, offsets=None, per_sample_weights=None)`` is ``F.embedding_bag``."""

    reset_parameters = layer_resets.standard_normal_rows

    def __init__(self, num_embeddings: int, embedding_dim: int, max_norm: float | None = None, norm_type: float = 2.0,
                 scale_grad_by_freq: bool = False, mode: str = "mean", sparse: bool = False, _weight: Any = None,
                 include_last_offset: bool = False, padding_idx: int | None = None, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        if mode not in ("sum", "mean", "max"):
            raise ValueError(f"EmbeddingBag: mode has to be one of sum, mean or max, got {mode!r}")
        self.num_embeddings, self.embedding_dim, self.mode = num_embeddings, embedding_dim, mode
        self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse = max_norm, norm_type, scale_grad_by_freq, sparse
        self.include_last_offset = include_last_offset
        self.padding_idx = None if padding_idx is None else embedding_padding_index(padding_idx, num_embeddings)
        drawn = _weight is None
        if _weight is None:
            _weight = init.normal((num_embeddings, embedding_dim), 1.0, dtype)
            if self.padding_idx is not None:
                _weight[self.padding_idx] = 0
        elif np.shape(_weight) != (num_embeddings, embedding_dim):
            raise ValueError(f"EmbeddingBag: _weight has shape {np.shape(_weight)}, expected {(num_embeddings, embedding_dim)}")
        self.weight = Parameter(np.array(_weight))
        if drawn:  # not from_pretrained's weight, as PyTorch's
            layer_resets.reset_if_overridden(self, layer_resets.standard_normal_rows)

    @classmethod
    def from_pretrained(cls, embeddings: Any, freeze: bool = True, max_norm: float | None = None, norm_type: float = 2.0,
                        scale_grad_by_freq: bool = False, mode: str = "mean", sparse: bool = False,
                        include_last_offset: bool = False, padding_idx: int | None = None) -> "EmbeddingBag":
        """An ``EmbeddingBag`` of the 2-D ``embeddings``, frozen by default, as PyTorch's (kiln holds a copy: torch shares them)."""
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2:
            raise ValueError(f"EmbeddingBag.from_pretrained: embeddings must be 2-D, got shape {embeddings.shape}")
        bag = cls(*embeddings.shape, max_norm=max_norm, norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq, mode=mode,
                  sparse=sparse, _weight=embeddings, include_last_offset=include_last_offset, padding_idx=padding_idx)
        bag.weight.requires_grad = not freeze
        return bag

    def forward(self, input: Tensor, offsets: Any = None, per_sample_weights: Tensor | None = None) -> Tensor:
        return F.embedding_bag(input, self.weight, offsets, self.max_norm, self.norm_type, self.scale_grad_by_freq, self.mode, self.sparse,
                               per_sample_weights, self.include_last_offset, self.padding_idx)

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        text += f", max_norm={self.max_norm!r}" if self.max_norm is not None else ""
        text += f", norm_type={self.norm_type!r}" if self.norm_type != 2 else ""
        text += f", scale_grad_by_freq={self.scale_grad_by_freq!r}" if self.scale_grad_by_freq is not False else ""
        text += f", mode={self.mode!r}"
        return text + (f", padding_idx={self.padding_idx!r}" if self.padding_idx is not None else "")


class LocalResponseNorm(Module):
    """``torch.nn.LocalResponseNorm``: see ``F.local_response_norm``."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, input: Tensor) -> Tensor:
        return F.local_response_norm(input, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class LPPool1d(Module):
    """``torch.nn.LPPool1d``: the options stored as given; see ``F.lp_pool1d``."""

    function = "lp_pool1d"

    def __init__(self, norm_type: float, kernel_size: Any, stride: Any = None, ceil_mode: bool = False):
        super().__init__()
        self.norm_type, self.kernel_size, self.stride, self.ceil_mode = norm_type, kernel_size, stride, ceil_mode

    def forward(self, input: Tensor) -> Tensor:
        return getattr(F, self.function)(input, float(self.norm_type), self.kernel_size, self.stride, self.ceil_mode)

    def extra_repr(self) -> str:
        return f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}, ceil_mode={self.ceil_mode}"


class LPPool2d(LPPool1d):
    """``torch.nn.LPPool2d``: see ``F.lp_pool2d``."""

    function = "lp_pool2d"


class LPPool3d(LPPool1d):
    """``torch.nn.LPPool3d``: see ``F.lp_pool3d``."""

    function = "lp_pool3d"


class MaxUnpool1d(Module):
    """``torch.nn.MaxUnpool1d``: ``forward(input, indices, output_size=None)`` is ``F.max_unpool1d``; sizes kept as tuples."""

    function, size = "max_unpool1d", staticmethod(_single)

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0):
        super().__init__()
        self.kernel_size = self.size(kernel_size)
        self.stride = self.size(stride if stride is not None else kernel_size)
        self.padding = self.size(padding)

    def forward(self, input: Tensor, indices: Tensor, output_size: Any = None) -> Tensor:
        return getattr(F, self.function)(input, indices, self.kernel_size, self.stride, self.padding, output_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxUnpool2d(MaxUnpool1d):
    """``torch.nn.MaxUnpool2d``: see ``F.max_unpool2d``."""

    function, size = "max_unpool2d", staticmethod(_pair)


class MaxUnpool3d(MaxUnpool1d):
    """``torch.nn.MaxUnpool3d``: see ``F.max_unpool3d``."""

    function, size = "max_unpool3d", staticmethod(lambda value: triple("MaxUnpool3d", "size", value))


class SyncBatchNorm(BatchNorm2d):
    """``torch.nn.SyncBatchNorm`` over any ``(N, C, *)`` input: ``BatchNorm2d`` on the input viewed as ``(N, C, L, 1)``.
    kiln's batch norms already synchronize: under ``kiln.distributed.DataParallel`` the training statistics are the
    global batch's (``frontend/sync_batch_norm.py``), so ``process_group`` is kept for PyTorch code and not used."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: Any = None, device: Any = None, dtype: Any = None, *, bias: bool = True):
        if momentum is None or (affine and not bias):
            raise ValueError("SyncBatchNorm: momentum=None (a cumulative average) and affine without a bias are not supported in kiln")
        super().__init__(num_features, eps, momentum, affine, dtype=dtype)
        self.affine, self.track_running_stats, self.process_group = affine, track_running_stats, process_group
        if not track_running_stats:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim < 2 or input.shape[1] != self.num_features:
            raise located_error(f"SyncBatchNorm({self.num_features}) expects an (N, {self.num_features}, *) input, got {input.type}")
        if not self.track_running_stats:
            return F.batch_norm(input, None, None, self.weight, self.bias, True, self.momentum, self.eps)
        length = math.prod(input.shape[2:])
        if not isinstance(length, int):
            raise located_error(f"SyncBatchNorm needs static dims after the channels, got {input.type}")
        return super().forward(input.reshape(input.shape[0], self.num_features, length, 1)).reshape(input.shape)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, process_group: Any = None) -> Module:
        """``module`` with every batch norm in it (``BatchNorm1d/2d/3d``) replaced by a ``SyncBatchNorm`` sharing its
        parameters, buffers and mode; a batch norm itself comes back as a new ``SyncBatchNorm``, as PyTorch's."""
        output = module
        if isinstance(module, BatchNorm2d):
            affine = module.weight is not None
            output = cls(module.num_features, module.eps, module.momentum, affine, getattr(module, "track_running_stats", True), process_group)
            for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                value = getattr(module, name, None)
                if value is not None:
                    setattr(output, name, value)
            object.__setattr__(output, "training", module.training)
        for name, child in module.named_children():
            output.add_module(name, cls.convert_sync_batchnorm(child, process_group))
        return output


class NLLLoss2d(NLLLoss):
    """``torch.nn.NLLLoss2d``: the deprecated name of ``NLLLoss`` (which takes ``(N, C, H, W)`` input already), with
    PyTorch's legacy ``size_average``/``reduce`` arguments folded into ``reduction`` as PyTorch folds them."""

    def __init__(self, weight: Any = None, size_average: bool | None = None, ignore_index: int = -100, reduce: bool | None = None,
                 reduction: str = "mean"):
        if size_average is not None or reduce is not None:
            reduction = "none" if reduce is False else "sum" if size_average is False else "mean"
        super().__init__(weight, ignore_index, reduction)


class TripletMarginWithDistanceLoss(Module):
    """``torch.nn.TripletMarginWithDistanceLoss``: the distance a callable (a module shows in the repr, as PyTorch's
    default ``PairwiseDistance``); see ``F.triplet_margin_with_distance_loss``."""

    def __init__(self, *, distance_function: Callable[[Tensor, Tensor], Tensor] | None = None, margin: float = 1.0, swap: bool = False,
                 reduction: str = "mean"):
        super().__init__()
        if margin <= 0:
            raise ValueError(f"TripletMarginWithDistanceLoss: expected margin to be greater than 0, got {margin} instead")
        from kiln.frontend.layers import PairwiseDistance

        self.distance_function = distance_function if distance_function is not None else PairwiseDistance()
        self.margin, self.swap, self.reduction = margin, swap, reduction

    def forward(self, anchor: Tensor, positive: Tensor, negative: Tensor) -> Tensor:
        return F.triplet_margin_with_distance_loss(anchor, positive, negative, distance_function=self.distance_function,
                                                   margin=self.margin, swap=self.swap, reduction=self.reduction)


class MultiLabelMarginLoss(Module):
    """``torch.nn.MultiLabelMarginLoss``: see ``F.multilabel_margin_loss``."""

    @_legacy_reduction
    def __init__(self, reduction: str = "mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return F.multilabel_margin_loss(input, target, self.reduction)


__all__ = [
    "AlphaDropout", "ConvTranspose1d", "EmbeddingBag", "FeatureAlphaDropout", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d", "LPPool1d", "LPPool2d", "LPPool3d",
    "LocalResponseNorm", "MaxUnpool1d", "MaxUnpool2d", "MaxUnpool3d", "NLLLoss2d", "SyncBatchNorm", "MultiLabelMarginLoss", "TripletMarginWithDistanceLoss",
]
