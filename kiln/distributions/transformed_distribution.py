"""``torch.distributions.transformed_distribution``: ``TransformedDistribution`` where code imports it from
(``pyd.transformed_distribution.TransformedDistribution`` in Denis Yarats' SAC ``SquashedNormal``)."""

from kiln.frontend.distributions_transformed import TransformedDistribution

__all__ = ["TransformedDistribution"]
