"""``requires_grad`` of a traced tensor, exact as PyTorch's (and kiln's eager one).

```python
@kiln.compile
def f(x):                                   # x: an eager tensor with requires_grad=True
    assert x.requires_grad and not x.detach().requires_grad
    assert not x.argmax().requires_grad     # integer results carry no gradient
    with kiln.no_grad():
        assert not (x * 2).requires_grad
    return model(x)                         # a trained parameter's result requires grad
```

A traced value requires grad iff it is floating point and its chain reaches, through differentiable ops (not past a
``tensor.stop_gradient``: ``detach()``, ``no_grad``, an integer value), a leaf that does: a parameter with
``requires_grad=True``, an input of a call given a tensor that requires grad, or a traced tensor marked by
``requires_grad_()`` in the trace (PyTorch lets only leaves, tensors that require no grad, be marked). The walk is the
eager one's (``tensor_eager._depends_on_a_leaf``) over the trace's leaves; what a walk found no leaf behind is
remembered for the next question (a layer asking at every call walks only what was traced since).
"""

from __future__ import annotations

from typing import Any

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.types import DType
from kiln.frontend.inplace_leaf_checks import check_non_leaf_flag, located
from kiln.frontend.trace import TraceContext


class IntegerGradError(TraceError, RuntimeError):
    """``requires_grad_()`` on an integer or bool tensor: a ``RuntimeError``, as PyTorch's."""


def check_float_for_grad(dtype: DType) -> None:
    """PyTorch's refusal to let a tensor that is not floating point require grad (eagerly and traced)."""
    if not dtype.is_float:
        raise located(IntegerGradError, f"requires_grad_(): only floating-point tensors can require gradients, not "
                      f"{dtype.numpy.name} (PyTorch: only Tensors of floating point and complex dtype can require "
                      "gradients); cast it first: x.float().requires_grad_()")


def traced_requires_grad(value: Value) -> bool:
    """Whether ``value``, traced in the current context, requires grad (see the module's docstring)."""
    context = TraceContext.current()
    known = context.requires_grad_known
    if value in known:
        return known[value]
    if not value.type.dtype.is_float:
        return False  # an integer or bool result (argmax's indices, a mask) carries no gradient
    stack, seen = [value], {value}
    while stack:
        current = stack.pop()
        if known.get(current) or _is_grad_leaf(context, current):
            known[value] = True
            return True
        op = current.producer
        if op is None or op.name == "tensor.stop_gradient" or current in known:
            continue
        for operand in op.operands:
            if operand not in seen and operand.type.dtype.is_float:
                seen.add(operand)
                stack.append(operand)
    known.update(dict.fromkeys(seen, False))  # no leaf behind any of them
    return False


def _is_grad_leaf(context: TraceContext, value: Value) -> bool:
    if not value.type.dtype.is_float:
        return False
    if value in context.grad_leaves:
        return True
    parameter = context.parameter_by_value.get(value)
    return parameter is not None and bool(parameter.requires_grad)


def mark_traced_for_grad(tensor: Any, requires_grad: bool) -> None:
    """``requires_grad_()`` on a traced tensor, as PyTorch's on a tensor: a tensor that requires no grad (a leaf)
    becomes a leaf that does (floating point only); ``requires_grad_(False)`` unmarks a marked one and is PyTorch's
    RuntimeError on a result that requires grad (a non-leaf)."""
    context, value = TraceContext.current(), tensor.value
    if requires_grad:
        check_float_for_grad(value.type.dtype)
    if requires_grad and not traced_requires_grad(value):
        context.grad_leaves.add(value)
        inner = getattr(context, "inner_backward", None)
        if inner is not None:  # in a Function's backward: a backward() there fills its .grad
            inner.marked.append(tensor)
        capture = getattr(context, "step_capture", None)
        if capture is not None:  # in a kiln.compile'd step: so does a backward() there (runtime/step_capture.py)
            capture.marked.append(tensor)
            capture.marked_values[id(tensor)] = value
    elif not requires_grad and value in context.grad_leaves:
        context.grad_leaves.discard(value)
    elif not requires_grad and traced_requires_grad(value):
        check_non_leaf_flag(False)  # raises: a result that requires grad keeps its flag
    else:
        return  # already as asked
    context.requires_grad_known.clear()  # what was found before may now reach (or lose) this leaf


__all__ = ["IntegerGradError", "check_float_for_grad", "mark_traced_for_grad", "traced_requires_grad"]
