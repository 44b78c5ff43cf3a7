"""More of PyTorch's elementwise math and small linear algebra, as Tensor methods over existing ops: ``log1p``,
``expm1``, ``log2``, ``log10``, ``exp2``, ``sinh``, ``cosh``, ``tan``, ``erf``, ``hypot``, ``logaddexp``, ``heaviside``,
``nan_to_num``, ``atan``/``asin``/``acos`` (the IR's ops) and ``atan2``, ``asinh``/``acosh``/``atanh`` (all with their
``arc*`` aliases), ``addcmul``/``addcdiv``/``addmm``/``baddbmm``, ``diag``/``diagonal``, ``diff``, ``kron``, ``take``,
``kthvalue``/``median``, ``cummax``/``cummin``/``logcumsumexp``. ``Tensor`` inherits them; ``kiln.*`` has their
functional forms.

Accuracy follows PyTorch where cancellation would lose digits: ``log1p``/``expm1`` use the compensated forms of
``frontend/functional_activation.py``, ``sinh`` is ``(expm1(x) - expm1(-x)) / 2``, ``hypot`` scales by the larger
magnitude (no overflow), ``logaddexp`` is ``max + log1p(exp(-|x - y|))``, ``asinh``/``acosh``/``atanh`` are log1p
forms near 0 (and near 1 for ``acosh``) and ``log(2x)`` far out, selected with inputs that keep every branch finite.

The running scans are IR ops (``compiler/ops/scan.py``), each one linear pass on NumPy: ``logcumsumexp`` is
``tensor.logcumsumexp`` (any dim symbolic, the scanned one too), and ``cummax``/``cummin`` take their indices from
``tensor.cumargmax``/``cumargmin`` and gather the values (``gather`` needs a static length along the scanned dim).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import ml_dtypes
import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.functional_half import computes_in_opmath, in_opmath
from kiln.frontend.tensor_methods import _floating
from kiln.frontend.trace import located_error
from kiln.frontend.autocast import autocasts


def _value_first(method: str, tensor1: Any, tensor2: Any, deprecated: tuple[Any, ...],
                 value: Any) -> tuple[Any, Any, Any]:
    """``(tensor1, tensor2, value)``, also from PyTorch's deprecated overload ``x.addcmul_(value, tensor1, tensor2)``
    that older optimizers call (LiyuanLucasLiu's RAdam, as HashNeRF ships it: ``exp_avg_sq.mul_(beta2).addcmul_(1 -
    beta2, grad, grad)``), with PyTorch's warning."""
    if not deprecated:
        return tensor1, tensor2, value
    if len(deprecated) != 1 or not isinstance(tensor1, (int, float)) or value != 1:
        raise located_error(f"{method} takes (tensor1, tensor2, *, value=number), or PyTorch's deprecated (value "
                            f"number, tensor1, tensor2); got {2 + len(deprecated)} positional arguments")
    warnings.warn(f"This overload of {method} is deprecated: {method}(Number value, Tensor tensor1, Tensor tensor2); "
                  f"use {method}(Tensor tensor1, Tensor tensor2, *, Number value=1) instead", UserWarning, stacklevel=3)
    return tensor2, deprecated[0], tensor1


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

    # inverse trigonometric and hyperbolic functions ------------------------
    def atan(self) -> Any:
        return _apply("tensor.atan", _floating(self))

    def asin(self) -> Any:
        return _apply("tensor.asin", _floating(self))

    def acos(self) -> Any:
        return _apply("tensor.acos", _floating(self))

    arctan, arcsin, arccos = atan, asin, acos

    def atan2(self, other: Any) -> Any:
        """The angle of the point ``(other, self)`` in [-pi, pi], as C's and PyTorch's ``atan2``: the quadrant from both
        signs (-0.0's too: ``atan2(+-0, -0) = +-pi``), +-pi/4 or +-3pi/4 for two infinities, NaN from NaN. From
        ``atan`` of a ratio at most 1 in magnitude, so no slope overflows: ``atan(y / x)``, turned by +-pi when ``x`` is
        negative, where ``|y| <= |x|``, else ``+-pi/2 - atan(x / y)``; each branch sees inputs that keep it finite where
        it is not taken. The slope at the origin is ``(1 / x, 0)`` at +0 (PyTorch's is NaN)."""
        y, x = _promoted(_floating(self), _floating(other if hasattr(other, "dtype") else self.new_tensor(other)))
        both_infinite = (y.abs() == math.inf) & (x.abs() == math.inf)
        origin = (y == 0) & (x == 0)
        steep = y.abs() > x.abs()  # never at the origin, for two infinities or NaN
        flat = ~(steep | both_infinite | origin)
        y_negative, x_negative = _sign_bit(y), _sign_bit(x)
        half_turn = _apply("tensor.where", y_negative, y.new_tensor(-math.pi), y.new_tensor(math.pi))
        flat_angle = (_apply("tensor.where", flat, y, 0.0) / _apply("tensor.where", flat, x, 1.0)).atan()
        flat_angle = _apply("tensor.where", x_negative, flat_angle + half_turn, flat_angle)  # not + 0: atan2(-0, 1) is -0
        steep_angle = half_turn * 0.5 - (_apply("tensor.where", steep, x, 0.0) / _apply("tensor.where", steep, y, 1.0)).atan()
        corner = _apply("tensor.where", x_negative, half_turn * 0.75, half_turn * 0.25)
        at_origin = _apply("tensor.where", x_negative, half_turn, y)
        special = _apply("tensor.where", both_infinite, corner, at_origin)
        return _apply("tensor.where", steep, steep_angle, _apply("tensor.where", flat, flat_angle, special))

    arctan2 = atan2

    @computes_in_opmath  # a half input: float32 inside (a^2 overflows float16 past 256), one rounding
    def asinh(self) -> Any:
        """``log1p(a + a^2 / (1 + sqrt(1 + a^2)))`` of ``a = |x|`` (no cancellation near 0), ``log(a) + log 2`` above
        2**28 (where ``a^2`` could overflow and ``1 / a^2`` is below an ulp); odd, -0.0 kept."""
        x = _floating(self)
        magnitude = _magnitude(x)
        large = magnitude > _HUGE
        near = _apply("tensor.where", large, 1.0, magnitude)
        near = (near + near * near / (1.0 + (1.0 + near * near).sqrt())).log1p()
        far = _apply("tensor.where", large, magnitude, _HUGE).log() + math.log(2)
        return _odd(x, _apply("tensor.where", large, far, near))

    @computes_in_opmath
    def acosh(self) -> Any:
        """``log1p(t + sqrt(t (t + 2)))`` of ``t = x - 1`` (exact near 1, so small results and the slope ``1 / sqrt(t (t +
        2))`` keep their digits; inf at 1), ``log(x) + log 2`` above 2**28; NaN below 1, its gradient too."""
        x = _floating(self)
        large = x > _HUGE
        t = _apply("tensor.where", large, 1.0, x) - 1.0
        near = (t + t.sqrt() * (t + 2.0).sqrt()).log1p()  # not sqrt(t (t + 2)): its slope at t = 0 would be inf * 0
        return _apply("tensor.where", large, _apply("tensor.where", large, x, _HUGE).log() + math.log(2), near)

    @computes_in_opmath
    def atanh(self) -> Any:
        """``log1p(2a / (1 - a)) / 2`` of ``a = |x|`` below 1/2 (no cancellation near 0), ``(log(1 + a) - log(1 - a)) / 2``
        above (+-inf at +-1 with an infinite slope, NaN beyond); odd, -0.0 kept."""
        x = _floating(self)
        magnitude = _magnitude(x)
        small = magnitude < 0.5
        low, high = _apply("tensor.where", small, magnitude, 0.0), _apply("tensor.where", small, 0.5, magnitude)
        near = (2.0 * low / (1.0 - low)).log1p()
        far = (1.0 + high).log() - (1.0 - high).log()
        return _odd(x, _apply("tensor.where", small, near, far) * 0.5)

    arcsinh, arccosh, arctanh = asinh, acosh, atanh

    def hypot(self, other: Any) -> Any:
        """``sqrt(x^2 + y^2)`` scaled by the larger magnitude, so it neither overflows nor underflows (0 at 0, 0)."""
        a, b = self.abs(), (other.abs() if hasattr(other, "abs") else abs(other))
        larger, smaller = _apply("tensor.maximum", a, b), _apply("tensor.minimum", a, b)  # b may be a number
        safe = _apply("tensor.where", larger > 0, larger, 1.0)
        ratio = smaller / safe
        return larger * (1.0 + ratio * ratio).sqrt()

    def logaddexp(self, other: Any) -> Any:
        """``log(exp(x) + exp(y))`` as ``max + log1p(exp(-|x - y|))``; equal infinities give that infinity."""
        larger, smaller = _apply("tensor.maximum", self, other), _apply("tensor.minimum", self, other)
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
        info = ml_dtypes.finfo(self.dtype.numpy)
        high, low = float(info.max) if posinf is None else posinf, float(info.min) if neginf is None else neginf
        cleaned = _apply("tensor.where", self.isnan(), nan, self)
        cleaned = _apply("tensor.where", cleaned == math.inf, high, cleaned)
        return _apply("tensor.where", cleaned == -math.inf, low, cleaned)

    # the fused forms below compute half operands in float32 and round once, as PyTorch's kernels (functional_half.py)
    def addcmul(self, tensor1: Any, tensor2: Any, *deprecated: Any, value: float = 1) -> Any:
        tensor1, tensor2, value = _value_first("addcmul", tensor1, tensor2, deprecated, value)
        return in_opmath(lambda x, a, b: x + value * a * b, self, tensor1, tensor2)

    def addcdiv(self, tensor1: Any, tensor2: Any, *deprecated: Any, value: float = 1) -> Any:
        tensor1, tensor2, value = _value_first("addcdiv", tensor1, tensor2, deprecated, value)
        return in_opmath(lambda x, a, b: x + value * a / b, self, tensor1, tensor2)

    @autocasts("addmm")
    def addmm(self, mat1: Any, mat2: Any, *, beta: float = 1, alpha: float = 1) -> Any:
        return in_opmath(lambda x, a, b: _scaled(x, beta) + _scaled(a.mm(b), alpha), self, mat1, mat2)

    @autocasts("baddbmm")
    def baddbmm(self, batch1: Any, batch2: Any, *, beta: float = 1, alpha: float = 1) -> Any:
        return in_opmath(lambda x, a, b: _scaled(x, beta) + _scaled(a.bmm(b), alpha), self, batch1, batch2)

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
        return diagonal_values(self, diagonal)

    def diagonal(self, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Any:
        """The elements ``[i, i + offset]`` of the ``(dim1, dim2)`` planes, as the last dim (PyTorch's order); a view,
        as PyTorch's: ``cov.diagonal().add_(eps)`` writes ``cov`` (``frontend/view_writes.py``)."""
        from kiln.frontend.tensor_inplace import link_view

        result = diagonal_values(self, offset, dim1, dim2)
        link_view(result, self, "diagonal", {"offset": offset, "dim1": dim1, "dim2": dim2})
        return result

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

    # running scans -----------------------------------------------------------
    def cummax(self, dim: int) -> Any:
        """``(values, indices)`` of the running maximum along ``dim``, as PyTorch's: the index of the latest occurrence
        on ties, and once a NaN is seen NaN with the index of the latest NaN. The values are ``self`` gathered at the
        indices, so the gradient reaches exactly the selected elements (PyTorch's scatter-add)."""
        return _running_extreme(self, dim, "cummax")

    def cummin(self, dim: int) -> Any:
        """``(values, indices)`` of the running minimum along ``dim``: ``cummax``'s rules with ``<=``."""
        return _running_extreme(self, dim, "cummin")

    def logcumsumexp(self, dim: int) -> Any:
        """``log(cumsum(exp(x)))`` along ``dim`` with no overflow or underflow (``tensor.logcumsumexp``: a running
        ``logaddexp``, so inputs 1e3 apart keep their digits); integers promote to float32."""
        x = _floating(self)
        return _apply("tensor.logcumsumexp", x, axis=_scan_axis(x, dim, "logcumsumexp"))


def _running_extreme(x: Any, dim: int, name: str) -> Any:
    """The indices from ``tensor.cumargmax``/``cumargmin`` (bools scanned as integers), the values ``x`` gathered there."""
    from kiln.frontend.tensor import ValuesIndices

    axis = _scan_axis(x, dim, name)
    if not isinstance(x.shape[axis], int):
        raise located_error(f"{name} along the symbolic dim {x.shape[axis]} of {x.type} is not supported: its values "
                            "are gathered at the indices, which needs a static length along dim; scan along a static dim")
    key = x.long() if x.dtype is DType.bool else x
    index = _apply(f"tensor.cumarg{name[3:]}", key, axis=axis)
    return ValuesIndices(x.gather(axis, index), index)


def _scan_axis(x: Any, dim: int, name: str) -> int:
    """``dim`` counted from the front (any length, symbolic too)."""
    if x.ndim == 0:
        raise located_error(f"{name} needs a tensor of rank >= 1, got {x.type}; reshape it to (1,)")
    if not -x.ndim <= dim < x.ndim:
        raise located_error(f"{name}: dim {dim} is out of range for {x.type}; pass a dim in [{-x.ndim}, {x.ndim - 1}]")
    return dim % x.ndim


_HUGE = 2.0**28
"""Above it ``asinh``/``acosh`` are ``log(2a)`` to the last bit (in float64 too)."""


def _sign_bit(x: Any) -> Any:
    """True where ``x`` is negative, -0.0 included (``1 / -0.0`` is ``-inf``; NumPy warns about that division)."""
    return (x < 0) | ((x == 0) & (1.0 / x < 0))  # no select of x first: onnxruntime's Where drops the sign of a -0.0


def _magnitude(x: Any) -> Any:
    """``|x|`` whose gradient is NaN at NaN (``tensor.abs``'s is 0 there; PyTorch's asinh and atanh give NaN)."""
    return _apply("tensor.where", x < 0, -x, x)


def _promoted(y: Any, x: Any) -> tuple[Any, Any]:
    """Both in float64 if either is (PyTorch's promotion of two float tensors)."""
    if y.dtype is x.dtype:
        return y, x
    return y.to(DType.f64), x.to(DType.f64)


def _odd(x: Any, magnitude: Any) -> Any:
    """``f(x)`` of an odd ``f`` from ``f(|x|)``: negated where ``x < 0``, and ``x`` itself at +-0 (keeping its sign)."""
    return _apply("tensor.where", x < 0, -magnitude, _apply("tensor.where", x == 0, x, magnitude))


def _scaled(x: Any, factor: float) -> Any:
    return x if factor == 1 else x * factor


def _padded(rows: Any, diagonal: int, size: int) -> Any:
    """A row (or column) vector moved ``diagonal`` places along itself, to the length ``size``."""
    from kiln.frontend.functional_nn import pad

    shift = abs(diagonal)
    return pad(rows, (shift, 0) if diagonal > 0 else (0, 0, shift, 0))


def diagonal_values(x: Any, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Any:
    """``x.diagonal(offset, dim1, dim2)``'s values, a new tensor (``diag`` of a matrix: a copy, as PyTorch's)."""
    from kiln.frontend.functional import movedim

    planes = movedim(x, (dim1 % x.ndim, dim2 % x.ndim), (-2, -1))
    rows, columns = planes.shape[-2:]
    if not isinstance(rows, int) or not isinstance(columns, int):
        raise located_error(f"diagonal of symbolic dims of {x.type} is not supported")
    count = max(0, min(rows, columns - offset) if offset >= 0 else min(rows + offset, columns))
    first = (0, offset) if offset >= 0 else (-offset, 0)
    flat = planes.reshape(tuple(planes.shape[:-2]) + (rows * columns,))
    indices = np.asarray([(first[0] + i) * columns + first[1] + i for i in range(count)], np.int64)
    return _apply("tensor.take", flat, _apply("tensor.constant", value=indices), axis=-1)
