"""Eager leaf tensors as optimizer parameters, as ``torch.optim`` takes any leaf that requires grad.

```python
input_img = content_img.clone().requires_grad_(True)    # a leaf, not a Parameter: the image is optimised
optimizer = kiln.optim.LBFGS([input_img])               # (Gatys style transfer; adversarial examples)
def closure():
    with kiln.no_grad():
        input_img.clamp_(0, 1)                          # the tensor stays the marked leaf (tensor_inplace.rebind)
    optimizer.zero_grad()                               # clears input_img.grad
    loss = style_loss(model(input_img))
    loss.backward()                                     # fills input_img.grad
    return loss
optimizer.step(closure)                                 # writes input_img's array in place
```

The optimizer keeps a ``LeafTensorParameter`` standing for the tensor: its array is the tensor's current one (an
in-place write under ``no_grad`` gives the tensor a new array, which the next step reads), its ``.grad`` is the
tensor's. Only eager tensors qualify: a traced one has no array to update.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.frontend.eager_values import GRAD_TENSORS, eager_array
from kiln.frontend.module import ArrayLeaf, Parameter
from kiln.frontend.trace import located_error


class LeafTensorParameter(Parameter):
    """An optimizer's view of an eager leaf ``tensor`` marked by ``requires_grad_()``."""

    def __init__(self, tensor: Any):
        self.__dict__["tensor"] = tensor

    @property
    def _data(self) -> np.ndarray:
        return eager_array(self.tensor)

    @property
    def data(self) -> np.ndarray:
        return self._data

    @data.setter
    def data(self, array: np.ndarray) -> None:
        np.copyto(self._data, array)

    @property
    def grad(self) -> Any:  # type: ignore[override]
        return self.tensor.grad

    @grad.setter
    def grad(self, value: Any) -> None:
        self.tensor.grad = value

    @property
    def requires_grad(self) -> bool:  # type: ignore[override]
        return True

    def __repr__(self) -> str:
        return f"LeafTensorParameter({self.tensor!r})"


def as_optimizer_parameter(param: Any) -> Parameter:
    """``param`` itself if it is a ``Parameter``; a ``LeafTensorParameter`` for an eager leaf tensor marked by
    ``requires_grad_()``; else a ``KilnError`` saying what an optimizer takes."""
    if isinstance(param, ArrayLeaf):
        return param
    value = getattr(param, "__dict__", {}).get("_value")
    array = eager_array(param) if value is not None else None
    if value is not None and array is None:
        raise located_error("an optimizer over a traced tensor (made or given inside a kiln.compile'd function, as "
                            "_pgd_whitebox's optim.SGD([X_pgd])): its values exist only in the graph, which an "
                            "optimizer cannot update in place; make the tensor and its optimizer outside the compiled "
                            "function (the function may read and step them), differentiate the tensor with "
                            "kiln.autograd.grad instead, or run this function eagerly")
    if array is None:
        raise KilnError(f"optimizers take kiln Parameters or eager leaf tensors marked by requires_grad_(), got "
                        f"{type(param).__name__}")
    if value.producer is not None and (value in GRAD_TENSORS or not param.is_leaf):  # a retained or computed result
        raise KilnError("optimizers take leaf tensors: this one is computed from parameters or tensors that require "
                        "grad (PyTorch: can't optimize a non-leaf Tensor); optimize those, or a detached copy "
                        "(x = x.detach().clone().requires_grad_())")
    if value not in GRAD_TENSORS:
        raise KilnError("optimizers take tensors that require grad: call tensor.requires_grad_() on it first")
    known = param.__dict__.get("_optimizer_parameter")  # one per tensor: a tensor listed twice is caught as a duplicate
    if known is None:
        known = param.__dict__["_optimizer_parameter"] = LeafTensorParameter(param)
    return known


__all__ = ["LeafTensorParameter", "as_optimizer_parameter"]
