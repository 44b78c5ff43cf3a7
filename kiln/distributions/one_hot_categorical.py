"""``torch.distributions.one_hot_categorical``: where code reaches the class through the submodule
(``torchd.one_hot_categorical.OneHotCategorical``, DreamerV2's ``OneHotDist`` base)."""

from kiln.frontend.distributions_one_hot import OneHotCategorical, OneHotCategoricalStraightThrough

__all__ = ["OneHotCategorical", "OneHotCategoricalStraightThrough"]
