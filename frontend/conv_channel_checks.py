"""PyTorch's channel check of a convolution's input against its weight, with its words: ``Conv1d(4, ...)`` given 9
channels raises torch's ``RuntimeError`` naming the 1-D shapes, before kiln lowers the 1-D convolution onto
``tensor.conv2d`` (whose shape rule would name the unit height it adds)."""

from __future__ import annotations

from kiln.compiler.errors import TraceError
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.tensor import Tensor


class ConvChannelError(TraceError, RuntimeError):
    """An input whose channels are not the weight's in-channels times ``groups`` (torch's ``RuntimeError``)."""


def check_conv_channels(input: Tensor, weight: Tensor, groups: int) -> None:  # noqa: A002  (torch's names)
    """Raise torch's error when ``input``'s channel dim (1, batched) is not ``weight.shape[1] * groups``."""
    expected, got = weight.shape[1] * groups if isinstance(weight.shape[1], int) else None, input.shape[1]
    if expected is None or not isinstance(got, int) or got == expected:
        return
    raise located(ConvChannelError, f"Given groups={groups}, weight of size {_sizes(weight)}, expected input"
                                    f"{_sizes(input)} to have {expected} channels, but got {got} channels instead")


class ConvRankError(TraceError, RuntimeError):
    """An input with neither the unbatched nor the batched rank of the convolution (torch's ``RuntimeError``)."""


def check_conv_rank(function: str, input: Tensor, spatial: int) -> None:  # noqa: A002  (torch's names)
    """Raise torch's error when ``input`` is neither ``(C, *spatial)`` nor ``(N, C, *spatial)``: a (C, L) image given
    to ``conv2d`` is no image of 8 channels."""
    if input.ndim not in (spatial + 1, spatial + 2):
        raise located(ConvRankError, f"Expected {spatial + 1}D (unbatched) or {spatial + 2}D (batched) input to "
                                     f"{function}, but got input of size: {_sizes(input)}")


def _sizes(tensor: Tensor) -> str:
    return "[" + ", ".join(str(d) for d in tensor.shape) + "]"
