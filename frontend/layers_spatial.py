"""Spatial layers with PyTorch's names, arguments, defaults, reprs and ``state_dict`` keys: resizing (``Upsample``,
``PixelShuffle``), padding (``ZeroPad2d``, ``ReflectionPad2d``...), sliding windows (``Unfold``, ``Fold``), ``GLU``,
``Hardsigmoid``, channel dropout and ``Bilinear``.

Each wraps its ``F.*`` function (``frontend/functional_spatial.py``, and ``F.pad`` for the pads). ``Bilinear`` draws
its weight and bias from kiln's generator (``kiln.manual_seed``) with PyTorch's bound ``1 / sqrt(in1_features)``.
"""

from __future__ import annotations

import math
from typing import Any

from kiln.frontend import layer_resets
from kiln.frontend import functional as F
from kiln.frontend import init
from kiln.frontend.module import Module, Parameter, layer_dtype
from kiln.frontend.tensor import Tensor


# Resizing -------------------------------------------------------------------------------------------------------------


class Upsample(Module):
    """``torch.nn.Upsample``: ``F.interpolate`` to ``size`` or by ``scale_factor`` (kept as floats, as PyTorch)."""

    def __init__(self, size: Any = None, scale_factor: Any = None, mode: str = "nearest", align_corners: bool | None = None,
                 recompute_scale_factor: bool | None = None):
        super().__init__()
        self.size = size
        self.scale_factor = _floats(scale_factor)
        self.mode, self.align_corners, self.recompute_scale_factor = mode, align_corners, recompute_scale_factor

    def forward(self, input: Tensor) -> Tensor:
        return F.interpolate(input, self.size, self.scale_factor, self.mode, self.align_corners, self.recompute_scale_factor)

    def extra_repr(self) -> str:
        target = f"scale_factor={self.scale_factor!r}" if self.scale_factor is not None else f"size={self.size!r}"
        return f"{target}, mode={self.mode!r}"


def _floats(scale_factor: Any) -> Any:
    if scale_factor is None:
        return None
    return tuple(float(f) for f in scale_factor) if isinstance(scale_factor, (tuple, list)) else float(scale_factor)


class UpsamplingNearest2d(Upsample):
    """``torch.nn.UpsamplingNearest2d``: ``Upsample(mode="nearest")``."""

    def __init__(self, size: Any = None, scale_factor: Any = None):
        super().__init__(size, scale_factor, mode="nearest")


class UpsamplingBilinear2d(Upsample):
    """``torch.nn.UpsamplingBilinear2d``: ``Upsample(mode="bilinear", align_corners=True)``."""

    def __init__(self, size: Any = None, scale_factor: Any = None):
        super().__init__(size, scale_factor, mode="bilinear", align_corners=True)


class PixelShuffle(Module):
    """``(*, C r^2, H, W) -> (*, C, H r, W r)``."""

    def __init__(self, upscale_factor: int):
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, input: Tensor) -> Tensor:
        return F.pixel_shuffle(input, self.upscale_factor)

    def extra_repr(self) -> str:
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    """``(*, C, H r, W r) -> (*, C r^2, H, W)``."""

    def __init__(self, downscale_factor: int):
        super().__init__()
        self.downscale_factor = downscale_factor

    def forward(self, input: Tensor) -> Tensor:
        return F.pixel_unshuffle(input, self.downscale_factor)

    def extra_repr(self) -> str:
        return f"downscale_factor={self.downscale_factor}"


class ChannelShuffle(Module):
    """ShuffleNet's channel shuffle over ``groups``."""

    def __init__(self, groups: int):
        super().__init__()
        self.groups = groups

    def forward(self, input: Tensor) -> Tensor:
        return F.channel_shuffle(input, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


# Padding --------------------------------------------------------------------------------------------------------------


class _Pad(Module):
    """``F.pad`` with a fixed mode over the last ``dims`` dims; an int ``padding`` pads every side by it."""

    mode = "constant"
    dims = 1

    def __init__(self, padding: int | tuple[int, ...]):
        super().__init__()
        self.padding = _sides(type(self).__name__, padding, self.dims)

    def forward(self, input: Tensor) -> Tensor:
        return F.pad(input, self.padding, self.mode)

    def extra_repr(self) -> str:
        return f"{self.padding}"


def _sides(layer: str, padding: int | tuple[int, ...], dims: int) -> tuple[int, ...]:
    """``(left, right[, top, bottom[, front, back]])`` from an int or a tuple of ``2 dims`` ints."""
    if isinstance(padding, int):
        return (padding,) * (2 * dims)
    sides = tuple(int(p) for p in padding)
    if len(sides) != 2 * dims:
        raise ValueError(f"{layer}: padding must be an int or a {2 * dims}-tuple (left, right, ...), got {padding!r}")
    return sides


class _ConstantPad(_Pad):
    def __init__(self, padding: int | tuple[int, ...], value: float):
        super().__init__(padding)
        self.value = value

    def forward(self, input: Tensor) -> Tensor:
        return F.pad(input, self.padding, "constant", self.value)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, value={self.value}"


class ConstantPad1d(_ConstantPad):
    dims = 1


class ConstantPad2d(_ConstantPad):
    dims = 2


class ConstantPad3d(_ConstantPad):
    dims = 3


class _ZeroPad(_ConstantPad):
    def __init__(self, padding: int | tuple[int, ...]):
        super().__init__(padding, 0.0)

    def extra_repr(self) -> str:
        return f"{self.padding}"


class ZeroPad1d(_ZeroPad):
    dims = 1


class ZeroPad2d(_ZeroPad):
    dims = 2


class ZeroPad3d(_ZeroPad):
    dims = 3


class ReflectionPad1d(_Pad):
    mode, dims = "reflect", 1


class ReflectionPad2d(_Pad):
    mode, dims = "reflect", 2


class ReflectionPad3d(_Pad):
    mode, dims = "reflect", 3


class ReplicationPad1d(_Pad):
    mode, dims = "replicate", 1


class ReplicationPad2d(_Pad):
    mode, dims = "replicate", 2


class ReplicationPad3d(_Pad):
    mode, dims = "replicate", 3


class CircularPad1d(_Pad):
    mode, dims = "circular", 1


class CircularPad2d(_Pad):
    mode, dims = "circular", 2


class CircularPad3d(_Pad):
    mode, dims = "circular", 3


# Sliding windows ------------------------------------------------------------------------------------------------------


class Unfold(Module):
    """im2col: ``(N, C, H, W) -> (N, C KH KW, L)``, as ``F.unfold``."""

    def __init__(self, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1):
        super().__init__()
        self.kernel_size, self.dilation, self.padding, self.stride = kernel_size, dilation, padding, stride

    def forward(self, input: Tensor) -> Tensor:
        return F.unfold(input, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, dilation={self.dilation}, padding={self.padding}, stride={self.stride}"


class Fold(Module):
    """col2im, ``Unfold``'s adjoint: ``(N, C KH KW, L) -> (N, C, H, W)`` with overlaps summed, as ``F.fold``."""

    def __init__(self, output_size: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1):
        super().__init__()
        self.output_size, self.kernel_size = output_size, kernel_size
        self.dilation, self.padding, self.stride = dilation, padding, stride

    def forward(self, input: Tensor) -> Tensor:
        return F.fold(input, self.output_size, self.kernel_size, self.dilation, self.padding, self.stride)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, kernel_size={self.kernel_size}, dilation={self.dilation}, "
                f"padding={self.padding}, stride={self.stride}")


# Gating, activation, dropout ------------------------------------------------------------------------------------------


class GLU(Module):
    """``a sigmoid(b)`` over the halves of ``dim``."""

    def __init__(self, dim: int = -1):
        super().__init__()
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.glu(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Hardsigmoid(Module):
    """``relu6(x + 3) / 6``; ``inplace=True`` writes into the input, as PyTorch's."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input: Tensor) -> Tensor:
        return F.hardsigmoid(input, inplace=self.inplace)


class _ChannelDropout(Module):
    """Zero whole channels with probability ``p`` in training, the rest scaled by ``1 / (1 - p)``; identity in eval."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p, self.inplace = p, inplace

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout1d(_ChannelDropout):
    """Channel dropout on ``(N, C, L)`` or ``(C, L)``."""

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout1d(input, self.p, self.training, inplace=self.inplace)


class Dropout2d(_ChannelDropout):
    """Channel dropout on ``(N, C, H, W)`` (a 3-D input is read as ``(N, C, L)``, as PyTorch)."""

    def forward(self, input: Tensor) -> Tensor:
        return F.dropout2d(input, self.p, self.training, inplace=self.inplace)


# Bilinear -------------------------------------------------------------------------------------------------------------


class Bilinear(Module):
    """``y = x1^T W x2 + b`` with ``weight`` ``(out_features, in1_features, in2_features)`` and ``bias``
    ``(out_features,)``, both ``U(-1/sqrt(in1_features), 1/sqrt(in1_features))`` as ``torch.nn.Bilinear``."""

    reset_parameters = layer_resets.bilinear_uniform

    def __init__(self, in1_features: int, in2_features: int, out_features: int, bias: bool = True, dtype: Any = None):
        dtype = layer_dtype(dtype)
        super().__init__()
        self.in1_features, self.in2_features, self.out_features = in1_features, in2_features, out_features
        bound = 1.0 / math.sqrt(in1_features)
        self.weight = Parameter(init.uniform((out_features, in1_features, in2_features), bound, dtype))
        self.bias = Parameter(init.uniform((out_features,), bound, dtype)) if bias else None
        layer_resets.reset_if_overridden(self, layer_resets.bilinear_uniform)

    def forward(self, input1: Tensor, input2: Tensor) -> Tensor:
        return F.bilinear(input1, input2, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


__all__ = [
    "Bilinear", "ChannelShuffle", "CircularPad1d", "CircularPad2d", "CircularPad3d", "ConstantPad1d", "ConstantPad2d", "ConstantPad3d",
    "Dropout1d", "Dropout2d", "Fold", "GLU", "Hardsigmoid", "PixelShuffle", "PixelUnshuffle", "ReflectionPad1d", "ReflectionPad2d",
    "ReflectionPad3d", "ReplicationPad1d", "ReplicationPad2d", "ReplicationPad3d", "Unfold", "Upsample", "UpsamplingBilinear2d",
    "UpsamplingNearest2d", "ZeroPad1d", "ZeroPad2d", "ZeroPad3d",
]
