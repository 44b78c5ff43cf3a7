"""``torch.nn.modules.module``: ``Module``."""

from kiln.frontend.module import Module

__all__ = ["Module"]
