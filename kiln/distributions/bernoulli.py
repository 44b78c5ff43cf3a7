"""``torch.distributions.bernoulli``: ``Bernoulli`` where code imports it from (``from torch.distributions.bernoulli import
Bernoulli``)."""

from kiln.frontend.distributions_discrete import Bernoulli

__all__ = ["Bernoulli"]
