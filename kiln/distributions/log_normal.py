"""``torch.distributions.log_normal``: ``LogNormal`` where code imports it from (``from torch.distributions.log_normal import
LogNormal``)."""

from kiln.frontend.distributions_transformed import LogNormal

__all__ = ["LogNormal"]
