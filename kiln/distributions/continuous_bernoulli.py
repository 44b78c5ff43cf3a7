"""``torch.distributions.continuous_bernoulli``: ``ContinuousBernoulli`` where code imports it from (``from torch.distributions.continuous_bernoulli import
ContinuousBernoulli``)."""

from kiln.frontend.distributions_continuous_bernoulli import ContinuousBernoulli

__all__ = ["ContinuousBernoulli"]
