"""Normalization layers with PyTorch's names, arguments, defaults and ``state_dict`` keys: ``GroupNorm``, ``RMSNorm`` and
``BatchNorm1d`` (the instance norms are in ``frontend/layers_extra.py``).

``GroupNorm`` and ``RMSNorm`` call ``F.group_norm`` and ``F.rms_norm`` (``frontend/functional_norm.py``).
``BatchNorm1d`` is ``BatchNorm2d`` (``frontend/layers_conv.py``)
on its input viewed as ``(N, C, L, 1)``: the statistics over ``(N, L, 1)`` are those over ``(N, L)``, so training mode,
the running statistics it records, eval mode and ``SyncBatchNorm`` under ``DataParallel`` all come from there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend import layer_resets
from kiln.frontend import functional as F
from kiln.frontend.trace import located_error
from kiln.frontend.layers_conv import BatchNorm2d
from kiln.frontend.module import Module, Parameter, layer_dtype
from kiln.frontend.tensor import Tensor


class GroupNorm(Module):
    """``torch.nn.GroupNorm``: normalize ``(N, C, *)`` over each group of ``C / num_groups`` channels and ``*``; with
    ``affine``, per-channel ``weight`` (ones) and, unless ``bias=False`` (keyword-only, as torch 2.13's), ``bias``
    (zeros)."""

    reset_parameters = layer_resets.ones_and_zeros

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, dtype: Any = None, *,
                 bias: bool = True):
        dtype = layer_dtype(dtype)
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_channels {num_channels} must be divisible by num_groups {num_groups}")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self.weight = Parameter(np.ones(num_channels, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_channels, dtype)) if affine and bias else None
        layer_resets.reset_if_overridden(self, layer_resets.ones_and_zeros)

    def forward(self, input: Tensor) -> Tensor:
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, bias={self.bias is not None}"


class RMSNorm(Module):
    """``torch.nn.RMSNorm``: ``x / sqrt(mean(x^2) + eps) * weight`` over the trailing ``normalized_shape`` dims (no bias);
    ``eps=None`` is the machine epsilon of the input's dtype."""

    reset_parameters = layer_resets.ones_and_zeros

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float | None = None, elementwise_affine: bool = True,
                 dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        self.weight = Parameter(np.ones(self.normalized_shape, dtype)) if elementwise_affine else None
        layer_resets.reset_if_overridden(self, layer_resets.ones_and_zeros)

    def forward(self, input: Tensor) -> Tensor:
        return F.rms_norm(input, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class BatchNorm1d(BatchNorm2d):
    """``torch.nn.BatchNorm1d`` over ``(N, C)`` or ``(N, C, L)``: ``BatchNorm2d`` on the input viewed as ``(N, C, L, 1)``.

    With ``track_running_stats=False`` there are no buffers (``state_dict`` holds ``weight`` and ``bias`` only) and every
    forward, eval mode included, normalizes with the batch's statistics, as PyTorch's.
    """

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim not in (2, 3) or input.shape[1] != self.num_features:
            features = self.num_features
            raise located_error(f"BatchNorm1d({features}) expects an (N, {features}) or (N, {features}, L) input, got {input.type}")
        if not self.track_running_stats:
            return F.batch_norm(input, None, None, self.weight, self.bias, True, self.momentum, self.eps)
        length = input.shape[2] if input.ndim == 3 else 1
        return super().forward(input.reshape(input.shape[0], self.num_features, length, 1)).reshape(input.shape)


__all__ = ["BatchNorm1d", "GroupNorm", "RMSNorm"]
