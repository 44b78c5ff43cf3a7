"""Nested Python sequences as an array, refused in PyTorch's words where they are ragged.

``kiln.tensor([[1, 2], [3]])`` gave NumPy's "setting an array element with a sequence. The requested array has an
inhomogeneous shape after 1 dimensions", which names neither the dim nor the lengths; torch's
``torch.tensor`` walks the data as below and says which sequence is off:

```python
kiln.tensor([[1, 2], [3]])      # ValueError: expected sequence of length 2 at dim 1 (got 1)
kiln.tensor([[1, 2], 3])        # TypeError: not a sequence
kiln.tensor([1, [2]])           # TypeError: 'list' object cannot be interpreted as an integer
kiln.tensor([[], [1]])          # shape (2, 0), as torch's: the first elements give the shape, and nothing is stored
```

NumPy parses the data first (it is fast, and decides the dtype); only when it refuses is the data walked again,
torch's way: the shape is the lengths along the first elements (stopping at an empty one), then each sequence must
have its dim's length, and each element past the last dim must be a number.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_SEQUENCES = (list, tuple)
"""The nested sequences torch's walk reads (NumPy arrays and tensors of one dim or more, too: ``_is_sequence``)."""


def nested_array(data: Any, copy: bool = True) -> np.ndarray:
    """``np.array(data)`` (``np.asarray`` without ``copy``); for ragged nested lists or tuples, torch's error (or,
    where a dim is 0, torch's empty array) instead of NumPy's."""
    try:
        return np.array(data) if copy else np.asarray(data)
    except ValueError:
        if not isinstance(data, _SEQUENCES):
            raise
        sizes = _sizes(data)
        if 0 in sizes:  # torch stores nothing: the shape is all it reads, and an empty sequence makes it float
            return np.zeros(sizes, np.float32)
        _check_nesting(data, sizes, 0, _is_float(data))
        raise


def _sizes(data: Any) -> tuple[int, ...]:
    """torch's ``compute_sizes``: the lengths along the first elements, down to an empty sequence or a number."""
    sizes = []
    while _is_sequence(data):
        sizes.append(len(data))
        if not sizes[-1]:
            break
        data = data[0]
    return tuple(sizes)


def _check_nesting(data: Any, sizes: tuple[int, ...], dim: int, floating: bool) -> None:
    """torch's ``recursive_store`` checks: each sequence at ``dim`` has ``sizes[dim]`` elements; past the last dim,
    a number."""
    if dim == len(sizes):
        if isinstance(data, _SEQUENCES):
            kind = type(data).__name__
            raise TypeError(f"must be real number, not {kind}" if floating
                            else f"'{kind}' object cannot be interpreted as an integer")
        return
    if not _is_sequence(data):
        raise TypeError("not a sequence")
    if len(data) != sizes[dim]:
        raise ValueError(f"expected sequence of length {sizes[dim]} at dim {dim} (got {len(data)})")
    for item in data:
        _check_nesting(item, sizes, dim + 1, floating)


def _is_sequence(data: Any) -> bool:
    """A list or tuple, or an array or tensor with a dim to walk (past the last dim, such an element keeps NumPy's
    error: torch's there depends on its dtype)."""
    return isinstance(data, _SEQUENCES) or (getattr(data, "ndim", 0) or 0) >= 1 and hasattr(data, "__len__")


def _is_float(data: Any) -> bool:
    """Whether torch infers a floating (or complex) dtype for ``data``: some number in it is not an int or a bool."""
    if isinstance(data, _SEQUENCES):
        return any(_is_float(item) for item in data)
    return isinstance(data, (float, complex, np.floating, np.complexfloating))


__all__ = ["nested_array"]
