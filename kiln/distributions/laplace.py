"""``torch.distributions.laplace``: ``Laplace`` where code imports it from (``from torch.distributions.laplace import
Laplace``)."""

from kiln.frontend.distributions_continuous import Laplace

__all__ = ["Laplace"]
