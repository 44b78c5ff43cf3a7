"""The numerical kernels of ``erfc``, ``erfinv``, ``lgamma`` and ``digamma`` (``frontend/tensor_extras.py``), over
existing elementwise ops; the module docstring there says how each keeps its digits. A float16/bfloat16 input runs
each series in float32 and rounds its result once (``computes_in_opmath``): in half steps lgamma was 23 ulps off."""

from __future__ import annotations

import math
from typing import Any, Callable

from kiln.frontend.functional_half import computes_in_opmath


def _where(condition: Any, x: Any, y: Any) -> Any:
    from kiln.frontend.tensor import apply

    return apply("tensor.where", condition, x, y)


_ERFC_FAR = 2.0
"""From here on ``erfc`` comes from the continued fraction: ``1 - erf`` loses ``log10(1 / erfc)`` digits."""

_ERFC_UNDERFLOW = 30.0
"""``erfc`` is 0 from about 27 on (float64; 10 in float32): the continued fraction sees at most this, so that its slope
at +inf is 0 (``-2 x exp(-x^2)`` there is inf * 0)."""

_ERFC_TERMS = 60
"""Enough for the continued fraction to converge to an ulp at 2 (and sooner further out)."""


@computes_in_opmath
def _erfc(x: Any) -> Any:
    """``1 - erf(x)``, from Laplace's continued fraction ``exp(-x^2) / sqrt(pi) / (x + 1/2 / (x + 1 / (x + ...)))``
    where ``x >= 2`` (evaluated from the last term back)."""
    far = x >= _ERFC_FAR
    tail = _where(far, _where(x < _ERFC_UNDERFLOW, x, _ERFC_UNDERFLOW), _ERFC_FAR)
    denominator = tail
    for n in range(_ERFC_TERMS, 0, -1):
        denominator = tail + (n / 2) / denominator
    fraction = (-tail * tail).exp() / (math.sqrt(math.pi) * denominator)
    return _where(far, fraction, 1.0 - x.erf())


_ERFINV_CENTRAL = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
                   -0.00417768164, 0.246640727, 1.50140941)
_ERFINV_TAIL = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
                0.00943887047, 1.00167406, 2.83297682)
"""Giles' single-precision ``erfinv`` (2010): ``erfinv(a) ~ a p(w - 2.5)`` for ``w = -log(1 - a^2) < 5``, else
``a p(sqrt(w) - 3)``; coefficients from the highest power down."""


def _polynomial(t: Any, coefficients: tuple[float, ...]) -> Any:
    """Horner's rule, the coefficients from the highest power down."""
    result = t * 0.0 + coefficients[0]
    for c in coefficients[1:]:
        result = result * t + c
    return result


@computes_in_opmath
def _erfinv_inside(a: Any) -> Any:
    """``erfinv`` of ``a`` in [0, 1): Giles' guess, three Newton steps untraced by autodiff, then two differentiated.
    A Newton step from an estimate whose derivatives are right to order k is right to order 2k + 1, so the last two
    steps give exact first to third derivatives (one differentiated step had the first only: its second derivative
    took the slope ``1 / erf'(x)`` for a constant)."""
    w = -((1.0 - a) * (1.0 + a)).log()
    central = w < 5.0
    near = _polynomial(_where(central, w, 5.0) - 2.5, _ERFINV_CENTRAL)
    far = _polynomial(_where(central, 5.0, w).sqrt() - 3.0, _ERFINV_TAIL)
    x = _where(central, near, far) * a
    for _ in range(3):
        x = _newton_erfinv(x, a).detach()
    return _newton_erfinv(_newton_erfinv(x, a), a)


def _newton_erfinv(x: Any, a: Any) -> Any:
    """One Newton step toward ``erf(x) = a``; above 1/2 on ``log erfc(x) = log(1 - a)`` (``1 - a`` is exact in
    floats, where ``erf`` would have lost the small difference; the log is near linear in the far tail)."""
    slope = (2 / math.sqrt(math.pi)) * (-x * x).exp()
    tail = a >= 0.5
    complement = _erfc(x)
    log_step = (complement.log() - _where(tail, 1.0 - a, 1.0).log()) * complement  # on log erfc: no overshoot
    return x + _where(tail, log_step, a - x.erf()) / slope


_GAMMA_SHIFT = 10
"""``lgamma``/``digamma`` of ``x`` come from ``x + 10``, where the asymptotic series below is exact to an ulp."""

_LGAMMA_SERIES = (-3617 / 122400, 1 / 156, -691 / 360360, 1 / 1188, -1 / 1680, 1 / 1260, -1 / 360, 1 / 12)
"""``B_2k / (2k (2k - 1))`` for k = 8 down to 1: ``lgamma(z) ~ (z - 1/2) log z - z + log(2 pi) / 2 + sum c_k z^(1-2k)``."""

_DIGAMMA_SERIES = (-3617 / 8160, 1 / 12, -691 / 32760, 1 / 132, -1 / 240, 1 / 252, -1 / 120, 1 / 12)
"""``B_2k / 2k`` for k = 8 down to 1: ``digamma(z) ~ log z - 1 / 2z - sum c_k z^(-2k)``."""


@computes_in_opmath
def _lgamma_positive(z: Any) -> Any:
    """``lgamma(z)`` for ``z >= 1/2``: Stirling's series at ``z + 10``, less ``log(z (z + 1) ... (z + 9))``."""
    shifted = z + _GAMMA_SHIFT
    inverse = 1.0 / shifted
    series = _polynomial(inverse * inverse, _LGAMMA_SERIES) * inverse
    stirling = (shifted - 0.5) * shifted.log() - shifted + 0.5 * math.log(2 * math.pi) + series
    return stirling - _sum_over_shift(lambda k: (z + k).log())


@computes_in_opmath
def _digamma_positive(z: Any) -> Any:
    """``digamma(z)`` for ``z >= 1/2``: the asymptotic series at ``z + 10``, less ``1/z + ... + 1/(z + 9)``."""
    shifted = z + _GAMMA_SHIFT
    inverse_square = 1.0 / (shifted * shifted)
    series = _polynomial(inverse_square, _DIGAMMA_SERIES) * inverse_square
    return shifted.log() - 0.5 / shifted - series - _sum_over_shift(lambda k: 1.0 / (z + k))


def _sum_over_shift(term: Callable[[int], Any]) -> Any:
    total = term(0)
    for k in range(1, _GAMMA_SHIFT):
        total = total + term(k)
    return total


def _sin_pi(x: Any) -> Any:
    """``sin(pi x)`` from the exact ``r = x - round(x)``: ``sin(pi r)``, or ``cos(pi (|r| - 1/2))`` past ``|r| = 1/4`` (so
    that its slope near half-integers is not the cosine of a rounded ``pi / 2``), negated where ``round(x)`` is odd.
    ``sin`` of ``pi x`` rounded has no correct digit left at 1e5 in float32."""
    turns = x.round()
    odd = (turns - 2.0 * (turns * 0.5).round()).abs()  # 1 where round(x) is odd, else 0
    r = x - turns
    outer = r.abs() > 0.25
    folded = _where(outer, r.abs() - 0.5, r) * math.pi
    return _where(outer, folded.cos() * r.sign(), folded.sin()) * (1.0 - 2.0 * odd)


def _sin_pi_fraction(x: Any, reflect: Any) -> Any:
    """``sin(pi r)`` of ``r = x - round(x)`` (``|sin(pi x)|`` is ``|sin(pi r)|``, and ``r`` is exact), where ``reflect``."""
    return (_where(reflect, x - x.round(), 0.25) * math.pi).sin()
