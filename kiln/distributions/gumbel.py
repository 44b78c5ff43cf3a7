"""``torch.distributions.gumbel``: ``Gumbel`` where code imports it from (``from torch.distributions.gumbel import
Gumbel``)."""

from kiln.frontend.distributions_extreme import Gumbel

__all__ = ["Gumbel"]
