"""``kiln.distributions.transforms``: ``torch.distributions.transforms``' bijections (``frontend/distributions_transforms.py``)."""

from kiln.frontend.distributions_transforms import (
    AffineTransform, ComposeTransform, ExpTransform, PowerTransform, SigmoidTransform, SoftplusTransform, TanhTransform,
    Transform, identity_transform)

__all__ = ["AffineTransform", "ComposeTransform", "ExpTransform", "PowerTransform", "SigmoidTransform", "SoftplusTransform",
           "TanhTransform", "Transform", "identity_transform"]
