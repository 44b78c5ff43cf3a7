"""``torch.distributions.dirichlet``: ``Dirichlet`` where code imports it from (``from torch.distributions.dirichlet import
Dirichlet``)."""

from kiln.frontend.distributions_dirichlet import Dirichlet

__all__ = ["Dirichlet"]
