"""``torch.distributions.exponential``: ``Exponential`` where code imports it from (``from torch.distributions.exponential import
Exponential``)."""

from kiln.frontend.distributions_continuous import Exponential

__all__ = ["Exponential"]
