"""``kiln.Size``: PyTorch's ``torch.Size``, what ``x.shape`` and ``x.size()`` return: a tuple (so comparing with a
tuple, unpacking, indexing and ``np.zeros(x.shape)`` work as before) that prints as torch's and counts its elements.

```python
x.shape                      # kiln.Size([3, 4])
x.shape == (3, 4)            # True
x.shape[1:]                  # kiln.Size([4])
kiln.Size([2, 3]).numel()    # 6
```

A symbolic dim (``"N"`` while tracing) stays a name, so ``numel()`` of such a size is an error.
"""

from __future__ import annotations

import math
from typing import Any, SupportsIndex

from kiln.frontend.symbolic_dims import symbolic


class Size(tuple):
    """An immutable tuple of dims (ints, or symbol names while tracing)."""

    __slots__ = ()

    def __new__(cls, dims: Any = ()) -> "Size":
        """The dims, a name as a ``SymbolicDim`` (its product with an int is the product dim, as torch's SymInt)."""
        if type(dims) is tuple and str not in map(type, dims):  # no name (x.shape of a static type): as they are
            return tuple.__new__(cls, dims)
        return tuple.__new__(cls, (symbolic(dim) for dim in dims))

    def __getitem__(self, index: SupportsIndex | slice) -> Any:  # type: ignore[override]
        item = tuple.__getitem__(self, index)
        return Size(item) if isinstance(index, slice) else item

    def __add__(self, other: tuple) -> "Size":  # type: ignore[override]
        if not isinstance(other, tuple):
            return NotImplemented  # as a tuple: Size + list is a TypeError
        return Size(tuple.__add__(self, other))

    def __repr__(self) -> str:
        return f"kiln.Size({list(self)})"

    def numel(self) -> int:
        """The product of the dims (1 for ``Size([])``)."""
        if not all(isinstance(dim, int) for dim in self):
            raise TypeError(f"numel() of {self!r}: a symbolic dim has no value while tracing; use x.numel(), which "
                            "counts at run time")
        return math.prod(self)


__all__ = ["Size"]
