"""``Tensor.__getitem__`` (``x[:, 1:5:2]``, ``x[idx]``, ``x[mask]``): basic indexing lowers to ``tensor.slice``,
``tensor.squeeze`` and ``tensor.expand_dims``; integer index arrays gather, a boolean mask selects rows.

Re-exported by ``frontend/functional_nn.py``, where ``Tensor.__getitem__`` finds ``getitem``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.types import DType
from kiln.frontend.tensor import Tensor, apply
from kiln.frontend.functional_movement import squeeze
from kiln.frontend.symbolic_dims import symbolic_prefix, symbolic_row
from kiln.frontend.trace import located_error
from kiln.frontend.index_bounds_checks import out_of_bounds, too_many_indices


def getitem(input: Tensor, index: Any) -> Tensor:
    """Basic indexing: ints, slices (any step > 0), ``None`` and ``...``; each lowers to one slice/squeeze/expand_dims op.
    Integer index arrays over the leading dims (``x[idx]``, ``x[rows, cols]``, ``x[range(n), y]``) gather, as PyTorch's
    advanced indexing: one ``take`` of the rows at their flat positions (a copy, not a view)."""
    from kiln.frontend.advanced_indexing import mixed_advanced_index  # lazily, as advanced_indices
    from kiln.frontend.tensor_setitem import advanced_indices  # lazily: it builds on the Tensor this file serves

    from kiln.frontend.bool_mask_positions import bool_masks_as_positions  # lazily, as advanced_indices

    index = uint8_as_mask(index)
    if _is_bool_mask(index):
        return _masked_rows(input, index)
    index = bool_masks_as_positions(input, index)
    advanced = advanced_indices(input, index)
    if advanced is not None:
        return _gathered_rows(input, advanced)
    mixed = mixed_advanced_index(input, index)
    if mixed is not None:
        return mixed
    items = list(index) if isinstance(index, tuple) else [index]
    if sum(1 for item in items if item is not None and item is not Ellipsis) > input.ndim:
        raise too_many_indices(input, items)
    if any(item is Ellipsis for item in items):
        at = items.index(Ellipsis)
        fill = input.ndim - sum(1 for item in items if item is not None and item is not Ellipsis)
        items = items[:at] + [slice(None)] * fill + items[at + 1 :]
    result, axis, dropped, inserted = input, 0, [], []
    for item in items:
        if item is None:
            inserted.append(axis + len(inserted) - len(dropped))
            continue
        result = _index_axis(result, axis, item)
        if isinstance(item, (int, np.integer)):
            dropped.append(axis)
        axis += 1
    result = squeeze(result, tuple(dropped)) if dropped else result
    result = apply("tensor.expand_dims", result, axes=tuple(inserted)) if inserted else result
    if result is not input:
        result._indexed_from = (input, index)  # an in-place write to it writes input[index] (frontend/tensor_inplace.py)
    return result


def uint8_as_mask(index: Any) -> Any:
    """A uint8 tensor index is a mask, as PyTorch's deprecated form (with its warning): ``x[m]`` and ``x[m] = v`` pick
    where ``m != 0`` (pytorch-crf's ``mask.byte()``), not the rows numbered by its 0s and 1s."""
    if not (isinstance(index, Tensor) and index.dtype is DType.u8):
        return index
    warnings.warn("indexing with dtype torch.uint8 is now deprecated, please use a dtype torch.bool instead.", UserWarning,
                  stacklevel=4)
    return index != 0


def _is_bool_mask(index: Any) -> bool:
    return (isinstance(index, Tensor) and index.dtype is DType.bool) or (isinstance(index, np.ndarray) and index.dtype == np.bool_)


def _masked_rows(input: Tensor, mask: Any) -> Tensor:
    """``input[mask]``: eagerly the rows the mask picks (frontend/eager_data_dependent.py); traced, the same where the
    mask's values are known (built from constants: ``~torch.eye(n, dtype=torch.bool)``), else rows pending for
    ``a[mask] = b[mask]`` (frontend/pending_masked_rows.py), an error on any other use."""
    from kiln.frontend import eager_data_dependent
    from kiln.frontend.trace_known_values import known_value

    if eager_data_dependent.eager_with_mask(input, mask):
        return eager_data_dependent.masked_rows(input, mask)
    known = known_value(mask) if isinstance(mask, Tensor) else np.asarray(mask)
    if known is not None and all(isinstance(dim, int) for dim in input.shape[:known.ndim]):
        return eager_data_dependent.masked_rows(input, known)
    from kiln.frontend.pending_masked_rows import pending_rows  # lazily: it builds on the Tensor this file serves

    return pending_rows(input, mask, located_error(
        "x[mask] has a data-dependent shape (the number of true elements), which kiln does not trace; use where(mask, "
        "x, 0) (or masked_fill) and reduce, e.g. (x * mask).sum() / mask.sum(); a[mask] = b[mask] is traced"))


def _gathered_rows(input: Tensor, indices: tuple[Tensor, ...]) -> Tensor:
    """``input[indices]`` for integer index tensors over its leading dims: shape ``broadcast(indices) + rest``."""
    from kiln.frontend.tensor_more import _flat_leading_index  # index_put's: the same flat positions it writes

    from kiln.frontend.view_writes import own_storage  # lazily: it builds on the tensor

    flat, rest = _flat_leading_index(input, indices)
    rows = input.reshape((-1,) + rest)
    taken = apply("tensor.take", rows, flat.reshape(-1), axis=0)
    return own_storage(taken.reshape(tuple(flat.shape) + rest), taken)  # a copy: no view of the temporary, as torch's


def _index_axis(input: Tensor, axis: int, item: Any) -> Tensor:
    if axis >= input.ndim:
        raise TraceError(f"too many indices for {input.type}")
    size = input.shape[axis]
    if isinstance(item, slice) and item == slice(None):
        return input
    if isinstance(size, str) and isinstance(item, (int, np.integer)):
        return symbolic_row(input, axis, int(item))
    if isinstance(size, str):
        raise TraceError(f"cannot index the symbolic dim {size} of {input.type} with {item!r}")
    if isinstance(item, (int, np.integer)):
        if not -size <= item < size:
            raise out_of_bounds(item, axis, size)  # torch's IndexError, which ends iteration, as for sequences
        item = slice(int(item) % size, int(item) % size + 1)
    if _is_bool_mask(item):  # its values unknown here (a known mask is positions already: bool_mask_positions.py)
        raise TraceError(f"x[..., mask] with the bool mask {item.type} among other indices picks a number of elements "
                         "known only when the graph runs (the mask comes from a random draw, a trained parameter or "
                         "an op kiln cannot evaluate while tracing), which kiln does not trace; keep the shape and zero "
                         "what the mask drops (x * mask), or index outside the compiled function")
    if not isinstance(item, slice):
        raise TraceError(f"unsupported index {item!r}: use ints, slices, None, ..., integer index arrays or one bool "
                         "mask")
    if isinstance(item.stop, str) and item.start in (None, 0) and item.step in (None, 1):
        return symbolic_prefix(input, axis, item.stop)
    if any(isinstance(bound, str) for bound in (item.start, item.stop, item.step)):
        raise TraceError(f"cannot slice dim {axis} (size {size}) of {input.type} with the symbolic bound in {item!r}: a "
                         "slice's size must be known when tracing; compile with static shapes (batch_dim=None) or slice "
                         "a tensor whose dim is that symbol")
    start, stop, step = item.indices(size)
    if step < 1:
        raise TraceError(f"slice steps must be positive, got {step}")
    return apply("tensor.slice", input, axis=axis, start=start, stop=max(start, stop), step=step)
