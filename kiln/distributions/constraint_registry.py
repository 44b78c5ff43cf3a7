"""``torch.distributions.constraint_registry``: ``biject_to``, ``transform_to`` and ``ConstraintRegistry`` where code
imports them from (``from torch.distributions.constraint_registry import biject_to``)."""

from kiln.frontend.distributions_constraint_registry import ConstraintRegistry, biject_to, transform_to

__all__ = ["ConstraintRegistry", "biject_to", "transform_to"]
