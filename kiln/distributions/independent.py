"""``torch.distributions.independent``: ``Independent`` where code reaches it through the submodule
(``torchd.independent.Independent(dist, 1)``)."""

from kiln.frontend.distributions_independent import Independent

__all__ = ["Independent"]
