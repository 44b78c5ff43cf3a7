"""1-D pooling layers with PyTorch's names, arguments and defaults: ``MaxPool1d``, ``AvgPool1d``,
``AdaptiveAvgPool1d``, ``AdaptiveMaxPool1d`` (the functions are in ``frontend/functional_pool1d.py``)."""

from __future__ import annotations

from typing import Any

from kiln.frontend import functional as F
from kiln.frontend.layers_conv import MaxPoolNd, _single
from kiln.frontend.module import Module
from kiln.frontend.tensor import Tensor



class MaxPool1d(MaxPoolNd):
    """``torch.nn.MaxPool1d``; ``return_indices=True`` returns ``(output, indices)`` (see ``F.max_pool1d``)."""

    function = "max_pool1d"


class AvgPool1d(Module):
    """``torch.nn.AvgPool1d``: sizes kept as 1-tuples, as PyTorch's; see ``F.avg_pool1d`` for the divisor."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True):
        super().__init__()
        self.kernel_size = _single(kernel_size)
        self.stride = _single(stride if stride is not None else kernel_size)
        self.padding, self.ceil_mode, self.count_include_pad = _single(padding), ceil_mode, count_include_pad

    def forward(self, input: Tensor) -> Tensor:
        return F.avg_pool1d(input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool1d(Module):
    """``torch.nn.AdaptiveAvgPool1d(output_size)``."""

    def __init__(self, output_size: Any):
        super().__init__()
        self.output_size = output_size

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_avg_pool1d(input, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveMaxPool1d(AdaptiveAvgPool1d):
    """``torch.nn.AdaptiveMaxPool1d(output_size)``, any output size; ``return_indices=True`` gives ``(values, indices)``."""

    def __init__(self, output_size: Any, return_indices: bool = False):
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, input: Tensor) -> Tensor:
        return F.adaptive_max_pool1d(input, self.output_size, self.return_indices)


__all__ = ["AdaptiveAvgPool1d", "AdaptiveMaxPool1d", "AvgPool1d", "MaxPool1d"]
