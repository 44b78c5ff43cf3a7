"""PyTorch's shape checks of ``cat`` and ``stack``, with its words, before kiln emits ``tensor.concat`` (whose shape
rule would list kiln's IR types):

```python
torch.cat([a, b])      # (2, 3), (2, 4): Sizes of tensors must match except in dimension 0. Expected size 3 but got
                       #                 size 4 for tensor number 1 in the list.
torch.cat([a, c])      # (2, 3), (2, 3, 1): Tensors must have same number of dimensions: got 2 and 3
torch.stack([a, b])    # stack expects each tensor to be equal size, but got [2, 3] at entry 0 and [2, 4] at entry 1
```

Each is a ``RuntimeError`` naming the user's line; every tensor is compared with the first, as PyTorch's kernels do.
"""

from __future__ import annotations

from typing import Any, Sequence

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import normalize_axis
from kiln.frontend.inplace_leaf_checks import located


class CatShapeError(TraceError, RuntimeError):
    """Tensors that ``cat`` or ``stack`` cannot join (torch's ``RuntimeError``)."""


class JoinedTypeError(TraceError, TypeError):
    """Something other than tensors given to ``cat`` or ``stack`` (torch's ``TypeError``)."""


def check_cat_shapes(tensors: Sequence[Any], dim: int) -> None:
    """``torch.cat``'s checks: no 0-D tensor, one rank, equal sizes but along ``dim``."""
    shapes = [tuple(t.shape) for t in tensors if hasattr(t, "shape")]
    if not shapes:
        return
    for position, shape in enumerate(shapes):
        if not shape:
            _refuse(f"zero-dimensional tensor (at position {position}) cannot be concatenated")
    first = shapes[0]
    for shape in shapes[1:]:
        if len(shape) != len(first):
            _refuse(f"Tensors must have same number of dimensions: got {len(first)} and {len(shape)}")
    try:
        axis = normalize_axis(dim, len(first))
    except Exception:
        return  # the op's own rule names a dim out of range
    for number, shape in enumerate(shapes[1:], start=1):
        for i, (expected, got) in enumerate(zip(first, shape)):
            if i != axis and expected != got:
                _refuse(f"Sizes of tensors must match except in dimension {axis}. Expected size {expected} but got "
                        f"size {got} for tensor number {number} in the list.")


def check_joined_tensors(name: str, tensors: Any) -> list[Any]:
    """torch's ``TypeError`` for ``cat``/``stack`` of anything but a sequence of tensors: a tensor itself (kiln
    joined its rows), or an element that is a list, an array, a number, None or a dict (SAM and SD 2's samplers
    ``torch.cat`` conditionings, which are dicts for concat-conditioned models). Returns the tensors as a list."""
    from kiln.frontend.tensor import Tensor  # lazily: the tensor builds on these checks

    if isinstance(tensors, Tensor):
        raise located(JoinedTypeError, f"{name}(): argument 'tensors' (position 1) must be tuple of Tensors, not Tensor")
    from kiln.frontend.torch_array import tensor_operand

    tensors = [tensor_operand(element) for element in tensors]  # p.grad, p.data: tensors in PyTorch
    for position, element in enumerate(tensors):
        if not isinstance(element, Tensor):
            kind = type(element)
            kind_name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
            raise located(JoinedTypeError, f"expected Tensor as element {position} in argument 0, but got {kind_name}")
    return tensors


def check_stack_shapes(tensors: Sequence[Any]) -> None:
    """``torch.stack``'s checks: a non-empty list of tensors of one shape."""
    if not tensors:
        _refuse("stack expects a non-empty TensorList")
    first = tuple(tensors[0].shape)
    for entry, tensor in enumerate(tensors[1:], start=1):
        if tuple(tensor.shape) != first:
            _refuse(f"stack expects each tensor to be equal size, but got {_listed(first)} at entry 0 and "
                    f"{_listed(tuple(tensor.shape))} at entry {entry}")


def _listed(shape: tuple) -> str:
    return "[" + ", ".join(map(str, shape)) + "]"


def _refuse(message: str) -> None:
    raise located(CatShapeError, message)
