"""Activation modules with PyTorch's names, constructor arguments and reprs (``nn.SiLU``, ``nn.LeakyReLU(0.2)``...).

Each wraps its ``F.*`` function (``frontend/functional_activation.py``); ``Identity`` and ``LogSoftmax`` complete the
set. ``inplace`` flags are accepted and shown as PyTorch shows them; the traced graph is pure either way.
"""

from __future__ import annotations

from typing import Any

from kiln.frontend import functional as F
from kiln.frontend.module import Module
from kiln.frontend.tensor import Tensor


class _InplaceActivation(Module):
    """An activation PyTorch gives an ``inplace`` flag: kept for the repr and for code written for PyTorch."""

    def __init__(self, inplace: bool = False):
        super().__init__()
        self.inplace = inplace

    def _inplace_suffix(self) -> str:
        return ", inplace=True" if self.inplace else ""

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class SiLU(_InplaceActivation):
    def forward(self, input: Tensor) -> Tensor:
        return F.silu(input)


class Mish(_InplaceActivation):
    def forward(self, input: Tensor) -> Tensor:
        return F.mish(input)


class SELU(_InplaceActivation):
    def forward(self, input: Tensor) -> Tensor:
        return F.selu(input)


class ReLU6(_InplaceActivation):
    def forward(self, input: Tensor) -> Tensor:
        return F.relu6(input)


class Hardswish(_InplaceActivation):
    def forward(self, input: Tensor) -> Tensor:
        return F.hardswish(input)

    def extra_repr(self) -> str:
        return ""  # PyTorch's Hardswish does not show its inplace flag


class LeakyReLU(_InplaceActivation):
    def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
        super().__init__(inplace)
        self.negative_slope = negative_slope

    def forward(self, input: Tensor) -> Tensor:
        return F.leaky_relu(input, self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}{self._inplace_suffix()}"


class ELU(_InplaceActivation):
    def __init__(self, alpha: float = 1.0, inplace: bool = False):
        super().__init__(inplace)
        self.alpha = alpha

    def forward(self, input: Tensor) -> Tensor:
        return F.elu(input, self.alpha)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}{self._inplace_suffix()}"


class CELU(ELU):
    def forward(self, input: Tensor) -> Tensor:
        return F.celu(input, self.alpha)


class Hardtanh(_InplaceActivation):
    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False):
        super().__init__(inplace)
        if max_val <= min_val:
            raise ValueError(f"Hardtanh: max_val ({max_val}) must be greater than min_val ({min_val}), as in PyTorch")
        self.min_val = min_val
        self.max_val = max_val

    def forward(self, input: Tensor) -> Tensor:
        return F.hardtanh(input, self.min_val, self.max_val)

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}{self._inplace_suffix()}"


class Softplus(Module):
    def __init__(self, beta: float = 1.0, threshold: float = 20.0):
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def forward(self, input: Tensor) -> Tensor:
        return F.softplus(input, self.beta, self.threshold)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class LogSigmoid(Module):
    def forward(self, input: Tensor) -> Tensor:
        return F.logsigmoid(input)


class Softsign(Module):
    def forward(self, input: Tensor) -> Tensor:
        return F.softsign(input)


class LogSoftmax(Module):
    """``log_softmax`` over ``dim``. PyTorch's default ``dim=None`` guesses the axis from the rank and is deprecated;
    kiln asks for the axis instead."""

    def __init__(self, dim: int | None = None):
        super().__init__()
        if dim is None:
            raise ValueError("LogSoftmax needs dim, the axis to normalize (e.g. nn.LogSoftmax(dim=-1)); "
                             "PyTorch's implicit choice for dim=None is deprecated")
        self.dim = dim

    def forward(self, input: Tensor) -> Tensor:
        return F.log_softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Identity(Module):
    """Returns its input; any constructor arguments are ignored, as PyTorch's (a placeholder in a layer list)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__()

    def forward(self, input: Any) -> Any:
        return input


__all__ = [
    "CELU", "ELU", "Hardswish", "Hardtanh", "Identity", "LeakyReLU", "LogSigmoid", "LogSoftmax", "Mish", "ReLU6", "SELU", "SiLU",
    "Softplus", "Softsign",
]
