"""``kiln.autograd.function``: the module PyTorch code imports ``Function`` from
(``from torch.autograd.function import Function``, as reformer_pytorch's ``reversible.py``); the same class as
``kiln.autograd.Function`` (``frontend/custom_function.py``), with ``once_differentiable``
(``frontend/custom_function_once.py``)."""

from kiln.frontend.custom_function import Function, FunctionCtx, once_differentiable

__all__ = ["Function", "FunctionCtx", "once_differentiable"]
