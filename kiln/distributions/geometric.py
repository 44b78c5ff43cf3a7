"""``torch.distributions.geometric``: ``Geometric`` where code imports it from (``from torch.distributions.geometric import
Geometric``)."""

from kiln.frontend.distributions_geometric import Geometric

__all__ = ["Geometric"]
