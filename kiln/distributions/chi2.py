"""``torch.distributions.chi2``: ``Chi2`` where code imports it from (``from torch.distributions.chi2 import
Chi2``)."""

from kiln.frontend.distributions_gamma import Chi2

__all__ = ["Chi2"]
