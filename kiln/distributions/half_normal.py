"""``torch.distributions.half_normal``: ``HalfNormal`` where code imports it from (``from torch.distributions.half_normal import
HalfNormal``)."""

from kiln.frontend.distributions_heavy_tails import HalfNormal

__all__ = ["HalfNormal"]
