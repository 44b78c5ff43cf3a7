"""``torch.distributions.logistic_normal``: ``LogisticNormal`` where code imports it from (``from torch.distributions.logistic_normal import
LogisticNormal``)."""

from kiln.frontend.distributions_transformed_more import LogisticNormal

__all__ = ["LogisticNormal"]
