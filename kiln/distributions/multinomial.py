"""``torch.distributions.multinomial``: ``Multinomial`` where code imports it from (``from torch.distributions.multinomial import
Multinomial``)."""

from kiln.frontend.distributions_multinomial import Multinomial

__all__ = ["Multinomial"]
