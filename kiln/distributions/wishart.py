"""``torch.distributions.wishart``: ``Wishart`` where code imports it from (``from torch.distributions.wishart import
Wishart``)."""

from kiln.frontend.distributions_wishart import Wishart

__all__ = ["Wishart"]
