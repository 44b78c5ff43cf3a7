"""``torch.distributions.multivariate_normal``: ``MultivariateNormal`` where code imports it from (``from torch.distributions.multivariate_normal import
MultivariateNormal``)."""

from kiln.frontend.distributions_multivariate import MultivariateNormal

__all__ = ["MultivariateNormal"]
