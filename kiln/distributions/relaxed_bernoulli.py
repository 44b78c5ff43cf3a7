"""``torch.distributions.relaxed_bernoulli``: ``RelaxedBernoulli`` and ``LogitRelaxedBernoulli`` where code imports
them from (``from torch.distributions.relaxed_bernoulli import RelaxedBernoulli``)."""

from kiln.frontend.distributions_relaxed import LogitRelaxedBernoulli, RelaxedBernoulli

__all__ = ["LogitRelaxedBernoulli", "RelaxedBernoulli"]
