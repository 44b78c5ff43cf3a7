"""The numerical kernels behind ``Tensor.i0``, ``polygamma``, ``igamma``/``igammac``, ``frexp``, ``nextafter`` and
``gcd`` (``frontend/tensor_more.py``), over existing elementwise ops; each says how it keeps its digits.

```python
x.i0()              # power series below 20, Hankel's asymptotic series above (both differentiate to I1)
x.polygamma(2)      # -2 zeta(3, x) by Euler-Maclaurin at x + 20
a.igamma(x)         # P(a, x): the series below a + 1, Legendre's continued fraction above
```
"""

from __future__ import annotations

import math
from typing import Any

import ml_dtypes
import numpy as np

from kiln.compiler.ir.types import DType
from kiln.frontend.tensor_special import _polynomial


def _where(condition: Any, x: Any, y: Any) -> Any:
    from kiln.frontend.tensor import apply

    return apply("tensor.where", condition, x, y)


# i0 -------------------------------------------------------------------------------------------------------------------

_I0_SPLIT = 20.0
"""Below, the power series (40 terms reach an ulp at 20); above, the asymptotic series (its terms shrink past k = 40)."""

_I0_SERIES = tuple(1.0 / math.factorial(k) ** 2 for k in range(40, -1, -1))
"""``I0(x) = sum_k (x^2 / 4)^k / (k!)^2``, from the highest power down."""

_I0_ASYMPTOTIC = tuple(math.prod((2 * j - 1) ** 2 for j in range(1, k + 1)) / (math.factorial(k) * 8.0 ** k)
                       for k in range(24, -1, -1))
"""``I0(x) ~ e^x / sqrt(2 pi x) sum_k ((2k - 1)!!)^2 / (k! (8x)^k)``, from the highest power of ``1/x`` down."""


def i0(x: Any) -> Any:
    """The modified Bessel function of the first kind, order 0. Each branch sees only inputs in its range, so the
    other's overflow never reaches the gradient."""
    near = x.abs() <= _I0_SPLIT
    small = _where(near, x, 0.0)
    series = _polynomial(small * small * 0.25, _I0_SERIES)
    large = _where(near, _I0_SPLIT, x.abs())
    asymptotic = large.exp() / (2 * math.pi * large).sqrt() * _polynomial(1.0 / large, _I0_ASYMPTOTIC)
    return _where(near, series, asymptotic)


# polygamma ------------------------------------------------------------------------------------------------------------

_ZETA_SHIFT = 20
"""``zeta(s, x)`` sums its first 20 terms exactly and the rest by Euler-Maclaurin at ``x + 20``: to an ulp or two
wherever ``x + 20 >= 10``."""

_BERNOULLI = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730, 7 / 6, -3617 / 510, 43867 / 798)
"""``B_2, B_4, ..., B_18``."""


def hurwitz_zeta(s: int, x: Any) -> Any:
    """``zeta(s, x) = sum_k (x + k)^-s`` for an integer ``s >= 2``: twenty terms, then Euler-Maclaurin's tail
    ``z^(1-s) / (s-1) + z^-s / 2 + sum_j B_2j / (2j)! s (s+1) ... (s+2j-2) z^(-s-2j+1)`` at ``z = x + 20``."""
    total = x.pow(-s)
    for k in range(1, _ZETA_SHIFT):
        total = total + (x + k).pow(-s)
    z = x + _ZETA_SHIFT
    tail = z.pow(1 - s) / (s - 1) + z.pow(-s) * 0.5
    for j, bernoulli in enumerate(_BERNOULLI, start=1):
        rising = math.prod(range(s, s + 2 * j - 1))
        tail = tail + z.pow(-s - 2 * j + 1) * (bernoulli * rising / math.factorial(2 * j))
    return total + tail


def polygamma(n: int, x: Any) -> Any:
    """``psi^(n)(x) = (-1)^(n+1) n! zeta(n + 1, x)`` for ``n >= 1`` (``digamma`` for 0); accurate for ``x > -10`` (the
    poles at 0, -1, ... included); below, the tail's expansion point comes too close to 0."""
    if n == 0:
        return x.digamma()
    return hurwitz_zeta(n + 1, x) * ((-1) ** (n + 1) * math.factorial(n))


# regularized incomplete gamma -----------------------------------------------------------------------------------------

_GAMMA_SERIES_TERMS = 160
_GAMMA_FRACTION_TERMS = 80
"""Fixed lengths (a trace has no data-dependent loop): the series converges like ``x / (a + k)`` below ``a + 1``,
the continued fraction in ``O(sqrt x)`` steps above; both are converged to an ulp for ``a, x`` up to about 100."""


def lower_regularized_gamma(a: Any, x: Any) -> Any:
    """``P(a, x)``: values from the series or the continued fraction; the gradient in ``x`` is the density
    ``x^(a-1) e^-x / Gamma(a)``, the one in ``a`` is ``-density * dx/da`` at fixed ``P`` (PyTorch has none)."""
    value = _gamma_edges(a.detach(), x.detach(), _lower_gamma_value(a.detach(), _gamma_inside(a.detach(), x.detach())),
                         upper=False)
    return value + _gamma_slopes(a, x)


def upper_regularized_gamma(a: Any, x: Any) -> Any:
    """``Q(a, x) = 1 - P(a, x)``, computed directly where ``P`` is near 1 (no cancellation)."""
    value = _gamma_edges(a.detach(), x.detach(), _upper_gamma_value(a.detach(), _gamma_inside(a.detach(), x.detach())),
                         upper=True)
    return value - _gamma_slopes(a, x)


def _gamma_slopes(a: Any, x: Any) -> Any:
    """Zero, whose gradients are ``P(a, x)``'s: the density in ``x``; in ``a``, ``-density * dx/da``, ``dx/da`` being
    the Gamma draws' implicit reparameterization gradient (only where ``a`` needs a gradient: it sums a series)."""
    density = _gamma_density(a.detach(), x.detach())
    slopes = _zero_with_slope(x, density)
    if a.requires_grad:
        from kiln.frontend.distributions_gamma_sampler import standard_gamma_gradient  # lazily: it imports Tensor

        slope = -density * standard_gamma_gradient(a.detach(), x.detach()).to(density.dtype)
        slopes = slopes + _zero_with_slope(a, _where(slope.isfinite(), slope, 0.0))
    return slopes


def _zero_with_slope(x: Any, slope: Any) -> Any:
    """Zero, whose gradient in ``x`` is ``slope`` (constant): ``(x - stop(x)) slope``, kept finite at infinite ``x``."""
    return _where(x.isfinite(), x - x.detach(), 0.0) * slope.detach()


def _gamma_inside(a: Any, x: Any) -> Any:
    """``x`` where ``P(a, x)`` needs the series or the fraction, 1 elsewhere (the edges below set those values)."""
    return _where((a > 0) & (x > 0) & a.isfinite() & x.isfinite(), x, 1.0)


def _gamma_edges(a: Any, x: Any, value: Any, upper: bool) -> Any:
    """PyTorch's (Cephes') edge values: NaN for a negative or NaN argument, ``a = x = 0`` or both infinite; ``P = 0``
    at ``x = 0`` or ``a = inf``; ``P = 1`` at ``a = 0`` or ``x = inf``."""
    one, zero = (0.0, 1.0) if upper else (1.0, 0.0)
    value = _where((x == 0) | a.isinf(), zero, value)
    value = _where((a == 0) | x.isinf(), one, value)
    invalid = (a < 0) | (x < 0) | a.isnan() | x.isnan() | ((a == 0) & (x == 0)) | (a.isinf() & x.isinf())
    return _where(invalid, math.nan, value)


def _lower_gamma_value(a: Any, x: Any) -> Any:
    below = x < a + 1.0
    return _where(below, _gamma_series(a, _where(below, x, 0.0)), 1.0 - _gamma_fraction(a, _where(below, a + 1.0, x)))


def _upper_gamma_value(a: Any, x: Any) -> Any:
    below = x < a + 1.0
    return _where(below, 1.0 - _gamma_series(a, _where(below, x, 0.0)), _gamma_fraction(a, _where(below, a + 1.0, x)))


def _log_prefactor(a: Any, x: Any) -> Any:
    """``log(x^a e^-x / Gamma(a))``, with ``x = 0`` kept finite (the series is then 0 anyway)."""
    safe = _where(x > 0, x, 1.0)
    return a * safe.log() - safe - a.lgamma()


def _gamma_series(a: Any, x: Any) -> Any:
    """``P = x^a e^-x / Gamma(a + 1) sum_k x^k / ((a + 1) ... (a + k))``."""
    term = x * 0.0 + 1.0
    total = term
    for k in range(1, _GAMMA_SERIES_TERMS):
        term = term * x / (a + k)
        total = total + term
    return _where(x > 0, (_log_prefactor(a, x)).exp() / a * total, 0.0)


def _gamma_fraction(a: Any, x: Any) -> Any:
    """``Q = x^a e^-x / Gamma(a) / (x + 1 - a - 1 (1 - a) / (x + 3 - a - 2 (2 - a) / (x + 5 - a - ...)))``,
    evaluated from the last term back."""
    denominator = x + (2 * _GAMMA_FRACTION_TERMS + 1) - a
    for n in range(_GAMMA_FRACTION_TERMS, 0, -1):
        denominator = x + (2 * n - 1) - a - n * (n - a) / denominator
    return _log_prefactor(a, x).exp() / denominator


def _gamma_density(a: Any, x: Any) -> Any:
    """``x^(a-1) e^-x / Gamma(a)``: the slope of ``P(a, x)`` in ``x`` (0 at the edges, whose values are constants)."""
    inside = (a > 0) & (x > 0) & a.isfinite() & x.isfinite()
    a, x = _where(inside, a, 1.0), _where(inside, x, 1.0)
    return _where(inside, ((a - 1.0) * x.log() - x - a.lgamma()).exp(), 0.0)


# floating-point structure ---------------------------------------------------------------------------------------------

_MANTISSA_BITS = {DType.f16: 11, DType.bf16: 8, DType.f32: 24, DType.f64: 53}


def frexp(x: Any) -> tuple[Any, Any]:
    """``x = mantissa * 2^exponent`` with ``|mantissa|`` in [0.5, 1) (int32 exponent); zeros, infinities and NaN
    keep their value with exponent 0, as PyTorch's. The exponent from ``log2`` is corrected by one step either way."""
    finite = x.isfinite() & (x != 0)
    magnitude = _where(finite, x.abs(), 1.0)
    exponent = magnitude.log2().floor() + 1.0
    mantissa = magnitude / _power_of_two(exponent)
    exponent = exponent + (mantissa >= 1.0).to(x.dtype) - (mantissa < 0.5).to(x.dtype)
    mantissa = magnitude / _power_of_two(exponent)
    return _where(finite, x.sign() * mantissa, x), _where(finite, exponent, 0.0).to(DType.i32)


def _power_of_two(exponent: Any) -> Any:
    """``2^exponent`` for integer-valued floats, exact down to the subnormals (two halves, so neither underflows)."""
    half = (exponent * 0.5).floor()
    two = exponent * 0.0 + 2.0
    return two.pow(half) * two.pow(exponent - half)


def nextafter(x: Any, y: Any) -> Any:
    """The next float after ``x`` toward ``y``: ``x +- ulp(x)``, the ulp halved when stepping toward zero from a power of
    two, never below the smallest subnormal; ``y`` where they are equal, NaN where either is."""
    info = ml_dtypes.finfo(x.dtype.numpy)
    tiny = float(info.smallest_subnormal)
    mantissa, exponent = frexp(x)
    exponent = exponent.to(x.dtype)
    toward_zero = (y - x).sign() != x.sign()
    at_power = mantissa.abs() == 0.5
    step_exponent = exponent - _MANTISSA_BITS[x.dtype] - (toward_zero & at_power).to(x.dtype)
    ulp = _power_of_two(step_exponent).clamp(min=tiny)
    stepped = _where(x == 0, (y - x).sign() * tiny, x + (y - x).sign() * ulp)
    return _where(x == y, y, _where(x.isnan() | y.isnan(), math.nan, stepped))


# integers -------------------------------------------------------------------------------------------------------------

_EUCLID_STEPS = {DType.u8: 13, DType.i8: 11, DType.i16: 23, DType.i32: 46, DType.i64: 92}
"""Euclid's algorithm takes at most as many steps as the largest Fibonacci number below the dtype's range has index."""


def gcd(a: Any, b: Any) -> Any:
    """The greatest common divisor by Euclid's algorithm, every element stepped the dtype's worst-case count (an
    element done early stays put); ``gcd(0, 0) = 0`` and the result is non-negative, as PyTorch's."""
    a, b = a.abs(), b.abs()
    for _ in range(_EUCLID_STEPS[a.dtype]):
        nonzero = b != 0
        a, b = _where(nonzero, b, a), _where(nonzero, a.remainder(_where(nonzero, b, 1)), 0)
    return a
