"""``kiln.autograd.functional``: PyTorch's ``torch.autograd.functional`` (``runtime/autograd_functional.py``)."""

from kiln.runtime.autograd_functional import hessian, hvp, jacobian, jvp, vhp, vjp

__all__ = ["hessian", "hvp", "jacobian", "jvp", "vhp", "vjp"]
