"""Learning-rate schedules with ``torch.optim.lr_scheduler``'s names, arguments and arithmetic.

A scheduler writes ``optimizer.param_groups[i]["lr"]`` on the host, exactly
as PyTorch's does (the same recursive formulas, so the same floats); the
compiled step reads the learning rate as a graph input, so a schedule never
recompiles. Call ``scheduler.step()`` after each ``step(x, y)``, as in PyTorch.

```python
optimizer = kiln.optim.SGD(model.parameters(), lr=0.1)
scheduler = kiln.optim.lr_scheduler.warmup_cosine(optimizer, warmup_steps=10, total_steps=200)
for x, y in batches:
    loss = step(x, y)
    scheduler.step()
```
"""

from kiln.frontend.schedules_base import LRScheduler
from kiln.frontend.schedules_base import _per_group  # noqa: F401  (re-exported: swa_utils imports it from here)
from kiln.frontend.schedules_composite import ChainedScheduler, SequentialLR, warmup_cosine
from kiln.frontend.schedules_cyclic import CyclicLR, OneCycleLR
from kiln.frontend.schedules_decay import (
    ConstantLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, ExponentialLR, LambdaLR, LinearLR, MultiplicativeLR, MultiStepLR,
    PolynomialLR, ReduceLROnPlateau, StepLR,
)

__all__ = [
    "ChainedScheduler", "ConstantLR", "CosineAnnealingLR", "CosineAnnealingWarmRestarts", "CyclicLR", "ExponentialLR", "LRScheduler",
    "LambdaLR", "LinearLR", "MultiStepLR", "MultiplicativeLR", "OneCycleLR", "PolynomialLR", "ReduceLROnPlateau", "SequentialLR",
    "StepLR", "warmup_cosine",
]
