"""``torch.distributions.negative_binomial``: ``NegativeBinomial`` where code imports it from (``from torch.distributions.negative_binomial import
NegativeBinomial``)."""

from kiln.frontend.distributions_geometric import NegativeBinomial

__all__ = ["NegativeBinomial"]
