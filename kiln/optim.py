"""``kiln.optim``: optimizers with ``torch.optim``'s names and arguments."""

from kiln.frontend.optim import SGD, Optimizer

__all__ = ["SGD", "Optimizer"]
