"""``kiln.optim.lr_scheduler``: learning-rate schedules with ``torch.optim.lr_scheduler``'s names."""

from kiln.frontend.schedules import (
    ChainedScheduler, ConstantLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, CyclicLR, ExponentialLR, LambdaLR, LinearLR, LRScheduler,
    MultiplicativeLR, MultiStepLR, OneCycleLR, PolynomialLR, ReduceLROnPlateau, SequentialLR, StepLR, warmup_cosine,
)

__all__ = [
    "ChainedScheduler", "ConstantLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "CyclicLR", "ExponentialLR", "LRScheduler",
    "LambdaLR", "LinearLR", "MultiStepLR", "MultiplicativeLR", "OneCycleLR", "PolynomialLR", "ReduceLROnPlateau", "SequentialLR",
    "StepLR", "warmup_cosine",
]


class _LRScheduler(LRScheduler):
    """torch's pre-2.0 name for the base class, still there in 2.13 (a subclass adding nothing) and still subclassed
    by user schedulers (Graphormer's ``PolynomialDecayLR(_LRScheduler)``); like torch's, not in ``__all__``."""
