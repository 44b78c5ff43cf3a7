"""``torch.autograd.grad_mode``: the gradient-mode switches where code imports them from (``from
torch.autograd.grad_mode import no_grad``); they are ``frontend/grad_mode.py``'s."""

from kiln.frontend.grad_mode import (enable_grad, inference_mode, is_grad_enabled, is_inference_mode_enabled, no_grad,
                                     set_grad_enabled)

__all__ = ["enable_grad", "inference_mode", "is_grad_enabled", "is_inference_mode_enabled", "no_grad",
           "set_grad_enabled"]
