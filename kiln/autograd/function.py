"""``kiln.autograd.function``: the module PyTorch code imports ``Function`` from
(``from torch.autograd.function import Function``, as reformer_pytorch's ``reversible.py``); the same class as
``kiln.autograd.Function`` (``frontend/custom_function.py``)."""

from kiln.frontend.custom_function import Function, FunctionCtx

__all__ = ["Function", "FunctionCtx"]
