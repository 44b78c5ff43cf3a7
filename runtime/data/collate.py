"""``torch.utils.data.default_collate`` and ``default_convert``, giving kiln tensors.

``default_collate(samples)`` stacks a list of samples into one batch, recursing through their structure exactly as
PyTorch's does: kiln tensors and NumPy arrays stack along a new first axis (keeping their dtype, uint8 images
included; only unsigned integers kiln lacks widen, uint16 to int32 and uint32 to int64, see ``kiln_array``), Python floats
become float64, ints int64 and bools bool, NumPy scalars keep their dtype, strings and bytes stay a list, dicts collate
key by key, namedtuples field by field, tuples become lists of fields, other sequences keep their type.
``default_convert(sample)`` (what an unbatched loader applies) turns NumPy arrays and scalars into tensors and leaves
everything else as it is, through the same structures.
"""

from __future__ import annotations

import collections.abc
import copy
import re
from typing import Any, Callable

import numpy as np

_STRING_OR_OBJECT = re.compile(r"[SaUO]")
"""NumPy dtype codes that do not make a tensor: bytes, str, object."""

COLLATE_ERROR = "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}"


def default_collate(batch: list[Any]) -> Any:
    """One batch from a list of samples (see the module docstring)."""
    first = batch[0]
    leaf = _leaf_collate(first)
    if leaf is not None:
        return leaf(batch)
    if isinstance(first, collections.abc.Mapping):
        return _rebuilt_mapping(first, {key: default_collate([sample[key] for sample in batch]) for key in first})
    if isinstance(first, tuple) and hasattr(first, "_fields"):  # a namedtuple keeps its type
        return type(first)(*(default_collate(field) for field in zip(*batch)))
    if isinstance(first, collections.abc.Sequence):
        if any(len(sample) != len(first) for sample in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        fields = [default_collate(field) for field in zip(*batch)]
        return fields if isinstance(first, tuple) else _rebuilt_sequence(first, fields)
    raise TypeError(COLLATE_ERROR.format(type(first)))


def default_convert(data: Any) -> Any:
    """``data`` with every NumPy array and scalar as a kiln tensor (see the module docstring)."""
    if _is_tensor(data):
        return data
    kind = type(data)
    if kind.__module__ == "numpy" and kind.__name__ not in ("str_", "bytes_", "string_"):
        if isinstance(data, np.ndarray) and _STRING_OR_OBJECT.search(data.dtype.str):
            return data
        return _from_numpy(np.asarray(data))
    if isinstance(data, collections.abc.Mapping):
        return _rebuilt_mapping(data, {key: default_convert(data[key]) for key in data})
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return kind(*(default_convert(item) for item in data))
    if isinstance(data, tuple):
        return [default_convert(item) for item in data]
    if isinstance(data, collections.abc.Sequence) and not isinstance(data, (str, bytes)):
        return _rebuilt_sequence(data, [default_convert(item) for item in data])
    return data


def _leaf_collate(first: Any) -> Callable[[list[Any]], Any] | None:
    """How a batch whose first sample is ``first`` stacks when it is a leaf (PyTorch's ``default_collate_fn_map``, in
    its order: tensors, arrays, NumPy scalars, floats, ints, strings); ``None`` for containers."""
    if _is_tensor(first):
        return _stack_tensors
    if isinstance(first, np.ndarray):
        return _stack_arrays
    if isinstance(first, (np.bool_, np.number, np.object_)):
        return lambda batch: _from_numpy(np.asarray(batch))
    if isinstance(first, float):
        return lambda batch: _from_numpy(np.asarray(batch, dtype=np.float64))
    if isinstance(first, int):
        return lambda batch: _from_numpy(np.asarray(batch, dtype=_python_scalars_dtype(batch)))
    if isinstance(first, (str, bytes)):
        return lambda batch: batch
    return None


def _stack_tensors(batch: list[Any]) -> Any:
    if any(getattr(tensor, "requires_grad", False) for tensor in batch):
        import kiln  # lazily: a batch that carries gradients stacks through kiln's autograd, as torch.stack

        return kiln.stack(list(batch), 0)
    shapes = {tuple(tensor.shape) for tensor in batch}
    if len(shapes) != 1:
        raise RuntimeError(f"default_collate: stack expects each tensor to be equal size, but got shapes {sorted(shapes)}; "
                           "pad the samples to one shape or pass a collate_fn")
    return _from_numpy(np.stack([tensor.numpy() for tensor in batch]))


def _stack_arrays(batch: list[np.ndarray]) -> Any:
    if _STRING_OR_OBJECT.search(batch[0].dtype.str):
        raise TypeError(COLLATE_ERROR.format(batch[0].dtype))
    shapes = {array.shape for array in batch}
    if len(shapes) != 1:
        raise RuntimeError(f"default_collate: stack expects each array to be equal size, but got shapes {sorted(shapes)}; "
                           "pad the samples to one shape or pass a collate_fn")
    return _from_numpy(np.stack(batch))


def _python_scalars_dtype(batch: list[Any]) -> Any:
    """``torch.tensor(batch)``'s dtype for Python scalars: bool if all are, float32 once a float appears, else int64."""
    if all(isinstance(value, (bool, np.bool_)) for value in batch):
        return np.bool_
    if any(isinstance(value, complex) for value in batch):
        return np.complex64
    if any(isinstance(value, float) for value in batch):
        return np.float32
    return np.int64


def _rebuilt_mapping(like: Any, values: dict[Any, Any]) -> Any:
    """``values`` in ``like``'s mapping type: a copy of it updated when mutable, else built from a dict; a plain dict when
    the type cannot be built that way (PyTorch's rule)."""
    try:
        if isinstance(like, collections.abc.MutableMapping):
            clone = copy.copy(like)
            clone.update(values)
            return clone
        return type(like)(values)
    except TypeError:
        return values


def _rebuilt_sequence(like: Any, items: list[Any]) -> Any:
    try:
        if isinstance(like, collections.abc.MutableSequence):
            clone = copy.copy(like)
            for position, item in enumerate(items):
                clone[position] = item
            return clone
        return type(like)(items)
    except TypeError:
        return items


def _is_tensor(value: Any) -> bool:
    from kiln.frontend.tensor import Tensor  # lazily: the runtime builds on the frontend

    return isinstance(value, Tensor)


_WIDER_INTEGERS = {np.dtype(np.uint16): np.int32, np.dtype(np.uint32): np.int64}


def kiln_array(array: np.ndarray) -> np.ndarray:
    """``array`` in a dtype kiln tensors have: uint8, int8 and int16 (images, audio) stay as they are, as in PyTorch;
    uint16 widens to int32 and uint32 to int64, so every value is kept; uint64 is refused unless it fits int64."""
    wider = _WIDER_INTEGERS.get(array.dtype)
    if wider is not None:
        return array.astype(wider)
    if array.dtype == np.uint64:
        if array.size and array.max() > np.iinfo(np.int64).max:
            raise OverflowError("a uint64 sample holds values past int64's range, and kiln's widest integer is int64; "
                                "convert the samples in the dataset or a collate_fn")
        return array.astype(np.int64)
    return array


def _from_numpy(array: np.ndarray) -> Any:
    from kiln.frontend.torch_functions import from_numpy

    return from_numpy(kiln_array(array))


__all__ = ["COLLATE_ERROR", "default_collate", "default_convert", "kiln_array"]
