"""The functions of ``torch.special`` that kiln's tensors lack, over existing elementwise ops (``kiln/special.py``
gathers them with the existing ones: ``erf``, ``gammaln``, ``i0``, ``polygamma``...). Each says how it keeps its digits
in the tails, where a naive composition overflows or cancels.

```python
import kiln.special as special
special.erfcx(x)          # exp(x^2) erfc(x): Laplace's continued fraction from 2 on, never exp(x^2) there
special.log_ndtr(x)       # log Phi(x): log(erfcx(t) / 2) - t^2 below -1, so x = -1e5 gives -5e9, not -inf
special.ndtri(p)          # Phi^-1(p): Newton on log Phi from Abramowitz-Stegun's guess, exact down to p = 1e-300
special.i1e(x)            # exp(-|x|) I1(x): power series below 20, Hankel's series above (no exp to overflow)
special.zeta(s, q)        # Hurwitz zeta for tensor s > 1: twenty terms, then Euler-Maclaurin
```

Every function is differentiable through kiln's autodiff where PyTorch's is (``ndtri``'s last Newton step alone is
differentiated: its slope is ``1 / phi(x)``); they run eagerly and inside a trace alike.
"""

from __future__ import annotations

import math
from typing import Any

from kiln.frontend.tensor_extras import _float_pair
from kiln.frontend.tensor_methods import _floating
from kiln.frontend.tensor_more_special import _I0_ASYMPTOTIC, _I0_SERIES, _I0_SPLIT, _BERNOULLI, _ZETA_SHIFT
from kiln.frontend.tensor_special import _ERFC_FAR, _ERFC_TERMS, _polynomial, _where
from kiln.frontend.trace import located_error

# Comparisons below are ``eq``/``ne``, not ``==``: an eager Parameter (``kiln.tensor(a, requires_grad=True)``) compares
# by identity so that it can key dicts and sets.

_SQRT_2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


# erfcx, ndtr, log_ndtr ------------------------------------------------------------------------------------------------

def erfcx(input: Any) -> Any:
    """``exp(x^2) erfc(x)``: below 2 the product itself (``exp(x^2)`` overflows only where the result does, for
    ``x < -26``); from 2 on ``1 / (sqrt(pi) (x + 1/2 / (x + 1 / (x + ...))))``, the continued fraction of ``erfc``
    without its ``exp(-x^2)``, so ``erfcx(1e10)`` is ``1 / (sqrt(pi) 1e10)``."""
    x = _floating(input)
    far = x >= _ERFC_FAR
    tail = _where(far, x, _ERFC_FAR)
    denominator = tail
    for n in range(_ERFC_TERMS, 0, -1):
        denominator = tail + (n / 2) / denominator
    near = _where(far, 0.0, x)
    return _where(far, 1.0 / (math.sqrt(math.pi) * denominator), (near * near).exp() * near.erfc())


def ndtr(input: Any) -> Any:
    """The standard normal CDF ``Phi(x) = erfc(-x / sqrt 2) / 2`` (``erfc`` keeps the lower tail's digits)."""
    x = _floating(input)
    return (x * (-1 / _SQRT_2)).erfc() * 0.5


_LOG_NDTR_SPLIT = -1.0
"""Below, ``log Phi(x) = log(erfcx(t) / 2) - t^2`` with ``t = -x / sqrt 2``; above, ``log1p(-erfc(x / sqrt 2) / 2)``
(``1 - Phi`` is small there, so ``log1p`` keeps the digits of a result near 0)."""


def log_ndtr(input: Any) -> Any:
    """``log Phi(x)``, accurate in both tails: ``log_ndtr(-40)`` is -804.6, ``log_ndtr(10)`` is -7.6e-24."""
    x = _floating(input)
    lower = x < _LOG_NDTR_SPLIT
    t = _where(lower, x, _LOG_NDTR_SPLIT) * (-1 / _SQRT_2)
    far = (erfcx(t) * 0.5).log() - t * t
    upper = _where(lower, 0.0, x) * (1 / _SQRT_2)
    near = (upper.erfc() * -0.5).log1p()
    return _where(lower, far, near)


# ndtri ----------------------------------------------------------------------------------------------------------------

_NDTRI_GUESS_NUMERATOR = (0.010328, 0.802853, 2.515517)
_NDTRI_GUESS_DENOMINATOR = (0.001308, 0.189269, 1.432788, 1.0)
"""Abramowitz and Stegun 26.2.23: for ``0 < p <= 1/2``, ``Phi^-1(p) ~ -(t - n(t) / d(t))`` with ``t = sqrt(-2 log p)``,
to 4.5e-4; Newton's steps on ``log Phi`` double its digits."""

_NDTRI_STEPS = 4
"""Untraced Newton steps from the guess (4.5e-4, 1e-7, 1e-14, an ulp), then one differentiated."""


def ndtri(input: Any) -> Any:
    """``Phi^-1(p)``: -inf at 0, inf at 1, NaN outside ``[0, 1]``. Below 1/2 from ``p`` itself, above from the exact
    ``1 - p`` by symmetry, so both tails keep their digits."""
    p = _floating(input)
    lower = p <= 0.5
    inside = (p > 0) & (p < 1)
    q = _where(inside, _where(lower, p, 1.0 - p), 0.25)
    root = _ndtri_lower(q)
    edge = _where(p.eq(0), p.new_tensor(-math.inf), _where(p.eq(1), p.new_tensor(math.inf), p.new_tensor(math.nan)))
    return _where(inside, _where(lower, root, -root), edge)


def _ndtri_lower(q: Any) -> Any:
    """``Phi^-1(q)`` for ``q`` in ``(0, 1/2]``."""
    t = (q.log() * -2.0).sqrt()
    x = -(t - _polynomial(t, _NDTRI_GUESS_NUMERATOR) / _polynomial(t, _NDTRI_GUESS_DENOMINATOR))
    log_q = q.log()
    for _ in range(_NDTRI_STEPS):
        x = _newton_log_ndtr(x, log_q).detach()
    return _newton_log_ndtr(x, log_q)


def _newton_log_ndtr(x: Any, log_q: Any) -> Any:
    """One Newton step toward ``log Phi(x) = log q``: ``log Phi`` is near linear in the lower tail, so no overshoot."""
    log_cdf = log_ndtr(x)
    slope = (-0.5 * x * x - _LOG_SQRT_2PI - log_cdf).exp()
    return x + (log_q - log_cdf) / slope


# i0e, i1, i1e ---------------------------------------------------------------------------------------------------------

_I1_SERIES = tuple(1.0 / (math.factorial(k) * math.factorial(k + 1)) for k in range(40, -1, -1))
"""``I1(x) = x/2 sum_k (x^2 / 4)^k / (k! (k + 1)!)``, from the highest power down (40 terms reach an ulp at 20)."""

_I1_ASYMPTOTIC = tuple((-1) ** k * math.prod(4 - (2 * j - 1) ** 2 for j in range(1, k + 1)) / (math.factorial(k) * 8.0 ** k)
                       for k in range(24, -1, -1))
"""``I1(x) ~ e^x / sqrt(2 pi x) sum_k (-1)^k (4 - 1)(4 - 9)...(4 - (2k-1)^2) / (k! (8x)^k)``, highest power first."""


def i0e(input: Any) -> Any:
    """``exp(-|x|) I0(x)``: the power series times ``exp(-|x|)`` up to 20, above the asymptotic series alone."""
    return _bessel(_floating(input), _i0_series, _I0_ASYMPTOTIC, odd=False, scaled=True)


def i1(input: Any) -> Any:
    """The modified Bessel function of the first kind, order 1 (odd); finite up to 713 (PyTorch's and SciPy's
    ``exp(|x|) i1e(x)`` overflow from 709.8 on, where the value does not)."""
    return _bessel(_floating(input), _i1_series, _I1_ASYMPTOTIC, odd=True, scaled=False)


def i1e(input: Any) -> Any:
    """``exp(-|x|) I1(x)``."""
    return _bessel(_floating(input), _i1_series, _I1_ASYMPTOTIC, odd=True, scaled=True)


def _i0_series(x: Any) -> Any:
    return _polynomial(x * x * 0.25, _I0_SERIES)


def _i1_series(x: Any) -> Any:
    return x * 0.5 * _polynomial(x * x * 0.25, _I1_SERIES)


def _bessel(x: Any, series: Any, asymptotic: tuple[float, ...], odd: bool, scaled: bool) -> Any:
    """``I(x)`` (times ``exp(-|x|)`` if ``scaled``) from ``series`` below 20 and the ``asymptotic`` coefficients above;
    each branch sees only inputs in its range, so neither's overflow reaches the gradient. Unscaled, the asymptotic
    branch is ``exp(|x| - log(2 pi |x|) / 2)``, finite as long as the result is."""
    near = x.abs() <= _I0_SPLIT
    small = _where(near, x, 0.0)
    inside = series(small) * (-small.abs()).exp() if scaled else series(small)
    large = _where(near, _I0_SPLIT, x.abs())
    envelope = (2 * math.pi * large).rsqrt() if scaled else (large - 0.5 * (2 * math.pi * large).log()).exp()
    outside = _polynomial(1.0 / large, asymptotic) * envelope
    if odd:
        outside = _where(x < 0, -outside, outside)
    return _where(near, inside, outside)


# entr, xlog1py, spherical_bessel_j0 -----------------------------------------------------------------------------------

def entr(input: Any) -> Any:
    """``-x log x`` for ``x > 0``, 0 at 0, -inf below, NaN at NaN."""
    x = _floating(input)
    positive = x > 0
    value = -x * _where(positive, x, 1.0).log()
    outside = _where(x.eq(0), 0.0, _where(x.isnan(), x, x.new_tensor(-math.inf)))
    return _where(positive, value, outside)


def xlog1py(input: Any, other: Any) -> Any:
    """``x * log1p(y)``, 0 where ``x`` is 0 (unless ``y`` is NaN), as ``xlogy``."""
    x, y = _float_pair(input, other) if hasattr(input, "dtype") else _float_pair(other, input)[::-1]
    zero = x.eq(0) & ~y.isnan()
    return _where(zero, 0.0, x * _where(zero, 0.0, y).log1p())


def spherical_bessel_j0(input: Any) -> Any:
    """``sin(x) / x``, 1 at 0 (slope 0 there), 0 at +-inf; relative accuracy holds near 0, where both shrink together."""
    x = _floating(input)
    zero = x.eq(0)
    safe = _where(zero | x.isinf(), 1.0, x)
    return _where(zero, 1.0, _where(x.isinf(), 0.0, safe.sin() / safe))


# zeta -----------------------------------------------------------------------------------------------------------------

def zeta(input: Any, other: Any) -> Any:
    """Hurwitz's ``zeta(s, q) = sum_k (q + k)^-s`` for tensor ``s`` (``input``) and ``q`` (``other``): twenty terms,
    then Euler-Maclaurin at ``z = q + 20``. Cephes' domain, as PyTorch's: inf at ``s = 1`` and at ``q = 0, -1, ...``;
    NaN for ``s < 1`` and for ``q < 0`` with a fractional ``s``. Accurate for ``q > -10``."""
    s, q = _float_pair(input, other) if hasattr(input, "dtype") else _float_pair(other, input)[::-1]
    pole = s.eq(1) | ((q <= 0) & q.eq(q.floor()))
    undefined = (s < 1) | ((q < 0) & s.ne(s.floor()))
    s_safe = _where(pole | undefined, 2.0, s)
    q_safe = _where(pole | undefined, 1.0, q)
    value = _hurwitz_zeta(s_safe, q_safe)
    return _where(undefined, s.new_tensor(math.nan), _where(pole, s.new_tensor(math.inf), value))


def _hurwitz_zeta(s: Any, q: Any) -> Any:
    total = q.pow(-s)
    for k in range(1, _ZETA_SHIFT):
        total = total + (q + k).pow(-s)
    z = q + _ZETA_SHIFT
    z_power = z.pow(-s)
    tail = z_power * z / (s - 1) + z_power * 0.5
    rising = s
    for j, bernoulli in enumerate(_BERNOULLI, start=1):
        if j > 1:
            rising = rising * (s + (2 * j - 3)) * (s + (2 * j - 2))
        tail = tail + rising * z_power * z.pow(1 - 2 * j) * (bernoulli / math.factorial(2 * j))
    return total + tail


# orthogonal polynomials (integer degree) ------------------------------------------------------------------------------

def _recurrence(name: str, input: Any, n: Any, first: Any, step: Any) -> Any:
    """``P_n(x)`` by its three-term recurrence ``P_(k+1) = step(k, x, P_k, P_(k-1))`` from ``P_0 = 1``, ``P_1 = first(x)``."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise located_error(f"kiln.special.{name}: n must be a Python int (a tensor of degrees is not supported), "
                            f"got {type(n).__name__}; loop over the degrees you need")
    x = _floating(input)
    if n < 0:
        return x * 0.0
    previous, current = x * 0.0 + 1.0, first(x)
    if n == 0:
        return previous
    for k in range(1, n):
        previous, current = current, step(k, x, current, previous)
    return current


def chebyshev_polynomial_t(input: Any, n: Any) -> Any:
    return _recurrence("chebyshev_polynomial_t", input, n, lambda x: x, lambda k, x, p, q: 2 * x * p - q)


def chebyshev_polynomial_u(input: Any, n: Any) -> Any:
    return _recurrence("chebyshev_polynomial_u", input, n, lambda x: 2 * x, lambda k, x, p, q: 2 * x * p - q)


def hermite_polynomial_h(input: Any, n: Any) -> Any:
    """The physicists' Hermite polynomial ``H_(k+1) = 2x H_k - 2k H_(k-1)``."""
    return _recurrence("hermite_polynomial_h", input, n, lambda x: 2 * x, lambda k, x, p, q: 2 * x * p - 2 * k * q)


def hermite_polynomial_he(input: Any, n: Any) -> Any:
    """The probabilists' Hermite polynomial ``He_(k+1) = x He_k - k He_(k-1)``."""
    return _recurrence("hermite_polynomial_he", input, n, lambda x: x, lambda k, x, p, q: x * p - k * q)


def laguerre_polynomial_l(input: Any, n: Any) -> Any:
    """``(k + 1) L_(k+1) = (2k + 1 - x) L_k - k L_(k-1)``."""
    return _recurrence("laguerre_polynomial_l", input, n, lambda x: 1.0 - x,
                       lambda k, x, p, q: ((2 * k + 1 - x) * p - k * q) / (k + 1))


def legendre_polynomial_p(input: Any, n: Any) -> Any:
    """``(k + 1) P_(k+1) = (2k + 1) x P_k - k P_(k-1)``."""
    return _recurrence("legendre_polynomial_p", input, n, lambda x: x, lambda k, x, p, q: ((2 * k + 1) * x * p - k * q) / (k + 1))


# not in kiln ----------------------------------------------------------------------------------------------------------

def _missing(name: str, scipy_name: str) -> Any:
    def function(*args: Any, **kwargs: Any) -> Any:
        raise located_error(f"kiln.special.{name} is not implemented: an accurate {name} needs minimax rational fits over "
                            f"several ranges that kiln does not carry. Compute it on the data with scipy.special."
                            f"{scipy_name}(x.numpy()) and pass the result in as a tensor (it will be constant to the gradient)")

    function.__name__ = name
    return function


MISSING = {name: _missing(name, scipy_name) for name, scipy_name in (
    ("airy_ai", "airy(x)[0]"), ("bessel_j0", "j0"), ("bessel_j1", "j1"), ("bessel_y0", "y0"), ("bessel_y1", "y1"),
    ("modified_bessel_k0", "k0"), ("modified_bessel_k1", "k1"), ("scaled_modified_bessel_k0", "k0e"),
    ("scaled_modified_bessel_k1", "k1e"))}
"""``torch.special``'s Bessel functions of the second kind and of integer order without a kernel here."""

__all__ = ["chebyshev_polynomial_t", "chebyshev_polynomial_u", "entr", "erfcx", "hermite_polynomial_h", "hermite_polynomial_he",
           "i0e", "i1", "i1e", "laguerre_polynomial_l", "legendre_polynomial_p", "log_ndtr", "ndtr", "ndtri",
           "spherical_bessel_j0", "xlog1py", "zeta"]
