"""``torch.distributions.von_mises``: ``VonMises`` where code imports it from (``from torch.distributions.von_mises import
VonMises``)."""

from kiln.frontend.distributions_von_mises import VonMises

__all__ = ["VonMises"]
