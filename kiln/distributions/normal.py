"""``torch.distributions.normal``: ``Normal`` where code imports it from (``from torch.distributions.normal import
Normal``)."""

from kiln.frontend.distributions_continuous import Normal

__all__ = ["Normal"]
