"""PyTorch's elementwise ``Tensor`` methods over existing ops: special functions (``erfc``, ``erfinv``, ``lgamma``,
``digamma``, ``xlogy``, ``logit``, ``sinc``, ...), sign and float tests (``copysign``, ``signbit``, ``isclose``,
``isposinf``, ...), ``fmax``/``fmin``, ``logaddexp2``, and PyTorch's aliases (``multiply``, ``divide``...).
``Tensor`` inherits them through ``ExtraMethods`` (``tensor_extras.py``, which also generates their in-place ``_``
forms).

Special functions (their helpers in ``frontend/tensor_special.py``), accurate to a few ulps in float64 (PyTorch's float64 as the oracle, gradients included):
``erfc`` is ``1 - erf`` below 2 and Laplace's continued fraction (60 terms, converged to an ulp) above, so its tail
keeps its digits down to the underflow; ``erfinv`` starts from Giles' single-precision approximation and takes Newton
steps on ``erf`` (on ``erfc`` of the exact ``1 - |y|`` above 1/2, so results near +-1 keep their digits), the last
step alone differentiated, whose slope is ``1 / erf'(x)``; ``lgamma``/``digamma`` shift by the recurrence to
``x + 10``, sum the Stirling (asymptotic) series there, and reflect below 1/2 through ``sin(pi r)`` of the exact
``r = x - round(x)`` (no loss for large negative ``x``).
"""

from __future__ import annotations

import math
from typing import Any

from kiln.compiler.ir.types import DType
from kiln.frontend.tensor_math import _magnitude, _promoted, _sign_bit
from kiln.frontend.tensor_methods import _floating
from kiln.frontend.tensor_mixin_ops import _constant, _is_tensor, _where
from kiln.frontend.tensor_operand_checks import check_tensor_operands
from kiln.frontend.tensor_special import _digamma_positive, _erfc, _erfinv_inside, _lgamma_positive, _sin_pi, _sin_pi_fraction
from kiln.frontend.trace import located_error


class ElementwiseExtraMethods:
    """The special functions, float tests and aliases; see the module docstring."""

    def erfc(self) -> Any:
        return _erfc(_floating(self))

    def erfinv(self) -> Any:
        """The ``x`` with ``erf(x) = y``: +-inf at +-1, NaN beyond (see the module docstring)."""
        y = _floating(self)
        magnitude = _magnitude(y)  # its slope at 0 is 1, so erfinv'(0) is sqrt(pi) / 2
        inside = magnitude < 1
        root = _erfinv_inside(_where(inside, magnitude, 0.5))
        edge = (1.0 - magnitude).rsqrt()  # inf at +-1, NaN beyond and at NaN; its slope too (PyTorch's), not 0
        root = _where(inside, root, edge)
        return _where(y < 0, -root, root)

    def lgamma(self) -> Any:
        """``log |Gamma(x)|``; inf at the poles 0, -1, -2, ... (see the module docstring)."""
        x = _floating(self)
        reflect = x < 0.5
        positive = _lgamma_positive(_where(reflect, 1.0 - x, x))
        sine = _sin_pi_fraction(x, reflect).abs()
        result = _where(reflect, math.log(math.pi) - sine.log() - positive, positive)
        return _where(x == math.inf, x, result)

    def digamma(self) -> Any:
        """``Gamma'(x) / Gamma(x)``; at the poles PyTorch's: -inf at +0, inf at -0, NaN at -1, -2, ..."""
        x = _floating(self)
        reflect = x < 0.5
        positive = _digamma_positive(_where(reflect, 1.0 - x, x))
        fraction = _where(reflect, x - x.round(), 0.25)
        turned = fraction * math.pi
        result = _where(reflect, positive - math.pi * turned.cos() / turned.sin(), positive)
        at_zero = _where(_sign_bit(x), x.new_tensor(math.inf), x.new_tensor(-math.inf))
        pole = _where(x == 0, at_zero, x.new_tensor(math.nan))
        return _where(reflect & (fraction == 0), pole, result)

    def xlogy(self, other: Any) -> Any:
        """``x * log(y)``, 0 where ``x`` is 0 (unless ``y`` is NaN), as PyTorch's. Its slopes are torch's (``log y``
        and ``x / y``; at ``x == 0`` the slope in ``x`` is ``log y`` for ``y > 0``, 0 for ``y <= 0``), except at
        ``x == y == 0``, where torch's slope in ``y`` is ``0 / 0 = nan`` and kiln's 0: a NaN slope next to a finite value
        takes a custom backward, and this one is a ``where`` of two formulas."""
        x, y = _float_pair(self, other)
        zero = (x == 0) & ~y.isnan()
        singular = zero & ((y <= 0) | y.isinf())  # where x * log(y) would be nan (0 * -inf, 0 * log(negative), 0 * inf)
        return _where(singular, 0.0, x * _where(singular, 1.0, y).log())

    def logit(self, eps: float | None = None) -> Any:
        """``log(p / (1 - p))`` of ``p`` clamped to ``[eps, 1 - eps]`` when ``eps`` is given, as ``log(p) - log1p(-p)``
        (within 1e3 ulps where the quotient's rounding cost 4e6 near 1/2), whose slope ``1 / p + 1 / (1 - p)`` is inf
        at 0 and 1. Outside [0, 1] value and slope are NaN, as PyTorch's: ``0 * sqrt(p (1 - p))`` is a zero term whose
        slope is NaN there."""
        from kiln.frontend.functional_activation import _log1p

        p = _floating(self)
        if eps is not None:
            p = p.clamp(eps, 1 - eps)
        spread = p * (1.0 - p)
        domain = _where(spread == 0, 1.0, spread).sqrt() * 0.0  # sqrt(0)'s slope would be inf, times 0: NaN
        return p.log() - _log1p(-p) + domain

    def sinc(self) -> Any:
        """``sin(pi x) / (pi x)`` with ``sin(pi x)`` from ``x - round(x)`` (``_sin_pi``: 0 at every integer). Below
        ``|x| = 1e-4`` the series ``1 - p^2 / 6 + p^4 / 120`` (``p = pi x``), whose slope is ``-pi^2 x / 3`` down to 0
        (the quotient's is inf - inf once ``p^2`` underflows)."""
        x = _floating(self)
        small = x.abs() < 1e-4
        far = _where(small, 1.0, x)
        near = _where(small, x, 0.0) * math.pi
        series = 1.0 - near * near * (1.0 / 6.0 - near * near * (1.0 / 120.0))
        return _where(small, series, _sin_pi(far) / (far * math.pi))

    def deg2rad(self) -> Any:
        return _floating(self) * (math.pi / 180.0)

    def rad2deg(self) -> Any:
        return _floating(self) * (180.0 / math.pi)

    def float_power(self, exponent: Any) -> Any:
        """``self ** exponent`` in float64, as PyTorch's."""
        return self.double() ** (exponent.double() if _is_tensor(exponent) else float(exponent))

    def copysign(self, other: Any) -> Any:
        """``|self|`` with the sign of ``other`` (-0.0's too), in a floating dtype."""
        x, y = _float_pair(self, other)
        return _where(_sign_bit(y), -x.abs(), x.abs())

    def signbit(self) -> Any:
        if self.dtype.is_float:
            return _sign_bit(self)
        return self < 0 if self.dtype is not DType.bool else self.new_full(self.shape, False, dtype=DType.bool)

    def sgn(self) -> Any:
        return self.sign()

    def isclose(self, other: Any, rtol: float = 1e-05, atol: float = 1e-08, equal_nan: bool = False) -> Any:
        """``|self - other| <= atol + rtol |other|`` elementwise; equal infinities are close, NaN only with ``equal_nan``."""
        close = (self == other) | ((self - other).abs() <= atol + rtol * _abs(other))
        if equal_nan and self.dtype.is_float:
            close = close | (self.isnan() & (other.isnan() if _is_tensor(other) else math.isnan(other)))
        return close

    def isposinf(self) -> Any:
        return self == math.inf if self.dtype.is_float else self.new_full(self.shape, False, dtype=DType.bool)

    def isneginf(self) -> Any:
        return self == -math.inf if self.dtype.is_float else self.new_full(self.shape, False, dtype=DType.bool)

    def isreal(self) -> Any:
        return self.new_full(self.shape, True, dtype=DType.bool)

    def fmax(self, other: Any) -> Any:
        """The larger of the two, ignoring a NaN (NaN only where both are)."""
        check_tensor_operands("fmax", (("other", other, 1),))
        return _where(_nan_of(other), self, _where(self.isnan(), other, self.maximum(other)))

    def fmin(self, other: Any) -> Any:
        check_tensor_operands("fmin", (("other", other, 1),))
        return _where(_nan_of(other), self, _where(self.isnan(), other, self.minimum(other)))

    def logaddexp2(self, other: Any) -> Any:
        """``log2(2**x + 2**y)``, through ``logaddexp`` in natural units."""
        return (self * math.log(2)).logaddexp(other * math.log(2)) * (1 / math.log(2))

    # aliases -------------------------------------------------------------------
    def multiply(self, other: Any) -> Any:
        return self * other

    def subtract(self, other: Any, *, alpha: Any = 1) -> Any:
        return self.sub(other, alpha=alpha)

    def divide(self, other: Any, *, rounding_mode: str | None = None) -> Any:
        return self.div(other, rounding_mode=rounding_mode)

    def true_divide(self, other: Any) -> Any:
        return self / other

    def negative(self) -> Any:
        return -self

    def positive(self) -> Any:
        if self.dtype is DType.bool:
            raise located_error("positive() of a bool tensor is not supported (as in PyTorch); use logical ops")
        return self

    def not_equal(self, other: Any) -> Any:
        return self.ne(other)

    def absolute(self) -> Any:
        return self.abs()


def _float_pair(x: Any, y: Any) -> tuple[Any, Any]:
    """Both operands floating, in one dtype (a number takes ``x``'s)."""
    x = _floating(x)
    y = _floating(y) if _is_tensor(y) else x.new_tensor(y)
    return _promoted(x, y)


def _abs(value: Any) -> Any:
    return value.abs() if _is_tensor(value) else abs(value)


def _nan_of(value: Any) -> Any:
    if _is_tensor(value):
        return value.isnan()
    return _constant(isinstance(value, float) and math.isnan(value))
