"""Convolution and pooling layers with PyTorch's names, weight layouts and default initialisation (NCHW)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.frontend import layer_resets
from kiln.frontend.batch_norm_base import _BatchNorm
from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.conv_transpose_output_size import output_padding_for
from kiln.frontend.functional_nn import _pair, edge_pads
from kiln.frontend.module import Module, Parameter, layer_dtype
from kiln.frontend.tensor import Tensor


class Conv2d(Module):
    """``weight (out_channels, in_channels / groups, KH, KW)``, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as ``torch.nn.Conv2d``."""

    reset_parameters = layer_resets.fan_in_uniform

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels {in_channels} and out_channels {out_channels} must be divisible by groups {groups}")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.padding_mode = _check_padding_mode(padding_mode)
        fan_in = in_channels // groups * self.kernel_size[0] * self.kernel_size[1]
        bound = 1 / math.sqrt(fan_in)
        self.weight = Parameter(init.uniform((out_channels, in_channels // groups) + self.kernel_size, bound, dtype))
        self.bias = Parameter(init.uniform((out_channels,), bound, dtype)) if bias else None
        layer_resets.reset_if_overridden(self, layer_resets.fan_in_uniform)

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, self.weight, self.bias)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The convolution with the given weight and bias, as PyTorch's: subclasses override it to transform them
        (Whisper's ``Conv1d`` casts them to ``x.dtype``, weight-standardized convolutions normalize the weight)."""
        if self.padding_mode == "zeros":
            return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        padded = F.pad(input, edge_pads(self.padding, self.kernel_size, self.dilation), mode=self.padding_mode)
        return F.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)

    def extra_repr(self) -> str:
        return conv_repr(self)


class Conv1d(Module):
    """``weight (out_channels, in_channels / groups, K)``, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) as ``torch.nn.Conv1d``.

    ``padding`` may be an int, ``"valid"`` or ``"same"`` (stride 1), as PyTorch's; see ``F.conv1d``.
    """

    reset_parameters = layer_resets.fan_in_uniform

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        _check_groups(in_channels, out_channels, groups)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.dilation = _single(kernel_size), _single(stride), _single(dilation)
        self.padding = padding if isinstance(padding, str) else _single(padding)
        self.padding_mode = _check_padding_mode(padding_mode)
        bound = 1 / math.sqrt(in_channels // groups * self.kernel_size[0])
        self.weight = Parameter(init.uniform((out_channels, in_channels // groups) + self.kernel_size, bound, dtype))
        self.bias = Parameter(init.uniform((out_channels,), bound, dtype)) if bias else None
        layer_resets.reset_if_overridden(self, layer_resets.fan_in_uniform)

    def forward(self, input: Tensor) -> Tensor:
        return self._conv_forward(input, self.weight, self.bias)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        """The convolution with the given weight and bias, as PyTorch's (see ``Conv2d._conv_forward``)."""
        padding = self.padding if isinstance(self.padding, str) else self.padding[0]
        if self.padding_mode == "zeros":
            return F.conv1d(input, weight, bias, self.stride[0], padding, self.dilation[0], self.groups)
        padded = F.pad(input, edge_pads(self.padding, self.kernel_size, self.dilation), mode=self.padding_mode)
        return F.conv1d(padded, weight, bias, self.stride[0], 0, self.dilation[0], self.groups)

    def extra_repr(self) -> str:
        return conv_repr(self)


class ConvTranspose2d(Module):
    """``weight (in_channels, out_channels / groups, KH, KW)``, PyTorch's layout, and its initialisation:
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with ``fan_in = out_channels / groups * KH * KW`` (the weight's dim 1, as
    ``torch.nn.ConvTranspose2d`` computes it). ``forward(input, output_size)`` picks this call's output padding as
    PyTorch's (``frontend/conv_transpose_output_size.py``).
    """

    reset_parameters = layer_resets.fan_in_uniform

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1, padding: Any = 0, output_padding: Any = 0,
                 groups: int = 1, bias: bool = True, dilation: Any = 1, padding_mode: str = "zeros", dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        _check_groups(in_channels, out_channels, groups)
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.padding_mode = transposed_padding_mode("ConvTranspose2d", padding_mode)
        self.kernel_size, self.stride, self.padding = _pair(kernel_size), _pair(stride), _pair(padding)
        self.output_padding, self.dilation = _pair(output_padding), _pair(dilation)
        if any(p >= max(s, d) for p, s, d in zip(self.output_padding, self.stride, self.dilation)):
            raise ValueError(f"output_padding {self.output_padding} must be smaller than stride {self.stride} or dilation {self.dilation}")
        bound = 1 / math.sqrt(out_channels // groups * self.kernel_size[0] * self.kernel_size[1])
        self.weight = Parameter(init.uniform((in_channels, out_channels // groups) + self.kernel_size, bound, dtype))
        self.bias = Parameter(init.uniform((out_channels,), bound, dtype)) if bias else None
        layer_resets.reset_if_overridden(self, layer_resets.fan_in_uniform)

    def forward(self, input: Tensor, output_size: Any = None) -> Tensor:
        output_padding = output_padding_for(self, input, output_size, 2)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, self.padding, output_padding, self.groups, self.dilation)

    def extra_repr(self) -> str:
        return conv_repr(self)


def _check_groups(in_channels: int, out_channels: int, groups: int) -> None:
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"in_channels {in_channels} and out_channels {out_channels} must be divisible by groups {groups}")


def _single(value: Any) -> tuple[int]:
    """PyTorch's 1-d arguments: ``3`` and ``(3,)`` are both stored as ``(3,)``."""
    values = (value,) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != 1:
        raise ValueError(f"a 1-d size must be an int or a 1-tuple, got {value!r}")
    return (int(values[0]),)


class MaxPoolNd(Module):
    """PyTorch's ``_MaxPoolNd``: the options stored as given, applied by the ``F`` function named ``function``."""

    function = "max_pool2d"

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1, return_indices: bool = False,
                 ceil_mode: bool = False):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.dilation, self.return_indices, self.ceil_mode = padding, dilation, return_indices, ceil_mode

    def forward(self, input: Tensor) -> Tensor:
        pool = getattr(F, self.function)
        return pool(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"ceil_mode={self.ceil_mode}")


class MaxPool2d(MaxPoolNd):
    """``torch.nn.MaxPool2d``, every option; see ``F.max_pool2d`` (``return_indices=True`` returns ``(output, indices)``)."""

    function = "max_pool2d"


class AvgPool2d(Module):
    """``torch.nn.AvgPool2d``, every option; see ``F.avg_pool2d`` for the divisor."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride if stride is not None else kernel_size
        self.padding, self.ceil_mode, self.count_include_pad, self.divisor_override = padding, ceil_mode, count_include_pad, divisor_override

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                            self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class BatchNorm2d(_BatchNorm):
    """``torch.nn.BatchNorm2d`` on ``(N, C, H, W)`` (``frontend/batch_norm_base.py``: the parameters, buffers and
    options). Under ``kiln.distributed.DataParallel`` the batch is the global one, all ranks' shards
    (``SyncBatchNorm``)."""

    def forward(self, input: Tensor) -> Tensor:
        if input.ndim != 4:
            raise TraceError(f"BatchNorm2d expects an (N, C, H, W) input, got {input.type}")
        return self._batch_norm(input)


class AdaptiveAvgPool2d(Module):
    """``torch.nn.AdaptiveAvgPool2d``: ``output_size`` an int or ``(OH, OW)``, ``None`` keeping that dim; see ``F.adaptive_avg_pool2d``."""

    def __init__(self, output_size: Any):
        super().__init__()
        self.output_size = output_size

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool2d(AdaptiveAvgPool2d):
    """``torch.nn.AdaptiveMaxPool2d`` at any output size; ``return_indices=True`` gives ``(values, indices)``."""

    def __init__(self, output_size: Any, return_indices: bool = False):
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_max_pool2d(input, self.output_size, self.return_indices)


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def transposed_padding_mode(layer: str, padding_mode: str) -> str:
    """A transposed convolution's ``padding_mode``: zeros only, refused in PyTorch's words."""
    if padding_mode != "zeros":
        raise ValueError(f'Only "zeros" padding mode is supported for {layer}')
    return padding_mode


def _check_padding_mode(padding_mode: str) -> str:
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {', '.join(map(repr, PADDING_MODES))}, got {padding_mode!r}")
    return padding_mode


def conv_repr(conv: Module) -> str:
    """PyTorch's ``_ConvNd.extra_repr`` (convolutions and transposed ones): the sizes, then each option that differs
    from its default."""
    text = f"{conv.in_channels}, {conv.out_channels}, kernel_size={conv.kernel_size}, stride={conv.stride}"
    dims = len(conv.kernel_size)
    for name, default in (("padding", (0,) * dims), ("dilation", (1,) * dims), ("output_padding", (0,) * dims)):
        value = getattr(conv, name, default)
        if value != default:
            text += f", {name}={value}"
    if conv.groups != 1:
        text += f", groups={conv.groups}"
    if conv.bias is None:
        text += ", bias=False"
    mode = getattr(conv, "padding_mode", "zeros")
    return text + ("" if mode == "zeros" else f", padding_mode={mode}")
