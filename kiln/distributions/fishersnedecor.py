"""``torch.distributions.fishersnedecor``: ``FisherSnedecor`` where code imports it from (``from torch.distributions.fishersnedecor import
FisherSnedecor``)."""

from kiln.frontend.distributions_transformed_more import FisherSnedecor

__all__ = ["FisherSnedecor"]
