"""``a[mask] = b[mask]`` in a trace: the rows ``b[mask]`` picks have a data-dependent count, but written back
under the same mask they are just ``where(mask, b, a)``.

``x[mask]`` with a mask known only when the graph runs has no static shape, so kiln does not trace it
(``functional_indexing._masked_rows``). PyTorch code often uses it only to move values between two tensors under one
mask (pytorch_tabnet's ``UnsupervisedLoss``: ``batch_stds[batch_stds == 0] = batch_means[batch_stds == 0]``). So a
traced ``b[mask]`` is a ``PendingMaskedRows``: it remembers ``b`` and the mask as they are, and the assignment
``a[mask2] = rows`` with ``mask2`` the same computation as ``mask`` (the same ops on the same values, as CSE would
merge them) becomes one ``where``, with PyTorch's values and gradients:

```
batch_stds[batch_stds == 0] = batch_means[batch_stds == 0]
    ->   %m = "tensor.equal"(%batch_stds, %zero)
         %batch_stds.1 = "tensor.where"(%m, %batch_means, %batch_stds)
```

Elementwise arithmetic on the pending rows (with a number, a tensor broadcast over a row, or other rows pending under
a mask computed alike) keeps them pending, applied to the whole source: the rows it picks are the same. So the
augmented assignments Rainbow's categorical projection writes, ``l[(u > 0) * (l == u)] -= 1`` (``l[m] = l[m] - 1``),
are ``where(m, l - 1, l)``; an in-place operator keeps the rows' dtype, as PyTorch's (a float result into integer
rows raises).

Any other use of the pending rows (a reduction, a shape, another mask) makes them, where the mask's values can be
known (in a ``kiln.compile`` trace, a mask made from the inputs: specialized and guarded, as ``x[:, mask]`` is;
DeepAR's ``Normal(mu[labels != 0], sigma[labels != 0])``); else it raises the data-dependent-shape error, naming the
line that indexed.
"""

from __future__ import annotations

import numbers
from typing import Any, Callable

import numpy as np

from kiln.compiler.ir.core import Value
from kiln.compiler.ops.registry import has_trait
from kiln.compiler.passes.cse import hashable_attr
from kiln.frontend.tensor import Tensor, apply

SAME_COMPUTATION_DEPTH = 12
"""How many ops back two masks are compared before they count as different (a mask is a short expression)."""


class PendingMaskedRows(Tensor):
    """``source[mask]`` while tracing, not yet made: usable only as the value of ``x[mask] = ...`` (see the module
    docstring); anything else raises ``error``, the data-dependent-shape error located at the indexing line."""

    def __init__(self, source: Value, mask: Value, error: Exception):
        self.source, self.mask, self.error = source, mask, error
        self._rows: Value | None = None

    @property
    def value(self) -> Value:
        """The rows themselves, for any use but ``a[mask] = b[mask]``, where the mask's values can be known: made from
        a ``kiln.compile``'d function's inputs, specialized and guarded (``frontend/value_guards.py``; DeepAR's
        ``Normal(mu[labels != 0], ...)``); else ``error``. Only such a use specializes: the write stays one ``where``."""
        if self._rows is None:
            self._rows = self._specialized_rows()
        return self._rows

    @property
    def dtype(self) -> Any:
        """The rows' dtype, their source's: known without making them (``index_put``'s dtype check reads it before
        ``a[mask] = b[mask]`` becomes one ``where``, also under a mask that cannot be specialized)."""
        return self.source.type.dtype

    def _specialized_rows(self) -> Value:
        from kiln.frontend.eager_data_dependent import masked_rows
        from kiln.frontend.tensor_value_dependent import known_mask  # lazily: both build on the Tensor

        known = known_mask(Tensor(self.mask))
        if known is None:
            raise self.error
        return masked_rows(Tensor(self.source), np.asarray(known, bool)).value

    def elementwise(self, operation: Callable[..., Tensor], *others: Any) -> Tensor:
        """``operation`` (Tensors -> Tensor) applied to the whole source, still pending under the same mask; ``others``
        numbers, tensors broadcast over one row, or rows pending under a mask computed alike. Any other operand (rows
        already made, RetinaNet's ``p * targets`` after ``p = sigmoid(cls_logits[valid])``) takes the rows made
        (``value``: the mask specialized, else the error)."""
        if not all(self._combines_whole(other) for other in others):
            made = [Tensor(other.value) if isinstance(other, PendingMaskedRows) else other for other in others]
            return operation(Tensor(self.value), *made)
        result = operation(Tensor(self.source), *[self._whole(other) for other in others])
        return PendingMaskedRows(result.value, self.mask, self.error)

    def _combines_whole(self, other: Any) -> bool:
        """Whether ``other`` combines with the whole source as with the rows (see ``_whole``)."""
        if isinstance(other, PendingMaskedRows):
            same_shape = tuple(other.source.type.shape) == tuple(self.source.type.shape)
            return same_computation(other.mask, self.mask) and same_shape
        row_dims = len(self.source.type.shape) - len(self.mask.type.shape)
        return isinstance(other, numbers.Number) or (isinstance(other, Tensor) and other.ndim <= row_dims)

    def _whole(self, other: Any) -> Any:
        """``other`` (one that ``_combines_whole``) as it combines with the whole source: pending rows as their
        source, a row-broadcast tensor or a number as it is."""
        return Tensor(other.source) if isinstance(other, PendingMaskedRows) else other

    def _in_place(self, method: str, operation: Callable[..., Tensor], other: Any) -> Tensor:
        """``rows op= other``: the result in the rows' dtype, as PyTorch's in-place operators write it."""
        from kiln.frontend.tensor_inplace import kept_type

        return self.elementwise(lambda source, value: kept_type(source, operation(source, value), method), other)

    def __add__(self, other: Any) -> Any:
        return self.elementwise(lambda x, y: x + y, other)

    def __radd__(self, other: Any) -> Any:
        return self.elementwise(lambda x, y: y + x, other)

    def __sub__(self, other: Any) -> Any:
        return self.elementwise(lambda x, y: x - y, other)

    def __rsub__(self, other: Any) -> Any:
        return self.elementwise(lambda x, y: y - x, other)

    def __mul__(self, other: Any) -> Any:
        return self.elementwise(lambda x, y: x * y, other)

    def __rmul__(self, other: Any) -> Any:
        return self.elementwise(lambda x, y: y * x, other)

    def __truediv__(self, other: Any) -> Any:
        return self.elementwise(lambda x, y: x / y, other)

    def __rtruediv__(self, other: Any) -> Any:
        return self.elementwise(lambda x, y: y / x, other)

    def __neg__(self) -> Any:
        return self.elementwise(lambda x: -x)

    def __iadd__(self, other: Any) -> Any:
        return self._in_place("add_", lambda x, y: x + y, other)

    def __isub__(self, other: Any) -> Any:
        return self._in_place("sub_", lambda x, y: x - y, other)

    def __imul__(self, other: Any) -> Any:
        return self._in_place("mul_", lambda x, y: x * y, other)

    def __itruediv__(self, other: Any) -> Any:
        return self._in_place("div_", lambda x, y: x / y, other)


def same_computation(first: Value, second: Value, depth: int = SAME_COMPUTATION_DEPTH) -> bool:
    """Whether two values are computed alike: the same value, or pure ops of one name and attributes over operands
    computed alike (two ``x == 0`` each with its own constant 0)."""
    if first is second:
        return True
    a, b = first.producer, second.producer
    if depth == 0 or a is None or b is None or a.name != b.name or first.index != second.index:
        return False
    if not has_trait(a.name, "pure") or len(a.operands) != len(b.operands):
        return False
    if {k: hashable_attr(v) for k, v in a.attrs.items()} != {k: hashable_attr(v) for k, v in b.attrs.items()}:
        return False
    return all(same_computation(x, y, depth - 1) for x, y in zip(a.operands, b.operands))


def assigned_under_same_mask(x: Tensor, mask: Tensor, rows: PendingMaskedRows) -> Tensor:
    """``x[mask] = source[mask]``: ``where(mask, source, x)`` when the masks are computed alike and ``source`` has
    ``x``'s shape; else the pending rows' error."""
    source = Tensor(rows.source)
    if not same_computation(mask.value, rows.mask) or tuple(source.shape) != tuple(x.shape):
        raise rows.error
    if mask.ndim < x.ndim:
        mask = apply("tensor.expand_dims", mask, axes=tuple(range(mask.ndim, x.ndim)))
    return apply("tensor.where", mask, source.to(x.dtype), x)


def pending_rows(source: Tensor, mask: Any, error: Exception) -> Any:
    """``source[mask]`` pending, for a bool mask tensor over ``source``'s leading dims; else ``error`` raised."""
    if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(source.shape[:mask.ndim]):
        raise error
    return PendingMaskedRows(source.value, mask.value, error)
