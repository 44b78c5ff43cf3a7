"""``kiln.optim``: optimizers with ``torch.optim``'s names and arguments; schedules in ``kiln.optim.lr_scheduler``."""

from kiln.frontend.optim import GD, SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop
from kiln.optim import lr_scheduler

__all__ = ["Adagrad", "Adam", "AdamW", "GD", "Optimizer", "RMSprop", "SGD", "lr_scheduler"]
