"""PyTorch's refusals of a normalization over a single value while training (``F.batch_norm``'s
``_verify_batch_size``, ``F.instance_norm``'s ``_verify_spatial_size``): the statistics of one value normalize it to
exactly zero (the output is the bias whatever the input, and no gradient reaches the input), so a batch of one sample
into ``BatchNorm1d``, or a 1x1 map into ``InstanceNorm2d``, is refused with PyTorch's ``ValueError`` and words instead
of silently training on zeros. A dim that is symbolic in a trace (a batch size fixed only at call time) is not
checked."""

from __future__ import annotations

import math

from kiln.compiler.errors import TraceError
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import located_error


class SingleValueNormError(TraceError, ValueError):
    """A norm's statistics over one value while training: a ``ValueError``, as PyTorch's."""


def verify_batch_size(input: Tensor) -> None:
    """``batch_norm`` while training: more than one value per channel (batch times spatial sizes)."""
    if _product(input.shape[:1] + input.shape[2:]) == 1:
        _refuse(f"Expected more than 1 value per channel when training, got input size {_size(input)}: batch norm of "
                "one value gives zeros; train on batches of more than one sample (drop_last=True in the DataLoader "
                "drops a final batch of one) or call .eval() to normalize with the running statistics")


def verify_spatial_size(input: Tensor) -> None:
    """``instance_norm`` from the input's statistics: more than one spatial element per instance."""
    if _product(input.shape[2:]) == 1:
        _refuse(f"Expected more than 1 spatial element when training, got input size {_size(input)}: instance norm "
                "of one value gives zeros; give it a larger map (fewer downsamplings, a larger image)")


def _product(dims: tuple) -> int | None:
    """The product of the dims, None when one is symbolic."""
    return math.prod(dims) if all(isinstance(dim, int) for dim in dims) else None


def _size(input: Tensor) -> str:
    return f"kiln.Size({list(input.shape)})"


def _refuse(message: str) -> None:
    error = SingleValueNormError(str(located_error(message)))
    error.located = True  # type: ignore[attr-defined]
    raise error
