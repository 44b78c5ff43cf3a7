"""``kiln.autograd.gradcheck``: the module PyTorch code imports from (``from torch.autograd.gradcheck import
GradcheckError``); the checks themselves are ``frontend/gradcheck.py``. As in torch, ``kiln.autograd.gradcheck`` is
the function once ``kiln.autograd`` is imported, while this module stays importable by name."""

from kiln.frontend.gradcheck import GradcheckError, gradcheck, gradgradcheck

__all__ = ["GradcheckError", "gradcheck", "gradgradcheck"]
