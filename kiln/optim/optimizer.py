"""``kiln.optim.optimizer``: ``torch.optim.optimizer``'s base class and its global step hooks."""

from kiln.frontend.optim import Optimizer
from kiln.frontend.optim_hooks import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

__all__ = ["Optimizer", "register_optimizer_step_post_hook", "register_optimizer_step_pre_hook"]
