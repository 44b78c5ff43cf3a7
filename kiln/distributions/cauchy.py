"""``torch.distributions.cauchy``: ``Cauchy`` where code imports it from (``from torch.distributions.cauchy import
Cauchy``)."""

from kiln.frontend.distributions_heavy_tails import Cauchy

__all__ = ["Cauchy"]
