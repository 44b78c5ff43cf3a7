"""``torch.distributions.gamma``: ``Gamma`` where code imports it from (``from torch.distributions.gamma import
Gamma``)."""

from kiln.frontend.distributions_gamma import Gamma

__all__ = ["Gamma"]
