"""``torch.distributions.categorical``: ``Categorical`` where code imports it from (``from
torch.distributions.categorical import Categorical``)."""

from kiln.frontend.distributions_discrete import Categorical

__all__ = ["Categorical"]
