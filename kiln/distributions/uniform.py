"""``torch.distributions.uniform``: ``Uniform`` where code imports it from (``from torch.distributions.uniform import
Uniform``)."""

from kiln.frontend.distributions_continuous import Uniform

__all__ = ["Uniform"]
