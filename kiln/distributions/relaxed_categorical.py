"""``torch.distributions.relaxed_categorical``: ``RelaxedOneHotCategorical`` and ``ExpRelaxedCategorical`` where code
imports them from (``from torch.distributions.relaxed_categorical import RelaxedOneHotCategorical``)."""

from kiln.frontend.distributions_relaxed import ExpRelaxedCategorical, RelaxedOneHotCategorical

__all__ = ["ExpRelaxedCategorical", "RelaxedOneHotCategorical"]
