"""``torch.distributions.pareto``: ``Pareto`` where code imports it from (``from torch.distributions.pareto import
Pareto``)."""

from kiln.frontend.distributions_extreme import Pareto

__all__ = ["Pareto"]
