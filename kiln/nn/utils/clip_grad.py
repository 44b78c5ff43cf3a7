"""``kiln.nn.utils.clip_grad``: the module path ``torch.nn.utils.clip_grad`` (``from torch.nn.utils.clip_grad import
clip_grad_norm_``), the functions of ``frontend/nn_utils.py``."""

from kiln.frontend.nn_utils import clip_grad_norm, clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm

__all__ = ["clip_grad_norm", "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]
