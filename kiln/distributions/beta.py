"""``torch.distributions.beta``: ``Beta`` where code imports it from (``from torch.distributions.beta import
Beta``)."""

from kiln.frontend.distributions_gamma import Beta

__all__ = ["Beta"]
