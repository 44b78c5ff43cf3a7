"""``torch.distributions.mixture_same_family``: ``MixtureSameFamily`` where code reaches it through the submodule."""

from kiln.frontend.distributions_mixture import MixtureSameFamily

__all__ = ["MixtureSameFamily"]
