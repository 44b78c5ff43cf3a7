"""``torch.distributions.inverse_gamma``: ``InverseGamma`` where code imports it from (``from torch.distributions.inverse_gamma import
InverseGamma``)."""

from kiln.frontend.distributions_transformed_more import InverseGamma

__all__ = ["InverseGamma"]
