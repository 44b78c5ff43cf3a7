"""More of PyTorch's elementwise math and small linear algebra, as Tensor methods over existing ops: ``log1p``,
``expm1``, ``log2``, ``log10``, ``exp2``, ``sinh``, ``cosh``, ``tan``, ``erf``, ``hypot``, ``logaddexp``, ``heaviside``,
``nan_to_num``, ``addcmul``/``addcdiv``/``addmm``/``baddbmm``, ``diag``/``diagonal``, ``diff``, ``kron``, ``take``,
``kthvalue``/``median``. ``Tensor`` inherits them; ``kiln.*`` has their functional forms.

Accuracy follows PyTorch where cancellation would lose digits: ``log1p``/``expm1`` use the compensated forms of
``frontend/functional_activation.py``, ``sinh`` is ``(expm1(x) - expm1(-x)) / 2``, ``hypot`` scales by the larger
magnitude (no overflow), ``logaddexp`` is ``max + log1p(exp(-|x - y|))``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.tensor_methods import _floating
from kiln.frontend.trace import located_error


def _apply(*args: Any, **attrs: Any) -> Any:
    from kiln.frontend.tensor import apply

    return apply(*args, **attrs)


class MathMethods:
    """See the module docstring."""

    def log1p(self) -> Any:
        from kiln.frontend.functional_activation import _log1p

        return _log1p(_floating(self))

    def expm1(self) -> Any:
        from kiln.frontend.functional_activation import _expm1

        return _expm1(_floating(self))

    def log2(self) -> Any:
        return _floating(self).log() * (1 / math.log(2))

    def log10(self) -> Any:
        return _floating(self).log() * (1 / math.log(10))

    def exp2(self) -> Any:
        return (_floating(self) * math.log(2)).exp()

    def sinh(self) -> Any:
        x = _floating(self)
        return (x.expm1() - (-x).expm1()) * 0.5

    def cosh(self) -> Any:
        x = _floating(self)
        return (x.exp() + (-x).exp()) * 0.5

    def tan(self) -> Any:
        x = _floating(self)
        return x.sin() / x.cos()

    def erf(self) -> Any:
        return _apply("tensor.erf", _floating(self))

    def hypot(self, other: Any) -> Any:
        """``sqrt(x^2 + y^2)`` scaled by the larger magnitude, so it neither overflows nor underflows (0 at 0, 0)."""
        a, b = self.abs(), (other.abs() if hasattr(other, "abs") else abs(other))
        larger, smaller = a.maximum(b), a.minimum(b)
        safe = _apply("tensor.where", larger > 0, larger, 1.0)
        ratio = smaller / safe
        return larger * (1.0 + ratio * ratio).sqrt()

    def logaddexp(self, other: Any) -> Any:
        """``log(exp(x) + exp(y))`` as ``max + log1p(exp(-|x - y|))``; equal infinities give that infinity."""
        larger, smaller = self.maximum(other), self.minimum(other)
        both_infinite = (larger == smaller) & (larger.abs() == math.inf)
        gap = _apply("tensor.where", both_infinite, 0.0, smaller - larger)
        return _apply("tensor.where", both_infinite, larger, larger + gap.exp().log1p())

    def heaviside(self, values: Any) -> Any:
        """0 below zero, 1 above, ``values`` at zero."""
        step = _apply("tensor.where", self > 0, 1.0, 0.0).to(self.dtype)
        return _apply("tensor.where", self == 0, values, step)

    def nan_to_num(self, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None) -> Any:
        """NaN to ``nan``, infinities to ``posinf``/``neginf`` (the dtype's largest and lowest by default)."""
        if not self.dtype.is_float:
            return self
        info = np.finfo(self.dtype.numpy)
        high, low = float(info.max) if posinf is None else posinf, float(info.min) if neginf is None else neginf
        cleaned = _apply("tensor.where", self.isnan(), nan, self)
        cleaned = _apply("tensor.where", cleaned == math.inf, high, cleaned)
        return _apply("tensor.where", cleaned == -math.inf, low, cleaned)

    def addcmul(self, tensor1: Any, tensor2: Any, *, value: float = 1) -> Any:
        return self + value * tensor1 * tensor2

    def addcdiv(self, tensor1: Any, tensor2: Any, *, value: float = 1) -> Any:
        return self + value * tensor1 / tensor2

    def addmm(self, mat1: Any, mat2: Any, *, beta: float = 1, alpha: float = 1) -> Any:
        return _scaled(self, beta) + _scaled(mat1.mm(mat2), alpha)

    def baddbmm(self, batch1: Any, batch2: Any, *, beta: float = 1, alpha: float = 1) -> Any:
        return _scaled(self, beta) + _scaled(batch1.bmm(batch2), alpha)

    def diag(self, diagonal: int = 0) -> Any:
        """A vector's diagonal matrix (``diagonal`` above the main one), or a matrix's diagonal as a vector."""
        if self.ndim == 1:
            size = self.shape[0] + abs(diagonal)
            if not isinstance(size, int):
                raise located_error(f"diag of the symbolic-length {self.type} is not supported")
            placed = np.eye(size, k=diagonal, dtype=bool)
            rows = self.unsqueeze(0 if diagonal >= 0 else 1)
            if diagonal:
                rows = _padded(rows, diagonal, size)
            return _apply("tensor.where", _apply("tensor.constant", value=placed), rows, 0.0 if self.dtype.is_float else 0)
        if self.ndim != 2:
            raise located_error(f"diag takes a 1-D or 2-D tensor, got {self.type}")
        return self.diagonal(diagonal)

    def diagonal(self, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Any:
        """The elements ``[i, i + offset]`` of the ``(dim1, dim2)`` planes, as the last dim (PyTorch's order)."""
        from kiln.frontend.functional import movedim

        planes = movedim(self, (dim1 % self.ndim, dim2 % self.ndim), (-2, -1))
        rows, columns = planes.shape[-2:]
        if not isinstance(rows, int) or not isinstance(columns, int):
            raise located_error(f"diagonal of symbolic dims of {self.type} is not supported")
        count = max(0, min(rows, columns - offset) if offset >= 0 else min(rows + offset, columns))
        first = (0, offset) if offset >= 0 else (-offset, 0)
        flat = planes.reshape(tuple(planes.shape[:-2]) + (rows * columns,))
        indices = np.asarray([(first[0] + i) * columns + first[1] + i for i in range(count)], np.int64)
        return _apply("tensor.take", flat, _apply("tensor.constant", value=indices), axis=-1)

    def diff(self, n: int = 1, dim: int = -1, prepend: Any = None, append: Any = None) -> Any:
        """Differences of neighbours along ``dim``, ``n`` times (after joining ``prepend``/``append``)."""
        from kiln.frontend.functional_nn import cat

        x = self
        if prepend is not None or append is not None:
            x = cat([t for t in (prepend, x, append) if t is not None], dim)
        for _ in range(n):
            size = x.shape[dim]
            if not isinstance(size, int):
                raise located_error(f"diff along the symbolic dim {size} of {x.type} is not supported")
            later, earlier = x.narrow(dim, 1, size - 1), x.narrow(dim, 0, size - 1)
            x = later != earlier if x.dtype is DType.bool else later - earlier
        return x

    def kron(self, other: Any) -> Any:
        """The Kronecker product: ``result[i a + k] = self[i] other[k]`` per dim."""
        rank = max(self.ndim, other.ndim)
        a = self.reshape((1,) * (rank - self.ndim) + tuple(self.shape))
        b = other.reshape((1,) * (rank - other.ndim) + tuple(other.shape))
        interleaved_a = a.reshape(tuple(v for d in a.shape for v in (d, 1)))
        interleaved_b = b.reshape(tuple(v for d in b.shape for v in (1, d)))
        product = interleaved_a * interleaved_b
        return product.reshape(tuple(x * y for x, y in zip(a.shape, b.shape)))

    def take(self, index: Any) -> Any:
        """Elements of the flattened tensor at ``index``, in ``index``'s shape."""
        return _apply("tensor.take", self.reshape(-1), index, axis=0)

    def kthvalue(self, k: int, dim: int = -1, keepdim: bool = False) -> Any:
        """The ``k``-th smallest along ``dim`` (1-based) and its index, as PyTorch's ``(values, indices)``."""
        from kiln.frontend.tensor import ValuesIndices

        size = self.shape[dim]
        if not isinstance(k, int) or not isinstance(size, int) or not 1 <= k <= size:
            raise located_error(f"kthvalue: k={k!r} must be in [1, {size}] for dim {dim} of {self.type}")
        indices = self.argsort(dim).narrow(dim, k - 1, 1)
        values = self.gather(dim, indices)
        return ValuesIndices(values, indices) if keepdim else ValuesIndices(values.squeeze(dim), indices.squeeze(dim))

    def median(self, dim: int | None = None, keepdim: bool = False) -> Any:
        """The lower median (PyTorch's): of all elements without ``dim``, else ``(values, indices)`` along it."""
        if dim is None:
            flat = self.reshape(-1)
            return flat.kthvalue((flat.shape[0] + 1) // 2, 0).values
        return self.kthvalue((self.shape[dim] + 1) // 2, dim, keepdim)


def _scaled(x: Any, factor: float) -> Any:
    return x if factor == 1 else x * factor


def _padded(rows: Any, diagonal: int, size: int) -> Any:
    """A row (or column) vector moved ``diagonal`` places along itself, to the length ``size``."""
    from kiln.frontend.functional_nn import pad

    shift = abs(diagonal)
    return pad(rows, (shift, 0) if diagonal > 0 else (0, 0, shift, 0))
