"""``torch.distributions.exp_family``: ``ExponentialFamily`` where code imports it from (``from
torch.distributions.exp_family import ExponentialFamily``)."""

from kiln.frontend.distributions_exp_family import ExponentialFamily

__all__ = ["ExponentialFamily"]
