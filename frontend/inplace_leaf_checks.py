"""PyTorch's refusal to write in place into a leaf that requires grad (or a view of one) while gradients are recorded.

A parameter, or a tensor marked by ``requires_grad_()``, is what autograd differentiates by; PyTorch refuses an
in-place write to it outside ``torch.no_grad()`` (its value would no longer be the one the gradient is taken at), and
so does kiln, eagerly and in a trace, with PyTorch's ``RuntimeError`` and words:

```python
w = nn.Linear(3, 2).weight
w.mul_(2)                        # RuntimeError: a leaf Variable that requires grad is being used in an in-place operation.
w[0].zero_()                     # RuntimeError: a view of a leaf Variable that requires grad is ...
with kiln.no_grad():
    w.mul_(2); w[0].zero_()      # written, as PyTorch's init code and optimizers write parameters
w.data.mul_(2)                   # .data is not differentiated: written
```

A non-leaf (``y = x * 2; y.mul_(2)``), a parameter with ``requires_grad=False``, a buffer and an integer tensor are
written as before, as in PyTorch. Two more of PyTorch's leaf rules live here: ``requires_grad_(False)`` on a non-leaf
is refused, and reading a non-leaf's ``.grad`` (never filled unless ``retain_grad()``) warns.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

from kiln.compiler.errors import TraceError
from kiln.frontend.eager_values import GRAD_TENSORS
from kiln.frontend.trace import TraceContext, located_error


class LeafInPlaceError(TraceError, RuntimeError):
    """An in-place write to a leaf that requires grad, or to a view of one, with gradients on: a ``RuntimeError``, as
    PyTorch's."""


class ViewDetachError(TraceError, RuntimeError):
    """``detach_()`` of a view: a ``RuntimeError``, as PyTorch's."""


def requires_grad_leaf(tensor: Any) -> bool:
    """Whether ``tensor`` is a leaf autograd differentiates by: a parameter that requires grad (not a buffer, not a
    frozen one), or an eager tensor marked by ``requires_grad_()`` (no op made it)."""
    if isinstance(tensor, parameter_class()):
        return bool(tensor.requires_grad)
    value = tensor.__dict__.get("_value")
    return value is not None and value.producer is None and value in GRAD_TENSORS


def view_base_to_record(view: Any, base: Any) -> Any:
    """The leaf ``view`` (made from ``base`` by a view op) remembers as ``_view_base``, so that a write through it is
    checked: ``base``'s if ``base`` is a view, else ``base`` if it is a parameter or a marked tensor, else None. A view
    with no chain (``x.data``, ``x.detach()``, one made under ``no_grad``; traced, a ``tensor.stop_gradient``)
    remembers none: PyTorch differentiates no write to it."""
    value = view.__dict__.get("_value")
    if value is not None and (value.producer is None or value.producer.name == "tensor.stop_gradient"):
        return None
    root = base.__dict__.get("_view_base")
    if root is not None:
        return root
    return base if _is_parameter(base) or requires_grad_leaf(base) else None


def check_leaf_write(tensor: Any, method: str) -> None:
    """Refuse ``method`` writing ``tensor`` in place when it is, or is a view of, a leaf that requires grad while
    gradients are recorded (PyTorch's check, made before anything is written)."""
    if not TraceContext.current().grad_enabled:
        return
    if requires_grad_leaf(tensor):
        raise leaf_write_error(method, through_view=method == "index assignment")
    if writes_a_grad_leaf(tensor):
        raise leaf_write_error(method, through_view=True)


def writes_a_grad_leaf(tensor: Any) -> bool:
    """Whether an in-place write to ``tensor`` writes a leaf that requires grad: it is one, or a view of one."""
    base = tensor.__dict__.get("_view_base")
    return requires_grad_leaf(tensor) or (base is not None and requires_grad_leaf(base))


def leaf_write_error(method: str, through_view: bool) -> LeafInPlaceError:
    """PyTorch's message, with the user's line and what to do."""
    leaf = "a view of a leaf Variable" if through_view else "a leaf Variable"
    write = "p[i] = v" if method == "index assignment" else f"p.{method}(...)"
    return located(LeafInPlaceError, f"{method}: {leaf} that requires grad is being used in an in-place operation. "
                   "A parameter (or a tensor marked by requires_grad_()) is written in place only while gradients are "
                   f"off, as in PyTorch: `with kiln.no_grad(): {write}` (as init code and optimizers do), or through its "
                   ".data (p.data is not differentiated); to use a changed value in the gradient, compute a new tensor "
                   "(w2 = p * 2)")


class ModifiedSinceForwardError(TraceError, RuntimeError):
    """``backward()`` of a graph that read a parameter since written in place (``optimizer.step()``, or a write under
    ``no_grad``): a ``RuntimeError``, as PyTorch's version-counter check (``runtime/eager_backward.py`` raises it)."""


class NonLeafFlagError(TraceError, RuntimeError):
    """``requires_grad_(False)`` on a result that requires grad: a ``RuntimeError``, as PyTorch's."""


def check_non_leaf_flag(requires_grad: bool) -> None:
    """PyTorch's rule for ``requires_grad_`` on a non-leaf: True changes nothing (it already requires grad), False is
    refused (its gradient flows through the op that made it whatever the flag says)."""
    if not requires_grad:
        raise located(NonLeafFlagError, "requires_grad_(False): you can only change requires_grad flags of leaf "
                      "variables. If you want to use a computed variable in a subgraph that doesn't require "
                      "differentiation use var_no_grad = var.detach().")


def warn_non_leaf_grad() -> None:
    """PyTorch's warning when ``.grad`` of a non-leaf that does not retain its gradient is read (it is always None)."""
    warnings.warn("The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its .grad attribute won't "
                  "be populated during autograd.backward(). If you indeed want the .grad field to be populated for a "
                  "non-leaf Tensor, use .retain_grad() on the non-leaf Tensor. If you access the non-leaf Tensor by "
                  "mistake, make sure you access the leaf Tensor instead.", UserWarning, stacklevel=3)


def located(error_class: type[TraceError], message: str) -> TraceError:
    """An ``error_class`` naming the user's line, marked located (a trace's exit would name it again)."""
    error = error_class(*located_error(message).args)
    error.located = True  # type: ignore[attr-defined]
    return error


def _is_parameter(tensor: Any) -> bool:
    return isinstance(tensor, parameter_class())


@functools.cache
def parameter_class() -> type:
    """``ArrayLeaf`` (parameters, buffers, ``requires_grad=True`` leaves), imported on first use (the module builds on the
    tensor, which builds on this file) and kept: an import statement in a function runs at every call (~0.3 µs), and
    every eager view op asks."""
    from kiln.frontend.module import ArrayLeaf

    return ArrayLeaf


__all__ = ["LeafInPlaceError", "ModifiedSinceForwardError", "NonLeafFlagError", "check_leaf_write", "check_non_leaf_flag", "leaf_write_error",
           "located", "parameter_class", "requires_grad_leaf", "view_base_to_record", "warn_non_leaf_grad"]
