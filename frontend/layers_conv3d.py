"""3-D layers with PyTorch's names, arguments, parameters and reprs: ``Conv3d``, ``MaxPool3d``, ``AvgPool3d``, the
adaptive 3-D pools, ``BatchNorm3d`` and ``Dropout3d``; the arithmetic is ``frontend/functional_conv3d.py``'s."""

from __future__ import annotations

import math
from typing import Any

from kiln.frontend import layer_resets
from kiln.frontend import functional_conv3d as F3
from kiln.frontend import init
from kiln.frontend.conv_transpose_output_size import output_padding_for
from kiln.frontend.functional_nn import edge_pads, pad
from kiln.frontend.layers_conv import BatchNorm2d, _check_groups, _check_padding_mode, conv_repr, transposed_padding_mode
from kiln.frontend.layers_spatial import _ChannelDropout
from kiln.frontend.module import Module, Parameter, layer_dtype
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import located_error


class Conv3d(Module):
    """``weight (out_channels, in_channels / groups, KD, KH, KW)``, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as PyTorch's;
    ``padding`` ints, ``"valid"`` or ``"same"``; ``padding_mode`` zeros, reflect, replicate or circular."""

    reset_parameters = layer_resets.fan_in_uniform

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        _check_groups(in_channels, out_channels, groups)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.padding_mode = _check_padding_mode(padding_mode)
        self.kernel_size = F3.triple("Conv3d", "kernel_size", kernel_size)
        self.stride, self.dilation = F3.triple("Conv3d", "stride", stride), F3.triple("Conv3d", "dilation", dilation)
        self.padding = padding if isinstance(padding, str) else F3.triple("Conv3d", "padding", padding)
        bound = 1 / math.sqrt(in_channels // groups * math.prod(self.kernel_size))
        self.weight = Parameter(init.uniform((out_channels, in_channels // groups) + self.kernel_size, bound, dtype))
        self.bias = Parameter(init.uniform((out_channels,), bound, dtype)) if bias else None
        layer_resets.reset_if_overridden(self, layer_resets.fan_in_uniform)

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, self.weight, self.bias)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The convolution with the given weight and bias, as PyTorch's (see ``Conv2d._conv_forward``); a
        ``padding_mode`` other than zeros pads the input first (``F.pad``'s reflect, replicate or circular)."""
        if self.padding_mode == "zeros":
            return F3.conv3d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        padded = pad(input, edge_pads(self.padding, self.kernel_size, self.dilation), mode=self.padding_mode)
        return F3.conv3d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return conv_repr(self)


class ConvTranspose3d(Module):
    """``weight (in_channels, out_channels / groups, KD, KH, KW)`` and its initialisation as PyTorch's
    (``fan_in = out_channels / groups * KD KH KW``); ``forward(input, output_size)`` picks this call's output padding as
    PyTorch's (``frontend/conv_transpose_output_size.py``)."""

    reset_parameters = layer_resets.fan_in_uniform

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                 groups: int = 1, bias: bool = True, dilation: Any = 1, padding_mode: str = "zeros", dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        _check_groups(in_channels, out_channels, groups)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.padding_mode = transposed_padding_mode("ConvTranspose3d", padding_mode)
        sizes = {name: F3.triple("ConvTranspose3d", name, value) for name, value in
                 (("kernel_size", kernel_size), ("stride", stride), ("padding", padding), ("output_padding", output_padding), ("dilation", dilation))}
        self.kernel_size, self.stride, self.padding = sizes["kernel_size"], sizes["stride"], sizes["padding"]
        self.output_padding, self.dilation = sizes["output_padding"], sizes["dilation"]
        if any(p >= max(s, d) for p, s, d in zip(self.output_padding, self.stride, self.dilation)):
            raise ValueError(f"output_padding {self.output_padding} must be smaller than stride {self.stride} or dilation {self.dilation}")
        bound = 1 / math.sqrt(out_channels // groups * math.prod(self.kernel_size))
        self.weight = Parameter(init.uniform((in_channels, out_channels // groups) + self.kernel_size, bound, dtype))
        self.bias = Parameter(init.uniform((out_channels,), bound, dtype)) if bias else None
        layer_resets.reset_if_overridden(self, layer_resets.fan_in_uniform)

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:
        output_padding = output_padding_for(self, input, output_size, 3)
        return F3.conv_transpose3d(input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups, self.dilation)

    def extra_repr(self) -> str:
        return conv_repr(self)


class MaxPool3d(Module):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__()
        self.kernel_size, self.stride, self.padding, self.dilation = kernel_size, stride if stride is not None else kernel_size, padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, input: Tensor) -> Tensor:
        return F3.max_pool3d(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"ceil_mode={self.ceil_mode}")


class AvgPool3d(Module):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride if stride is not None else kernel_size, padding
        self.ceil_mode, self.count_include_pad, self.divisor_override = ceil_mode, count_include_pad, divisor_override

    def forward(self, input: Tensor) -> Tensor:
        return F3.avg_pool3d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                             self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool3d(Module):
    def __init__(self, output_size: Any):
        super().__init__()
        self.output_size = output_size

    def forward(self, input: Tensor) -> Tensor:
        return F3.adaptive_avg_pool3d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool3d(AdaptiveAvgPool3d):
    def __init__(self, output_size: Any, return_indices: bool = False):
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, input: Tensor) -> Tensor:
        return F3.adaptive_max_pool3d(input, self.output_size, self.return_indices)


class BatchNorm3d(BatchNorm2d):
    """``torch.nn.BatchNorm3d`` on ``(N, C, D, H, W)``: BatchNorm2d's statistics over ``(N, D, H W)``, the same numbers."""

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim != 5:
            raise located_error(f"BatchNorm3d expects an (N, C, D, H, W) input, got {input.type}")
        return super().forward(input.flatten(3)).unflatten(3, tuple(input.shape[3:]))


class Dropout3d(_ChannelDropout):
    """Channel dropout on ``(N, C, D, H, W)`` or ``(C, D, H, W)``."""

    def forward(self, input: Tensor) -> Tensor:
        return F3.dropout3d(input, self.p, self.training, inplace=self.inplace)


__all__ = ["AdaptiveAvgPool3d", "AdaptiveMaxPool3d", "AvgPool3d", "BatchNorm3d", "Conv3d", "ConvTranspose3d", "Dropout3d", "MaxPool3d"]
