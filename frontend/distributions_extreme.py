"""The extreme-value and power-law families: ``Gumbel(loc, scale)``, ``Weibull(scale, concentration)``,
``Pareto(scale, alpha)``, ``GeneralizedPareto(loc, scale, concentration)``, with ``torch.distributions``' formulas
(values and gradients agree to rounding). Their KL rules are in ``distributions_extreme_kl.py``.

```
            as torch builds it (u ~ U[0, 1))                         log_prob(x)                  entropy
Gumbel      m - s log(-log u), u in [tiny, 1 - eps]                  y - e^y - log s,             log s + 1 + gamma
                                                                       y = (m - x) / s
Weibull     s E^(1/k), E ~ Exponential(1)                            (through the transforms)     gamma (1 - 1/k) + log(s/k) + 1
Pareto      s e^E, E ~ Exponential(alpha)                            (through the transforms)     log(s / alpha) + 1 + 1/alpha
GenPareto   icdf(u) = m + s expm1(-c log1p(-u)) / c (m - s log1p(-u)  -log s - (1/c + 1) log1p(c z)  log s + c + 1
              at c = 0),  z = (x - m) / s                              (-z at c = 0)
```
(``gamma`` is Euler's constant.) ``Gumbel``, ``Weibull`` and ``Pareto`` are ``TransformedDistribution``s as torch's
(``distributions_transformed_family.py``): their draws, ``cdf`` and ``icdf`` go through the transforms. ``Pareto``'s
support is ``x >= scale`` and ``GeneralizedPareto``'s ``[loc, loc - scale / c]`` (``c < 0``) or ``[loc, inf)``,
checked on concrete values as torch's dependent ``support``; a concentration within ``1e-8`` of 0 takes the ``c = 0``
branch (torch's ``isclose(c, 0)``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.frontend.distributions import Constraint, Distribution, concrete_values, positive, real
from kiln.frontend.distributions_continuous import Exponential, Uniform
from kiln.frontend.distributions_kl import where
from kiln.frontend.distributions_transformed_family import TransformedFamily
from kiln.frontend.distributions_transforms import AffineTransform, ExpTransform, PowerTransform, Transform
from kiln.frontend.tensor import Tensor
from kiln.frontend.torch_dtypes import finfo

EULER_GAMMA = 0.57721566490153286060
NEAR_ZERO = 1e-8  # torch's isclose(c, 0): |c| <= atol (1e-8) + rtol * 0


def _bounded(distribution: Distribution, describe: str, inside: Any) -> Constraint | None:
    """A support depending on parameters: ``inside(params, x)`` on the concrete parameters, else ``None`` (a traced
    parameter's values are unknown, so nothing is checked)."""
    params = {name: concrete_values(raw) for name, raw in distribution._raw.items()}
    if any(value is None for value in params.values()):
        return None
    return Constraint(describe, lambda x: inside(params, x))


class Gumbel(TransformedFamily):
    """``Gumbel(loc, scale)``: the law of the maximum, density ``exp(y - e^y) / s`` with ``y = (loc - x) / scale``."""

    arg_constraints = {"loc": real, "scale": positive}
    support = real

    def __init__(self, loc: Any, scale: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, loc=loc, scale=scale)

    loc = property(lambda self: self._parameter("loc"))
    scale = property(lambda self: self._parameter("scale"))
    mean = property(lambda self: self.loc + self.scale * EULER_GAMMA)
    mode = property(lambda self: self.loc)
    stddev = property(lambda self: (math.pi / math.sqrt(6)) * self.scale)
    variance = property(lambda self: self.stddev.pow(2))

    def _base(self) -> Distribution:
        info = finfo.of(self.dtype)
        return Uniform(self._filled(info.tiny), self._filled(1 - info.eps), validate_args=False)

    def _transforms(self) -> list[Transform]:
        return [ExpTransform().inv, AffineTransform(0, -self._filled(1.0)), ExpTransform().inv,
                AffineTransform(self.loc, -self.scale)]

    def log_prob(self, value: Any) -> Tensor:
        y = (self.loc - self._value(value)) / self.scale
        return (y - y.exp()) - self.scale.log()

    def entropy(self) -> Tensor:
        return self.scale.log() + (1 + EULER_GAMMA)


class Weibull(TransformedFamily):
    """``Weibull(scale, concentration)``: density ``(k / s) (x / s)^(k-1) exp(-(x / s)^k)`` on ``x > 0``."""

    arg_constraints = {"scale": positive, "concentration": positive}
    support = positive

    def __init__(self, scale: Any, concentration: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, scale=scale, concentration=concentration)

    scale = property(lambda self: self._parameter("scale"))
    concentration = property(lambda self: self._parameter("concentration"))
    concentration_reciprocal = property(lambda self: self.concentration.reciprocal())
    mean = property(lambda self: self.scale * (1 + self.concentration_reciprocal).lgamma().exp())

    @property
    def mode(self) -> Tensor:
        """``s ((k - 1) / k)^(1 / k)``: NaN for ``k < 1``, as torch's."""
        k = self.concentration
        return self.scale * ((k - 1) / k).pow(k.reciprocal())

    @property
    def variance(self) -> Tensor:
        inverse = self.concentration_reciprocal
        return self.scale.pow(2) * ((1 + 2 * inverse).lgamma().exp() - (2 * (1 + inverse).lgamma()).exp())

    def _base(self) -> Distribution:
        return Exponential(self._filled(1.0), validate_args=False)

    def _transforms(self) -> list[Transform]:
        return [PowerTransform(self.concentration_reciprocal), AffineTransform(0, self.scale)]

    def entropy(self) -> Tensor:
        inverse = self.concentration_reciprocal
        return EULER_GAMMA * (1 - inverse) + (self.scale * inverse).log() + 1


class Pareto(TransformedFamily):
    """``Pareto(scale, alpha)``: density ``alpha scale^alpha / x^(alpha + 1)`` on ``x >= scale``."""

    arg_constraints = {"alpha": positive, "scale": positive}

    def __init__(self, scale: Any, alpha: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, scale=scale, alpha=alpha)

    scale = property(lambda self: self._parameter("scale"))
    alpha = property(lambda self: self._parameter("alpha"))
    mode = property(lambda self: self.scale)

    @property
    def support(self) -> Constraint | None:  # type: ignore[override]
        """torch's ``greater_than_eq(scale)``."""
        return _bounded(self, "at least scale", lambda params, x: x >= params["scale"])

    @property
    def mean(self) -> Tensor:
        """``alpha s / (alpha - 1)``, infinite for ``alpha <= 1`` (torch clamps alpha at 1)."""
        alpha = self.alpha.clamp(min=1)
        return alpha * self.scale / (alpha - 1)

    @property
    def variance(self) -> Tensor:
        alpha = self.alpha.clamp(min=2)
        return self.scale.pow(2) * alpha / ((alpha - 1).pow(2) * (alpha - 2))

    def _base(self) -> Distribution:
        return Exponential(self.alpha, validate_args=False)

    def _transforms(self) -> list[Transform]:
        return [ExpTransform(), AffineTransform(0, self.scale)]

    def entropy(self) -> Tensor:
        return (self.scale / self.alpha).log() + (1 + self.alpha.reciprocal())


class GeneralizedPareto(Distribution):
    """``GeneralizedPareto(loc, scale, concentration)``: survival ``(1 + c z)^(-1/c)``, ``z = (x - loc) / scale``
    (``exp(-z)`` at ``c = 0``); Exponential at ``loc = c = 0``, Pareto for ``c > 0`` and ``loc = scale / c``, Uniform at
    ``c = -1`` (TensorFlow Probability's, as torch's)."""

    arg_constraints = {"loc": real, "scale": positive, "concentration": real}
    has_rsample = True

    def __init__(self, loc: Any, scale: Any, concentration: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, loc=loc, scale=scale, concentration=concentration)

    loc = property(lambda self: self._parameter("loc"))
    scale = property(lambda self: self._parameter("scale"))
    concentration = property(lambda self: self._parameter("concentration"))
    mode = property(lambda self: self.loc)

    @property
    def support(self) -> Constraint | None:  # type: ignore[override]
        """torch's ``interval(loc, loc - scale / c if c < 0 else inf)``."""
        def inside(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
            loc, scale, c = params["loc"], params["scale"], params["concentration"]
            with np.errstate(divide="ignore", invalid="ignore"):
                upper = np.where(c < 0, loc - scale / c, np.inf)
            return (loc <= x) & (x <= upper)

        return _bounded(self, "in [loc, loc - scale / concentration] (concentration < 0) or [loc, inf)", inside)

    def _safe_concentration(self) -> tuple[Tensor, Tensor]:
        """``(c == 0, c)`` with 1 where ``c`` is 0 (torch's ``safe_conc``): the other branch stays finite."""
        concentration = self.concentration
        eq_zero = concentration.abs() <= NEAR_ZERO
        return eq_zero, where(eq_zero, 1.0, concentration)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        return self.icdf(self._uniform(self._extended_shape(sample_shape)))

    def log_prob(self, value: Any) -> Tensor:
        z = (self._value(value) - self.loc) / self.scale
        eq_zero, safe = self._safe_concentration()
        y = 1 / safe + 1
        nonzero = where(y == 0, y, y * (safe * z).log1p())
        return -self.scale.log() - where(eq_zero, z, nonzero)

    def log_survival_function(self, value: Any) -> Tensor:
        z = (self._value(value, "log_survival_function") - self.loc) / self.scale
        eq_zero, safe = self._safe_concentration()
        return where(eq_zero, -z, -(safe * z).log1p() / safe)

    def log_cdf(self, value: Any) -> Tensor:
        return (-self.log_survival_function(value).exp()).log1p()

    def cdf(self, value: Any) -> Tensor:
        return self.log_cdf(value).exp()

    def icdf(self, value: Any) -> Tensor:
        eq_zero, safe = self._safe_concentration()
        log_u = (-self._probability(value)).log1p()
        nonzero = self.loc + self.scale / safe * (-safe * log_u).expm1()
        return where(eq_zero, self.loc - self.scale * log_u, nonzero)

    @property
    def mean(self) -> Tensor:
        """``loc + scale / (1 - c)`` for ``c < 1``, else NaN."""
        concentration = self.concentration
        valid = concentration < 1
        return where(valid, self.loc + self.scale / (1 - where(valid, concentration, 0.5)), math.nan)

    @property
    def variance(self) -> Tensor:
        """``scale^2 / ((1 - c)^2 (1 - 2c))`` for ``c < 1/2``, else NaN."""
        concentration = self.concentration
        valid = concentration < 0.5
        safe = where(valid, concentration, 0.25)
        return where(valid, self.scale.pow(2) / ((1 - safe).pow(2) * (1 - 2 * safe)), math.nan)

    def entropy(self) -> Tensor:
        return self.scale.log() + self.concentration + 1


__all__ = ["EULER_GAMMA", "GeneralizedPareto", "Gumbel", "Pareto", "Weibull"]
