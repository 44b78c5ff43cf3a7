"""``ExponentialFamily``: ``torch.distributions.exp_family``'s base class for densities
``p(x; theta) = exp(<t(x), theta> - F(theta) + k(x))``, whose entropy and same-family KL follow from the log
normalizer ``F`` by differentiation (Bregman divergences; Nielsen and Nock, "Entropies and cross-entropies of
exponential families"), with kiln's autograd (``kiln.autograd.grad``, traced or eager):

```
entropy       F(theta) - <theta, grad F(theta)> - E[k(x)]
KL(p || q)    F(theta_q) - F(theta_p) - <theta_q - theta_p, grad F(theta_p)>      (p, q of one family)
```

A subclass gives ``_natural_params`` (a tuple of tensors), ``_log_normalizer(*natural_params)`` and
``_mean_carrier_measure``. As torch's, the natural parameters are detached before ``F`` is differentiated, so the
entropy has no gradient to the distribution's parameters through the Bregman terms (torch's families that need one
override ``entropy`` with a closed form; kiln's do too). kiln's families with closed forms (Normal, Gamma, ...)
derive from ``Distribution`` directly, not from this class: they already have every method torch derives here,
and making them exponential families would route ``kl_divergence`` pairs torch leaves unregistered among them to the
Bregman rule; ``Wishart`` derives from it, as torch's. The class is for a user's own families.
"""

from __future__ import annotations

from typing import Any

from kiln.frontend.distributions import Distribution
from kiln.frontend.distributions_kl import register_kl
from kiln.frontend.tensor import Tensor


class ExponentialFamily(Distribution):
    """``torch.distributions.ExponentialFamily``: entropy (and the same-family KL) by differentiating the log
    normalizer (module docstring)."""

    @property
    def _natural_params(self) -> tuple[Tensor, ...]:
        raise NotImplementedError(f"{type(self).__name__} gives no _natural_params (an ExponentialFamily must)")

    def _log_normalizer(self, *natural_params: Tensor) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} gives no _log_normalizer (an ExponentialFamily must)")

    @property
    def _mean_carrier_measure(self) -> Any:
        raise NotImplementedError(f"{type(self).__name__} gives no _mean_carrier_measure (an ExponentialFamily must)")

    def entropy(self) -> Tensor:
        """``F(theta) - <theta, grad F(theta)> - E[k(x)]``, the inner product over each batch element's parameters."""
        theta = _detached_leaves(self._natural_params)
        normalizer, slopes = _log_normalizer_and_slopes(self, theta)
        result = normalizer - self._mean_carrier_measure
        for parameter, slope in zip(theta, slopes):
            result = result - (parameter * slope).reshape(tuple(self.batch_shape) + (-1,)).sum(-1)
        return result


def _detached_leaves(parameters: tuple[Tensor, ...]) -> list[Tensor]:
    return [parameter.detach().requires_grad_() for parameter in parameters]


def _log_normalizer_and_slopes(family: ExponentialFamily, theta: list[Tensor]) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``F(theta)`` and ``grad F(theta)`` (kept differentiable: ``create_graph``)."""
    from kiln.frontend.autograd import grad  # lazily: autograd builds on the distributions' Tensor

    normalizer = family._log_normalizer(*theta)
    return normalizer, grad(normalizer.sum(), theta, create_graph=True)


@register_kl(ExponentialFamily, ExponentialFamily)
def _kl_expfamily_expfamily(p: ExponentialFamily, q: ExponentialFamily) -> Tensor:
    """torch's Bregman rule: ``F(theta_q) - F(theta_p) - <theta_q - theta_p, grad F(theta_p)>``, one family only, the
    inner product over each batch element's parameters (torch's ``_sum_rightmost`` over the event dims also sums a
    parameter with fewer dims than the event, Wishart's ``(nu - p - 1) / 2``, across the batch: a batched Wishart KL
    is then wrong there; kiln's is each element's)."""
    if type(p) is not type(q):
        raise NotImplementedError("The cross KL-divergence between different exponential families cannot be computed "
                                  "using Bregman divergences")
    theta_p, theta_q = _detached_leaves(p._natural_params), q._natural_params
    normalizer, slopes = _log_normalizer_and_slopes(p, theta_p)
    result = q._log_normalizer(*theta_q) - normalizer
    batch_shape = tuple(p.batch_shape)
    for parameter_p, parameter_q, slope in zip(theta_p, theta_q, slopes):
        result = result - ((parameter_q - parameter_p) * slope).reshape(batch_shape + (-1,)).sum(-1)
    return result


__all__ = ["ExponentialFamily"]
