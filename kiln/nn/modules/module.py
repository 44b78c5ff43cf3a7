"""``torch.nn.modules.module``: ``Module`` and the global hooks, run for every module's call
(``frontend/module_hooks.py``)."""

from kiln.frontend.module import Module
from kiln.frontend.module_hooks import (register_module_backward_hook, register_module_forward_hook,
                                        register_module_forward_pre_hook, register_module_full_backward_hook,
                                        register_module_full_backward_pre_hook)

__all__ = ["Module", "register_module_backward_hook", "register_module_forward_hook", "register_module_forward_pre_hook",
           "register_module_full_backward_hook", "register_module_full_backward_pre_hook"]
