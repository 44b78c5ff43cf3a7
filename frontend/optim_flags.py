"""``torch.optim``'s implementation flags: ``foreach``, ``fused``, ``capturable``, ``differentiable``.

In PyTorch they choose how an update runs (a loop over tensors, one multi-tensor kernel, one fused kernel, a CUDA
graph-safe step counter, autograd through the update); the math is the same. kiln always compiles a parameter's
update into one op of the step, so it accepts them as PyTorch does, keeps them in each param group (a PyTorch
``state_dict`` loads, and kiln's loads into PyTorch) and changes nothing for them; they do not recompile the step.
Each optimizer takes exactly the flags its PyTorch class takes (``fused=`` only SGD, Adam, AdamW and Adagrad).

The combinations PyTorch's constructors refuse are refused here with the same meaning, and
``differentiable=True``, which kiln cannot honour, is refused with what to do instead.
"""

from __future__ import annotations

from typing import Any, Mapping

from kiln.compiler.errors import KilnError

IMPLEMENTATION_OPTIONS = frozenset({"foreach", "fused", "capturable", "differentiable"})
"""Options that choose PyTorch's implementation of an update, not its math: they never change a compiled step."""


def check_constructor_flags(owner: str, defaults: Mapping[str, Any]) -> None:
    """PyTorch's constructor checks of ``fused`` (``torch.optim.Adam.__init__``): not with ``differentiable``, not with ``foreach``."""
    if not defaults.get("fused"):
        return
    if defaults.get("differentiable"):
        raise KilnError(f"{owner}: `fused` does not support `differentiable` (as in torch.optim); drop one of them")
    if defaults.get("foreach"):
        raise KilnError(
            f"{owner}: `fused` and `foreach` cannot be `True` together (as in torch.optim); pass one of them "
            "(kiln compiles each update into one op of the step either way)"
        )


def refuse_differentiable(owner: str, group: Mapping[str, Any]) -> None:
    """``differentiable=True`` (a group's, or a loaded state_dict's) asks autograd to see through ``step()``; kiln's
    update runs outside autograd."""
    if group.get("differentiable"):
        raise KilnError(
            f"{owner}(differentiable=True): kiln cannot differentiate through an optimizer's update (it runs as a compiled "
            "update outside autograd); pass differentiable=False, and to differentiate through an update (a MAML inner "
            "step) write it with tensor ops: grads = kiln.autograd.grad(loss, params, create_graph=True), "
            "new_params = {name: p - lr * g ...}, then kiln.func.functional_call(model, new_params, (x,))"
        )


__all__ = ["IMPLEMENTATION_OPTIONS", "check_constructor_flags", "refuse_differentiable"]
