"""``kiln.optim``: optimizers with ``torch.optim``'s names and arguments; schedules in ``kiln.optim.lr_scheduler``."""

from kiln.frontend.optim import GD, SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, NAdam, Optimizer, RAdam, RMSprop
from kiln.optim import lr_scheduler

__all__ = ["Adadelta", "Adagrad", "Adam", "Adamax", "AdamW", "GD", "NAdam", "Optimizer", "RAdam", "RMSprop", "SGD", "lr_scheduler"]
