"""``kiln.distributions.transforms``: ``torch.distributions.transforms``' bijections (``frontend/distributions_transforms.py``)."""

from kiln.frontend.distributions_transforms import (
    AffineTransform, ComposeTransform, ExpTransform, PowerTransform, SigmoidTransform, SoftplusTransform, TanhTransform,
    Transform, identity_transform)
from kiln.frontend.distributions_transform_functors import CatTransform, IndependentTransform, StackTransform
from kiln.frontend.distributions_transforms_cholesky import (
    CorrCholeskyTransform, LowerCholeskyTransform, PositiveDefiniteTransform)
from kiln.frontend.distributions_transforms_more import (
    AbsTransform, CumulativeDistributionTransform, ReshapeTransform, SoftmaxTransform, StickBreakingTransform)

__all__ = ["AffineTransform", "ComposeTransform", "ExpTransform", "PowerTransform", "SigmoidTransform", "SoftplusTransform",
           "TanhTransform", "Transform", "identity_transform",
           "AbsTransform", "CatTransform", "CorrCholeskyTransform", "CumulativeDistributionTransform", "IndependentTransform",
           "LowerCholeskyTransform", "PositiveDefiniteTransform", "ReshapeTransform", "SoftmaxTransform", "StackTransform",
           "StickBreakingTransform"]
