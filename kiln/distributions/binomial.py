"""``torch.distributions.binomial``: ``Binomial`` where code imports it from (``from torch.distributions.binomial import
Binomial``)."""

from kiln.frontend.distributions_counts import Binomial

__all__ = ["Binomial"]
