"""``torch.distributions.lowrank_multivariate_normal``: ``LowRankMultivariateNormal`` where code imports it from (``from torch.distributions.lowrank_multivariate_normal import
LowRankMultivariateNormal``)."""

from kiln.frontend.distributions_lowrank import LowRankMultivariateNormal

__all__ = ["LowRankMultivariateNormal"]
