"""``torch.distributions.half_cauchy``: ``HalfCauchy`` where code imports it from (``from torch.distributions.half_cauchy import
HalfCauchy``)."""

from kiln.frontend.distributions_heavy_tails import HalfCauchy

__all__ = ["HalfCauchy"]
