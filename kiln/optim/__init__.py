"""``kiln.optim``: optimizers with ``torch.optim``'s names and arguments; schedules in ``kiln.optim.lr_scheduler``; SWA/EMA in ``kiln.optim.swa_utils``."""

from kiln.frontend.optim import ASGD, GD, SGD, Adadelta, Adafactor, Adagrad, Adam, Adamax, AdamW, NAdam, Optimizer, RAdam, RMSprop, Rprop
from kiln.frontend.optim_lbfgs import LBFGS
from kiln.frontend.optim_combined import Combined
from kiln.frontend.optim_muon import Muon
from kiln.frontend.optim_sparse_adam import SparseAdam
from kiln.runtime.grad import loss_and_grad
from kiln.optim import lr_scheduler, optimizer, swa_utils

__all__ = [
    "ASGD", "Adadelta", "Adafactor", "Adagrad", "Adam", "Adamax", "AdamW", "Combined", "GD", "LBFGS", "Muon", "NAdam", "Optimizer", "RAdam", "RMSprop", "Rprop", "SGD", "SparseAdam",
    "loss_and_grad", "lr_scheduler", "optimizer", "swa_utils",
]
