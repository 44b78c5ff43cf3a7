"""``torch.distributions.kumaraswamy``: ``Kumaraswamy`` where code imports it from (``from torch.distributions.kumaraswamy import
Kumaraswamy``)."""

from kiln.frontend.distributions_transformed_more import Kumaraswamy

__all__ = ["Kumaraswamy"]
