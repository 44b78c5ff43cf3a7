"""``torch.distributions.poisson``: ``Poisson`` where code imports it from (``from torch.distributions.poisson import
Poisson``)."""

from kiln.frontend.distributions_counts import Poisson

__all__ = ["Poisson"]
