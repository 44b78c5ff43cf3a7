"""The relaxed (Concrete, Gumbel-softmax) families of ``kiln.distributions``: ``RelaxedBernoulli`` and
``RelaxedOneHotCategorical``, each ``temperature`` and ``probs | logits``, with reparameterized draws whose gradients
flow to the logits (and the temperature), as ``torch.distributions``' (Maddison et al. 2017, Jang et al. 2017).

```
LogitRelaxedBernoulli   rsample = (logit(u) + logit(p)) / t,  u ~ U[0, 1) clamped to [eps, 1 - eps]
                        log_prob(x) = log t + d - 2 log1p(exp(d)),  d = l - t x
RelaxedBernoulli        sigmoid of a LogitRelaxedBernoulli draw (a TransformedDistribution)
ExpRelaxedCategorical   rsample = s - logsumexp(s),  s = (l + g) / t,  g = -log(-log u): Gumbel noise
                        log_prob(x) = sum(c - logsumexp(c)) + lgamma(K) + (K - 1) log t,  c = l - t x
RelaxedOneHotCategorical  exp of an ExpRelaxedCategorical draw: a point of the simplex (a TransformedDistribution)
```

``probs`` and ``logits`` are the Bernoulli's / Categorical's (derived as torch derives them); ``temperature`` is used as
given (a number or a tensor broadcasting with the draws), never checked, as torch's. Draws come from the step's seed,
in a traced step or eagerly.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Sequence

from kiln.compiler.ir.types import Dim
from kiln.frontend.distributions import Distribution, _raw, broadcast, constant, real, real_vector, unit_interval
from kiln.frontend.distributions_dirichlet import simplex
from kiln.frontend.distributions_discrete import Bernoulli, Categorical, _broadcast_pair, _one_of, clamp_probs
from kiln.frontend.distributions_transformed import TransformedDistribution
from kiln.frontend.distributions_transforms import ExpTransform, SigmoidTransform
from kiln.frontend.tensor import Tensor


def _temperature(distribution: Distribution, raw: Any) -> Tensor:
    """The temperature as a traced tensor of the distribution's dtype (as given: not broadcast to the batch)."""
    distribution._context("temperature")
    tensor = raw if isinstance(raw, Tensor) else constant(raw, distribution.dtype)
    return tensor if tensor.dtype is distribution.dtype else tensor.to(distribution.dtype)


class LogitRelaxedBernoulli(Distribution):
    """The logit of a ``RelaxedBernoulli``: real-valued draws ``(logit(u) + logits) / temperature``."""

    arg_constraints = {"probs": unit_interval, "logits": real}
    support = real

    def __init__(self, temperature: Any, probs: Any = None, logits: Any = None, validate_args: bool | None = None):
        self._set_parameters(validate_args, **_one_of("LogitRelaxedBernoulli", probs, logits))
        self._raw_temperature = _raw(temperature)

    temperature = property(lambda self: _temperature(self, self._raw_temperature))
    probs = Bernoulli.probs
    logits = Bernoulli.logits
    param_shape = property(lambda self: self.batch_shape)

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        shape = self._extended_shape(sample_shape)
        probs = clamp_probs(broadcast(self.probs, shape))
        uniforms = clamp_probs(self._uniform(shape))
        return (uniforms.log() - (-uniforms).log1p() + probs.log() - (-probs).log1p()) / self.temperature

    def log_prob(self, value: Any) -> Tensor:
        logits, value = _broadcast_pair(self.logits, self._value(value))
        difference = logits - value * self.temperature
        return self.temperature.log() + difference - 2 * difference.exp().log1p()


class _Relaxed(TransformedDistribution):
    """A relaxed family: its logit or log base pushed through one transform; the parameters are the base's."""

    has_rsample = True  # type: ignore[assignment]

    temperature = property(lambda self: self.base_dist.temperature)
    probs = property(lambda self: self.base_dist.probs)
    logits = property(lambda self: self.base_dist.logits)

    def __repr__(self) -> str:
        return type(self).__name__ + repr(self.base_dist)[len(type(self.base_dist).__name__):]


class RelaxedBernoulli(_Relaxed):
    """``RelaxedBernoulli(temperature, probs=p)`` or ``(temperature, logits=l)``: values in ``(0, 1)`` that approach
    ``Bernoulli(p)``'s as the temperature goes to 0."""

    arg_constraints = LogitRelaxedBernoulli.arg_constraints
    support = unit_interval  # type: ignore[assignment]

    def __init__(self, temperature: Any, probs: Any = None, logits: Any = None, validate_args: bool | None = None):
        base = LogitRelaxedBernoulli(temperature, probs, logits, validate_args)
        super().__init__(base, SigmoidTransform(), validate_args)


class ExpRelaxedCategorical(Distribution):
    """The log of a ``RelaxedOneHotCategorical``: draws ``log_softmax((logits + Gumbel noise) / temperature)``."""

    arg_constraints = Categorical.arg_constraints
    support = real_vector
    has_rsample = True

    def __init__(self, temperature: Any, probs: Any = None, logits: Any = None, validate_args: bool | None = None):
        self._categorical = Categorical(probs, logits, validate_args)
        self._raw_temperature = _raw(temperature)
        super().__init__(self._categorical.batch_shape, self._categorical.param_shape[-1:], validate_args)
        self._dtype = self._categorical.dtype

    temperature = property(lambda self: _temperature(self, self._raw_temperature))
    probs = property(lambda self: self._categorical.probs)
    logits = property(lambda self: self._categorical.logits)
    param_shape = property(lambda self: self._categorical.param_shape)

    def expand(self, batch_shape: Sequence[Dim], _instance: Any = None) -> "ExpRelaxedCategorical":
        new = copy.copy(self)
        new._categorical = self._categorical.expand(batch_shape)
        new._batch_shape = new._categorical.batch_shape
        return new

    def rsample(self, sample_shape: Any = ()) -> Tensor:
        uniforms = clamp_probs(self._uniform(self._extended_shape(sample_shape)))
        gumbels = -(-uniforms.log()).log()
        scores = (self.logits + gumbels) / self.temperature
        return scores - scores.logsumexp(-1, keepdim=True)

    def log_prob(self, value: Any) -> Tensor:
        classes = self.event_shape[0]
        logits, value = _broadcast_pair(self.logits, self._value(value))
        log_scale = math.lgamma(classes) + self.temperature.log() * (classes - 1)
        score = logits - value * self.temperature
        return (score - score.logsumexp(-1, keepdim=True)).sum(-1) + log_scale

    def __repr__(self) -> str:
        return type(self).__name__ + repr(self._categorical)[len("Categorical"):]


class RelaxedOneHotCategorical(_Relaxed):
    """``RelaxedOneHotCategorical(temperature, probs=p)`` or ``(temperature, logits=l)``: points of the simplex of the
    last dim's ``K`` classes that approach ``OneHotCategorical``'s as the temperature goes to 0 (Gumbel-softmax)."""

    arg_constraints = Categorical.arg_constraints
    support = simplex  # type: ignore[assignment]

    def __init__(self, temperature: Any, probs: Any = None, logits: Any = None, validate_args: bool | None = None):
        base = ExpRelaxedCategorical(temperature, probs, logits, validate_args)
        super().__init__(base, ExpTransform(), validate_args)


__all__ = ["ExpRelaxedCategorical", "LogitRelaxedBernoulli", "RelaxedBernoulli", "RelaxedOneHotCategorical"]
