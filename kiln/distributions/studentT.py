"""``torch.distributions.studentT``: ``StudentT`` where code imports it from (``from torch.distributions.studentT import
StudentT``)."""

from kiln.frontend.distributions_heavy_tails import StudentT

__all__ = ["StudentT"]
