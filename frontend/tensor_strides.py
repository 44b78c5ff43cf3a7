"""PyTorch's strides for kiln's tensors: ``stride()``, ``storage_offset()``, ``is_contiguous()``, and whether a
``reshape`` is a view (``.view()`` refuses where it is not, with torch's words).

A kiln value has no strides; PyTorch's do, and they decide what shares storage: ``x.t().reshape(-1)`` copies while
``x.reshape(-1)`` is a view a write goes through. A tensor's layout is computed from its view chain
(``frontend/view_writes.py``): a tensor that is no view is row-major from offset 0, a view's layout follows from its
base's by the op's rule (torch's ``computeStride`` for a reshape, its unsqueeze rule for ``expand_dims``, 0 for an
expanded dim).

```python
x = kiln.zeros(2, 3)
x.t().stride(), x[:, 1:].storage_offset(), x.expand(4, 2, 3).stride()   # (1, 3), 1, (0, 3, 1)
x.t().view(-1)                                                          # RuntimeError, as torch's: use .reshape
```

``as_strided(size, stride, offset)`` reads the storage those layouts index: the values of the tensor at the root of
the view chain, flattened, taken at ``offset + sum(i_d * stride[d])`` (a copy in kiln; a write to it is refused).

As documented in ``frontend/memory_format.py``, a channels_last tensor is logically contiguous in kiln: its
``stride()`` is row-major (torch's are NHWC's) and ``is_contiguous(memory_format=...)`` is True for every format.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.frontend.inplace_leaf_checks import located
from kiln.frontend.trace import located_error

Layout = tuple[tuple[int, ...] | None, int]
"""(strides, storage offset); strides None: row-major for the tensor's shape (the shape may be symbolic)."""

CONTIGUOUS: Layout = (None, 0)
UNKNOWN = "unknown"
"""The layout of a view whose strides depend on a symbolic dim (a traced batch size)."""
NOT_A_VIEW = "not a view"
"""A reshape PyTorch computes as a copy: the base's strides cannot give the new shape."""


class ViewShapeError(TraceError, RuntimeError):
    """``.view()`` of a tensor whose strides cannot give the shape: a ``RuntimeError``, as PyTorch's."""


class AsStridedError(TraceError, RuntimeError):
    """``as_strided`` with strides and sizes torch refuses: a ``RuntimeError``, as PyTorch's."""


def layout(tensor: Any) -> Layout | str:
    """``tensor``'s strides and storage offset in PyTorch, or ``UNKNOWN``."""
    known = tensor.__dict__.get("_layout")
    if known is not None:
        return known
    view_of = tensor.__dict__.get("_view_of")
    if view_of is None:
        return CONTIGUOUS
    found = view_layout(view_of.op, view_of.attrs, view_of.base, tuple(tensor.shape))
    tensor.__dict__["_layout"] = found
    return found


def row_major(shape: tuple[Any, ...]) -> tuple[int, ...] | None:
    """PyTorch's contiguous strides (a size-0 dim counts as 1), or None where one depends on a symbolic dim (a
    symbolic leading dim, the traced batch, leaves them all numbers)."""
    if not all(isinstance(d, int) for d in shape[1:]):
        return None
    strides, step = [], 1
    for size in reversed(shape[1:]):
        strides.append(step)
        step *= max(size, 1)
    return tuple(reversed(strides + [step])) if shape else ()


def explicit(found: Layout | str, shape: tuple[Any, ...]) -> tuple[int, ...] | None:
    """The strides of ``found`` as numbers, or None where they depend on a symbolic dim."""
    if found == UNKNOWN:
        return None
    strides = found[0]
    return strides if strides is not None else row_major(shape)


def view_layout(op: str, attrs: dict[str, Any], base: Any, shape: tuple[Any, ...]) -> Layout | str:
    """The layout of ``op(base, **attrs)`` (of shape ``shape``) from ``base``'s."""
    base_layout, base_shape = layout(base), tuple(base.shape)
    if base_layout == UNKNOWN:
        return UNKNOWN
    if op == "tensor.reshape":
        return reshape_layout(base_layout, base_shape, shape)
    if base_layout[0] is None and (op == "tensor.squeeze" or op == "tensor.expand_dims"):
        return (None, base_layout[1])  # size-1 dims of a row-major tensor: row-major
    strides = explicit(base_layout, base_shape)
    if strides is None:
        return UNKNOWN
    return _STRIDE_RULES[op](strides, base_layout[1], base_shape, shape, attrs)


def _transposed(strides, offset, base_shape, shape, attrs) -> Layout:  # type: ignore[no-untyped-def]
    perm = attrs.get("perm") or tuple(reversed(range(len(strides))))
    return tuple(strides[p] for p in perm), offset


def _squeezed(strides, offset, base_shape, shape, attrs) -> Layout:  # type: ignore[no-untyped-def]
    dropped = {a % len(strides) for a in attrs["axes"]}
    return tuple(s for axis, s in enumerate(strides) if axis not in dropped), offset


def _unsqueezed(strides, offset, base_shape, shape, attrs) -> Layout | str:  # type: ignore[no-untyped-def]
    """torch's unsqueeze rule, one inserted axis at a time: the stride of the dim it precedes times that dim's size."""
    strides, sizes = list(strides), list(base_shape)
    for axis in sorted(a % len(shape) for a in attrs["axes"]):
        if axis < len(sizes) and not isinstance(sizes[axis], int):
            return UNKNOWN  # N times a stride
        stride = sizes[axis] * strides[axis] if axis < len(sizes) else 1
        strides.insert(axis, stride), sizes.insert(axis, 1)
    return tuple(strides), offset


def _expanded(strides, offset, base_shape, shape, attrs) -> Layout:  # type: ignore[no-untyped-def]
    """0 for a new leading dim and for a size-1 dim expanded, as torch's ``expand``."""
    lead = len(shape) - len(base_shape)
    kept = tuple(0 if size == 1 and shape[lead + axis] != 1 else s
                 for axis, (size, s) in enumerate(zip(base_shape, strides)))
    return (0,) * lead + kept, offset


def _sliced(strides, offset, base_shape, shape, attrs) -> Layout:  # type: ignore[no-untyped-def]
    axis = attrs["axis"] % len(strides)
    picked = list(strides)
    picked[axis] = strides[axis] * attrs["step"]
    return tuple(picked), offset + attrs["start"] * strides[axis]


def _diagonal(strides, offset, base_shape, shape, attrs) -> Layout:  # type: ignore[no-untyped-def]
    """torch's ``diagonal``: the two dims become one of their summed stride, starting ``offset`` along one of them."""
    diagonal_offset, dim1, dim2 = attrs["offset"], attrs["dim1"] % len(strides), attrs["dim2"] % len(strides)
    kept = tuple(s for axis, s in enumerate(strides) if axis not in (dim1, dim2))
    start = diagonal_offset * strides[dim2] if diagonal_offset >= 0 else -diagonal_offset * strides[dim1]
    return kept + (strides[dim1] + strides[dim2],), offset + start * (shape[-1] != 0)


def _detached(strides, offset, base_shape, shape, attrs) -> Layout:  # type: ignore[no-untyped-def]
    return tuple(strides), offset  # x.detach(), x.data: the same storage, the same layout


_STRIDE_RULES = {"tensor.transpose": _transposed, "tensor.squeeze": _squeezed, "tensor.expand_dims": _unsqueezed,
                 "tensor.broadcast_to": _expanded, "tensor.slice": _sliced, "diagonal": _diagonal,
                 "tensor.stop_gradient": _detached}


def reshape_layout(base: Layout | str, old: tuple[Any, ...], new: tuple[Any, ...]) -> Layout | str:
    """The layout of ``reshape(new)`` when PyTorch makes it a view, else ``NOT_A_VIEW`` (torch's ``computeStride``)."""
    shapeless = shapeless_reshape_layout(base)
    if shapeless is not None:
        return shapeless
    if not all(isinstance(d, int) for d in old + new):
        return UNKNOWN
    strides = compute_stride(old, base[0], new)
    return NOT_A_VIEW if strides is None else (strides, base[1])


def shapeless_reshape_layout(base: Layout | str) -> Layout | str | None:
    """``reshape_layout``'s answer where it reads no shape (the base's layout is unknown, or row-major), else None: an
    eager reshape of a fresh tensor then builds neither shape."""
    if base == UNKNOWN:
        return UNKNOWN
    if base[0] is None:
        return (None, base[1])  # a row-major tensor reshapes to a row-major view
    return None


def compute_stride(old: tuple[int, ...], old_strides: tuple[int, ...], new: tuple[int, ...]) -> tuple[int, ...] | None:
    """ATen's ``computeStride``: the strides of a view of shape ``new``, None where a dim of ``new`` would span two
    non-adjacent chunks of memory."""
    if not old:
        return (1,) * len(new)
    if 0 in old:
        return old_strides if old == new else row_major(new)
    new_strides, view_d, chunk_base, tensor_numel, view_numel = [0] * len(new), len(new) - 1, old_strides[-1], 1, 1
    for tensor_d in range(len(old) - 1, -1, -1):
        tensor_numel *= old[tensor_d]
        if tensor_d == 0 or (old[tensor_d - 1] != 1 and old_strides[tensor_d - 1] != tensor_numel * chunk_base):
            while view_d >= 0 and (view_numel < tensor_numel or new[view_d] == 1):
                new_strides[view_d] = view_numel * chunk_base
                view_numel *= new[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if tensor_d > 0:
                chunk_base, tensor_numel, view_numel = old_strides[tensor_d - 1], 1, 1
    return tuple(new_strides) if view_d == -1 else None


def overlapping(tensor: Any) -> bool:
    """Whether two elements of ``tensor`` share a memory location in PyTorch (an expanded dim: stride 0, size > 1)."""
    found = layout(tensor)
    if found == UNKNOWN or found[0] is None:
        return False
    return any(stride == 0 and size != 1 for size, stride in zip(tensor.shape, found[0]))


def contiguous_strides(strides: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """torch's ``is_contiguous``: row-major strides, ignoring dims of size 1; an empty tensor is contiguous."""
    if 0 in shape:
        return True
    expected: Any = 1
    for size, stride in zip(reversed(shape), reversed(strides)):
        if size != 1:
            if expected is None or stride != expected:
                return False  # (None: after a symbolic dim, unknown; a caller copies, which is always right)
            expected = expected * size if isinstance(size, int) else None
    return True


def _known_strides(tensor: Any, call: str) -> tuple[int, ...]:
    strides = explicit(layout(tensor), tuple(tensor.shape))
    if strides is None:
        raise located_error(f"{call} of {tensor.type}: its strides depend on a symbolic dim (a traced batch size); "
                            "compile with static shapes (batch_dim=None) to ask for them")
    return strides


def storage_root(tensor: Any) -> Any:
    """The tensor whose row-major values are ``tensor``'s storage in PyTorch: up the view chain (and through
    ``as_strided``, whose result reads its input's storage) to a tensor that is no view."""
    while True:
        view_of = tensor.__dict__.get("_view_of")
        source = view_of.base if view_of is not None else tensor.__dict__.get("_strided_storage")
        if source is None:
            return tensor
        tensor = source


def _storage_indices(call: str, size: tuple[int, ...], stride: tuple[int, ...], offset: int, root: Any) -> np.ndarray:
    """The storage index of each element of ``as_strided(size, stride, offset)``, checked as torch's ``setStorage``."""
    if len(size) != len(stride):
        raise located(AsStridedError, f"{call}: mismatch in length of strides and shape")
    if any(s < 0 for s in stride):
        raise located(AsStridedError, f"{call}: Negative strides are not supported at the moment, got strides: "
                      f"{list(stride)}")
    indices = np.full(size, offset, np.int64)
    for axis, (length, step) in enumerate(zip(size, stride)):
        indices += (np.arange(length) * step).reshape((-1,) + (1,) * (len(size) - axis - 1))
    needed = int(indices.max()) + 1 if indices.size else 0
    if needed > root.numel():
        itemsize = root.dtype.itemsize
        raise located(AsStridedError, f"setStorage: sizes {list(size)}, strides {list(stride)}, storage offset "
                      f"{offset}, and itemsize {itemsize} requiring a storage size of {needed * itemsize} are out of "
                      f"bounds for storage of size {root.numel() * itemsize}")
    return indices


class StrideMethods:
    """PyTorch's stride queries; ``Tensor`` inherits them."""

    def as_strided(self, size: Any, stride: Any, storage_offset: int | None = None) -> Any:
        """torch's ``as_strided``: the elements of this tensor's storage at ``storage_offset + sum(i_d * stride[d])``
        (HF Longformer's overlapping chunks), one ``take`` from the storage's values, so gradients of overlapping
        elements add up as torch's. The result is a new tensor in kiln, not a view: a write to it is refused."""
        from kiln.frontend.tensor_methods import _flatten_args
        from kiln.frontend.tensor_mixin_ops import _apply, _constant

        size, stride = _flatten_args((size,)), _flatten_args((stride,))
        root = storage_root(self)
        if not all(isinstance(d, int) for d in root.shape):
            raise located_error(f"as_strided of {self.type}: its storage depends on a symbolic dim (a traced batch "
                                "size); compile with static shapes (batch_dim=None)")
        offset = self.storage_offset() if storage_offset is None else int(storage_offset)
        indices = _storage_indices("as_strided", size, stride, offset, root)
        result = _apply("tensor.take", root.reshape(-1), _constant(indices), axis=0)
        result._layout, result._strided_storage = (tuple(stride), offset), root
        result._unfollowed_view = ("as_strided gives a new tensor in kiln, not a view of its input's storage as "
                                   "torch's: a write to it would not reach the input. clone() it to write a copy")
        return result

    def stride(self, dim: int | None = None) -> Any:
        """The strides PyTorch's tensor would have (in elements), or the one of ``dim``."""
        strides = _known_strides(self, "stride()")
        if dim is None:
            return strides
        if not -len(strides) <= dim < max(len(strides), 1):
            raise located(TraceIndexError, f"Dimension out of range (expected to be in range of [{-len(strides)}, "
                          f"{len(strides) - 1}], but got {dim})")
        return strides[dim] if strides else 1

    def storage_offset(self) -> Any:
        """Where PyTorch's tensor starts in its storage (in elements): a slice's, a diagonal's."""
        found = layout(self)
        if found == UNKNOWN:
            raise located_error(f"storage_offset() of {self.type}: it depends on a symbolic dim (a traced batch size)")
        return found[1]

    def is_contiguous(self, memory_format: Any = None) -> bool:
        """PyTorch's answer for the default format; True for channels_last formats (``frontend/memory_format.py``:
        kiln's tensors are logically contiguous in every format)."""
        from kiln.frontend.memory_format import contiguous_format

        if memory_format is not None and memory_format is not contiguous_format:
            return True
        found = layout(self)
        if found == UNKNOWN:
            return False  # a caller then copies (x.contiguous()), which is always right
        return found[0] is None or contiguous_strides(found[0], tuple(self.shape))

    def view(self, *shape: Any) -> Any:
        """``reshape`` where PyTorch's strides allow a view; else torch's RuntimeError."""
        result = self.reshape(*shape)  # type: ignore[attr-defined]
        if result.__dict__.get("_reshape_copied"):
            raise located(ViewShapeError, "view size is not compatible with input tensor's size and stride (at least "
                          f"one dimension spans across two contiguous subspaces). Use .reshape(...) instead. ({self.type} "
                          f"with strides {self.stride()} viewed as {result.type})")  # type: ignore[attr-defined]
        return result


class TraceIndexError(TraceError, IndexError):
    """A dim out of range for ``stride(dim)``: an ``IndexError``, as PyTorch's."""
