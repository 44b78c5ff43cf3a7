"""``VonMises(loc, concentration)``: the circular normal, density ``exp(k cos(x - m)) / (2 pi I0(k))`` for angles
(any real ``x``, read modulo ``2 pi``), as ``torch.distributions.VonMises``.

```
log_prob(x)  k cos(x - m) - log(2 pi) - log I0(k)
mean, mode   m   (the circular mean)
variance     1 - I1(k) / I0(k)   (the circular variance)
log I_n(k)   torch's polynomial approximations (Abramowitz and Stegun 9.8.1-9.8.4): a polynomial in (k / 3.75)^2
             below k = 3.75, k - log(k) / 2 + log(polynomial in 3.75 / k) above; about 1e-7 relative to the exact
             Bessel function, kept so values and gradients are torch's to rounding
sample       NumPy's von Mises sampler (Best and Fisher's rejection algorithm, torch's too), outside a trace only
```
"""

from __future__ import annotations

import math
from functools import reduce
from typing import Any, Sequence

import numpy as np

from kiln.frontend.distributions import Distribution, numpy_sample, positive, real
from kiln.frontend.distributions_kl import where
from kiln.frontend.tensor import Tensor

_I0_COEF_SMALL = (1.0, 3.5156229, 3.0899424, 1.2067492, 0.2659732, 0.360768e-1, 0.45813e-2)
_I0_COEF_LARGE = (0.39894228, 0.1328592e-1, 0.225319e-2, -0.157565e-2, 0.916281e-2, -0.2057706e-1, 0.2635537e-1,
                  -0.1647633e-1, 0.392377e-2)
_I1_COEF_SMALL = (0.5, 0.87890594, 0.51498869, 0.15084934, 0.2658733e-1, 0.301532e-2, 0.32411e-3)
_I1_COEF_LARGE = (0.39894228, -0.3988024e-1, -0.362018e-2, 0.163801e-2, -0.1031555e-1, 0.2282967e-1, -0.2895312e-1,
                  0.1787654e-1, -0.420059e-2)
_COEF_SMALL, _COEF_LARGE = (_I0_COEF_SMALL, _I1_COEF_SMALL), (_I0_COEF_LARGE, _I1_COEF_LARGE)


def _eval_poly(y: Tensor, coefficients: Sequence[float]) -> Tensor:
    """``sum c_i y^i`` by Horner's rule, in torch's order (``c_i + y * rest``)."""
    return reduce(lambda rest, c: c + y * rest, reversed(coefficients[:-1]), coefficients[-1])  # type: ignore[arg-type]


def log_modified_bessel(x: Tensor, order: int = 0) -> Tensor:
    """``log I_order(x)`` for ``x > 0`` and ``order`` 0 or 1, by torch's approximation (module docstring)."""
    if order not in (0, 1):
        raise ValueError(f"log_modified_bessel: order must be 0 or 1, got {order}")
    y = x / 3.75
    small = _eval_poly(y * y, _COEF_SMALL[order])
    small = (x.abs() * small if order == 1 else small).log()
    large = x - 0.5 * x.log() + _eval_poly(3.75 / x, _COEF_LARGE[order]).log()
    return where(x < 3.75, small, large)


class VonMises(Distribution):
    """``VonMises(loc, concentration)``: angles around ``loc`` (radians), more concentrated as ``concentration`` grows."""

    arg_constraints = {"loc": real, "concentration": positive}
    support = real

    def __init__(self, loc: Any, concentration: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, loc=loc, concentration=concentration)

    loc = property(lambda self: self._parameter("loc"))
    concentration = property(lambda self: self._parameter("concentration"))
    mean = property(lambda self: self.loc)
    mode = property(lambda self: self.loc)

    @property
    def variance(self) -> Tensor:
        concentration = self.concentration
        return 1 - (log_modified_bessel(concentration, 1) - log_modified_bessel(concentration, 0)).exp()

    def log_prob(self, value: Any) -> Tensor:
        value, concentration = self._value(value), self.concentration
        return (concentration * (value - self.loc).cos() - math.log(2 * math.pi)
                - log_modified_bessel(concentration, 0))

    def sample(self, sample_shape: Any = ()) -> Tensor:
        """Angles in ``[-pi, pi]`` by NumPy (float64, as torch samples), eager only: torch's sampler is a rejection
        loop, which a traced step cannot run."""
        def draw(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
            loc, concentration = (np.broadcast_to(p.numpy().astype(np.float64), shape) for p in (self.loc, self.concentration))
            return rng.vonmises(loc, concentration)

        return numpy_sample(self, sample_shape, draw)


__all__ = ["VonMises"]
