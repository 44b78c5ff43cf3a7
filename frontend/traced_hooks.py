"""Tensor hooks inside a trace: ``h.register_hook(fn)`` on a traced tensor in a ``kiln.compile``d step.

MuZero's training step scales the gradient flowing into each unrolled dynamics step with
``hidden_state.register_hook(lambda grad: grad * 0.5)``. The trace keeps each hook with the value it was registered
on; a ``backward()`` traced after it (``runtime/step_capture.py``) hands the autodiff pass ``cotangent_hooks``, which
calls the hooks on that value's complete cotangent, before it flows on, as torch's autograd does. A hook is Python
run on traced tensors: its ops land in the step's graph, in the backward, and a tensor it returns replaces the
gradient (None keeps it).

```python
h = lin(x)
h.register_hook(lambda g: g * 0.5)     # d loss / d lin's weight halves
(h ** 2).sum().backward()
```
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Iterable

from kiln.compiler.ir.core import Value
from kiln.frontend.hooked_gradient import hooked_gradient
from kiln.frontend.module_hooks import RemovableHandle, held_hook
from kiln.frontend.trace import TraceContext, located_error, step_capture


def register_traced_hook(context: TraceContext, value: Value, hook: Callable[[Any], Any]) -> RemovableHandle:
    """Keep ``hook`` for ``value``'s gradient in the backwards ``context`` traces after this."""
    return held_hook(context.__dict__.setdefault("tensor_hooks", {}).setdefault(value, OrderedDict()), hook)


def retain_traced_grad(tensor: Any) -> None:
    """``tensor.retain_grad()`` on a traced tensor in a ``kiln.compile``d step: each ``backward()`` traced after this
    adds the tensor's complete gradient to its ``.grad``, past its hooks (torch's retains-grad hook runs last)."""
    if step_capture() is None:
        raise located_error("retain_grad on a traced tensor outside a kiln.compile'd step that calls backward() itself "
                            "(a compiled forward or compile_train_step differentiates it elsewhere); compile the whole "
                            "step with kiln.compile, or read the gradient with kiln.autograd.grad(loss, tensor)")
    TraceContext.current().__dict__.setdefault("retained", {})[tensor.value] = tensor


def traced_retains_grad(tensor: Any) -> bool:
    return tensor.value in TraceContext.current().__dict__.get("retained", {})


def cotangent_hooks(context: TraceContext, retain: bool = False, keep_graph: bool = False
                    ) -> Callable[[Value, Value], Value] | None:
    """The autodiff pass's ``on_cotangent`` calling the hooks registered in ``context`` and, where ``retain`` (a
    ``backward()``, not ``autograd.grad``), filling retained tensors' ``.grad`` (a constant to later backwards unless
    ``keep_graph``: ``create_graph=True``); None where there is nothing to call."""
    registered = context.__dict__.get("tensor_hooks", {})
    retained = context.__dict__.get("retained", {}) if retain else {}
    if not any(registered.values()) and not retained:
        return None

    def on_cotangent(value: Value, cotangent: Value) -> Value:
        cotangent = _hooked(registered.get(value, {}).values(), cotangent)
        tensor = retained.get(value)
        if tensor is not None:
            grad = _tensor(cotangent if keep_graph else context.without_gradient(cotangent))
            tensor.grad = grad if tensor.__dict__.get("grad") is None else tensor.grad + grad
        return cotangent

    return on_cotangent


def parameter_hooked(parameter: Any, grad: Value) -> Value:
    """``grad``, a parameter's whole gradient from a traced backward, through the parameter's ``register_hook``
    hooks, before it is accumulated into ``.grad``, as torch's ``AccumulateGrad`` calls them."""
    return _hooked(parameter.__dict__.get("_grad_hooks", {}).values(), grad)


def _hooked(hooks: Iterable[Callable[[Any], Any]], cotangent: Value) -> Value:
    return hooked_gradient(hooks, _tensor(cotangent)).value




def _tensor(value: Value) -> Any:
    from kiln.frontend.tensor import Tensor  # lazily: the tensor builds on the trace

    return Tensor(value)


__all__ = ["cotangent_hooks", "parameter_hooked", "register_traced_hook", "retain_traced_grad", "traced_retains_grad"]
