"""``torch.distributions.generalized_pareto``: ``GeneralizedPareto`` where code imports it from (``from torch.distributions.generalized_pareto import
GeneralizedPareto``)."""

from kiln.frontend.distributions_extreme import GeneralizedPareto

__all__ = ["GeneralizedPareto"]
