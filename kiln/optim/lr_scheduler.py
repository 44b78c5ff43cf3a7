"""``kiln.optim.lr_scheduler``: learning-rate schedules with ``torch.optim.lr_scheduler``'s names."""

from kiln.frontend.schedules import (
    ConstantLR, CosineAnnealingLR, ExponentialLR, LambdaLR, LinearLR, LRScheduler, MultiStepLR, SequentialLR, StepLR, warmup_cosine,
)

__all__ = [
    "ConstantLR", "CosineAnnealingLR", "ExponentialLR", "LRScheduler", "LambdaLR", "LinearLR", "MultiStepLR", "SequentialLR", "StepLR",
    "warmup_cosine",
]
