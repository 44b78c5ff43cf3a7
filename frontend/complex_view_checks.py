"""What ``torch.view_as_complex`` refuses, with its words (a ``RuntimeError``): a tensor that is not half, float or
double, without dims, whose last dim is not 2, or whose layout cannot be read as complex pairs in place (the last
dim's stride not 1, another stride or the storage offset odd: ``x.t()``, ``x[:, :2]`` of a wider tensor, ``x[1:]``).
kiln reads the pairs by indexing, so without these checks it accepted what torch refuses."""

from __future__ import annotations

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.tensor import Tensor
from kiln.frontend.tensor_bitwise import TORCH_NAMES


class ComplexViewError(TraceError, RuntimeError):
    """A tensor ``view_as_complex`` cannot view (torch's ``RuntimeError``)."""


def check_complex_view(input: Tensor) -> None:  # noqa: A002  (torch's name)
    """Raise torch's error for the first of its checks ``input`` fails (in torch's order)."""
    problem = _refusal(input)
    if problem is not None:
        raise located(ComplexViewError, problem)


def _refusal(input: Tensor) -> str | None:  # noqa: A002
    if input.dtype not in (DType.f16, DType.f32, DType.f64):
        return ("view_as_complex is only supported for half, float and double tensors, but got a tensor of scalar "
                f"type: {TORCH_NAMES.get(input.dtype, input.dtype)}")
    if input.ndim == 0:
        return "Input tensor must have one or more dimensions"
    if input.shape[-1] != 2:
        return "Tensor must have a last dimension of size 2"
    return _layout_refusal(input)


def _layout_refusal(input: Tensor) -> str | None:  # noqa: A002
    strides, offset = input.stride(), input.storage_offset()
    if strides[-1] != 1:
        return "Tensor must have a last dimension with stride 1"
    if any(isinstance(stride, int) and stride % 2 for stride in strides[:-1]):
        return "Tensor must have a stride divisible by 2 for all but last dimension"
    if isinstance(offset, int) and offset % 2:
        return "Tensor must have a storage_offset divisible by 2"
    return None
