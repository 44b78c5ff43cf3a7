"""``torch.distributions.distribution``: ``Distribution`` where code imports it from (``from torch.distributions.distribution import
Distribution``)."""

from kiln.frontend.distributions import Distribution

__all__ = ["Distribution"]
