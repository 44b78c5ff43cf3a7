"""Convolution and pooling layers with PyTorch's names, weight layouts and default initialisation (NCHW)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.functional_nn import _pair
from kiln.frontend.module import Module, Parameter
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext


class Conv2d(Module):
    """``weight (out_channels, in_channels / groups, KH, KW)``, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as ``torch.nn.Conv2d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: int = 1, bias: bool = True, dtype: str = "float32"):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels {in_channels} and out_channels {out_channels} must be divisible by groups {groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = _pair(kernel_size), _pair(stride), _pair(padding), _pair(dilation)
        fan_in = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        bound = 1 / math.sqrt(fan_in)
        self.weight = Parameter(init.uniform((out_channels, in_channels // groups) + self.kernel_size, bound, dtype))
        self.bias = Parameter(init.uniform((out_channels,), bound, dtype)) if bias else None

    def forward(self, input: Tensor) -> Tensor:
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(Module):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, input: Tensor) -> Tensor:
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride or self.kernel_size}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding)


class BatchNorm2d(Module):
    """``torch.nn.BatchNorm2d``: ``weight``, ``bias`` and the buffers ``running_mean``, ``running_var``, ``num_batches_tracked``.

    In training mode each step normalizes with the batch's statistics and returns the updated running
    statistics as extra outputs, which ``compile_train_step`` writes back; eval mode uses the running ones.
    Under ``kiln.distributed.DataParallel`` the batch is the global one, all ranks' shards (``SyncBatchNorm``).
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True, dtype: str = "float32"):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = Parameter(np.ones(num_features, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_features, dtype)) if affine else None
        self.register_buffer("running_mean", np.zeros(num_features, dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype))
        self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim != 4:
            raise TraceError(f"BatchNorm2d expects an (N, C, H, W) input, got {input.type}")
        if self.training:
            TraceContext.current().update_buffer(self.num_batches_tracked, (self.num_batches_tracked + 1).value)
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias, self.training, self.momentum, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"
