"""``torch.distributions.weibull``: ``Weibull`` where code imports it from (``from torch.distributions.weibull import
Weibull``)."""

from kiln.frontend.distributions_extreme import Weibull

__all__ = ["Weibull"]
