"""``Dirichlet(concentration)``, as ``torch.distributions.Dirichlet``: a distribution over the probability simplex of
``concentration``'s last dim (the event), e.g. set_transformer's mixture weights
``Dirichlet(torch.ones(K)).sample(torch.Size([B]))``.

```
log_prob(x)   sum (a - 1) log x + lgamma(sum a) - sum lgamma(a)
mean          a / a0,  a0 = sum a          mode  (a - 1)+ normalised (torch's one-hot where every a < 1)
variance      a (a0 - a) / (a0^2 (a0 + 1))
entropy       sum lgamma(a) - lgamma(a0) - (k - a0) digamma(a0) - sum (a - 1) digamma(a)
rsample       independent Gamma(a, 1) draws over their sum (frontend/distributions_gamma_sampler.py)
KL(p || q)    lgamma(p0) - lgamma(q0) - sum (lgamma(p) - lgamma(q)) + sum (p - q)(digamma(p) - digamma(p0))
```

``rsample`` draws from the step's seed (in a traced step or eagerly) with the Gamma draws' implicit reparameterization
gradient; its numbers are kiln's, the distribution torch's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.frontend.distributions import Constraint, Distribution, shape_of
from kiln.frontend.distributions_gamma_sampler import reparameterized_standard_gamma
from kiln.frontend.distributions_kl import register_kl
from kiln.frontend.tensor import Tensor

positive_vector = Constraint("a vector of positive numbers (> 0)", lambda x: np.all(x > 0, axis=-1), event_dim=1)
simplex = Constraint("on the simplex (non-negative, summing to 1)",
                     lambda x: np.all(x >= 0, axis=-1) & (np.abs(x.sum(-1) - 1) < 1e-6), event_dim=1,
                     kind="simplex")


class Dirichlet(Distribution):
    """The Dirichlet over the simplex of ``concentration``'s last dim (module docstring)."""

    arg_constraints = {"concentration": positive_vector}
    support = simplex
    has_rsample = True
    event_dims = {"concentration": 1}

    def __init__(self, concentration: Any, validate_args: bool | None = None):
        self._set_parameters(validate_args, concentration=concentration)
        self._event_shape = shape_of(self._raw["concentration"])[-1:]

    concentration = property(lambda self: self._parameter("concentration"))

    @property
    def mean(self) -> Tensor:
        return self.concentration / self.concentration.sum(-1, keepdim=True)

    @property
    def mode(self) -> Tensor:
        """torch's: ``(a - 1)`` clamped at 0 and normalised; where every ``a < 1`` that is 0 / 0, and torch puts the
        one-hot of its ``argmax`` there (NaN counts as the largest, so the first vertex)."""
        from kiln.frontend.tensor import apply

        concentration = self.concentration
        mode = (concentration - 1).clamp(min=0.0)
        mode = mode / mode.sum(-1, keepdim=True)
        below_one = (concentration < 1).all(-1, keepdim=True)
        vertices = apply("tensor.constant", value=np.arange(concentration.shape[-1]))
        one_hot = (mode.argmax(-1, keepdim=True) == vertices).to(concentration.dtype)
        return mode.where(~below_one, one_hot)

    @property
    def variance(self) -> Tensor:
        concentration = self.concentration
        total = concentration.sum(-1, keepdim=True)
        return concentration * (total - concentration) / (total.pow(2) * (total + 1))

    def log_prob(self, value: Any) -> Tensor:
        value, concentration = self._value(value), self.concentration
        return (value.log() * (concentration - 1.0)).sum(-1) + concentration.sum(-1).lgamma() - concentration.lgamma().sum(-1)

    def entropy(self) -> Tensor:
        concentration = self.concentration
        k = concentration.shape[-1]
        total = concentration.sum(-1)
        return (concentration.lgamma().sum(-1) - total.lgamma() - (k - total) * total.digamma()
                - ((concentration - 1.0) * concentration.digamma()).sum(-1))

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        """Draws on the open simplex (torch's ``clamp_probs``), shaped ``sample_shape + batch_shape + event_shape``."""
        gammas = reparameterized_standard_gamma(self, self.concentration, self._extended_shape(sample_shape))
        finfo = np.finfo(self._dtype.numpy)
        return (gammas / gammas.sum(-1, keepdim=True)).clamp(float(finfo.tiny), float(1 - finfo.eps))


@register_kl(Dirichlet, Dirichlet)
def _kl_dirichlet_dirichlet(p: Dirichlet, q: Dirichlet) -> Tensor:
    """torch's: ``lgamma(p0) - lgamma(q0) - sum (lgamma(p) - lgamma(q)) + sum (p - q)(digamma(p) - digamma(p0))``."""
    p_total, q_total = p.concentration.sum(-1), q.concentration.sum(-1)
    t1 = p_total.lgamma() - q_total.lgamma()
    t2 = (p.concentration.lgamma() - q.concentration.lgamma()).sum(-1)
    t3 = p.concentration - q.concentration
    t4 = p.concentration.digamma() - p_total.digamma().unsqueeze(-1)
    return t1 - t2 + (t3 * t4).sum(-1)


__all__ = ["Dirichlet"]
