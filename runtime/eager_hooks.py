"""Gradient hooks in eager mode: ``tensor.register_hook`` and ``module.register_full_backward_hook``, as PyTorch's.

```python
h = model.features(x)
h.register_hook(lambda g: grads.append(g))                  # Grad-CAM: the activation's gradient, as it flows
layer.register_full_backward_hook(lambda m, gin, gout: print(gout[0].norm()))
hook = lambda g: g.clamp(-1, 1)                              # a hook that returns a tensor replaces the gradient
```

A backward whose chain holds a hooked tensor is not run as one compiled
function: the autodiff pass builds its graph, marking each hooked value's
complete cotangent with a ``tensor.broadcast_to`` (identity) op, and the
graph's new ops then run eagerly one by one (as ``create_graph=True`` does),
calling the hooks with eager tensors at those marks, in backward order. A
module's full backward hook is a hook on its outputs (collecting
``grad_output``) and on its inputs (``grad_input``): it fires when every
input gradient the backward computes has arrived, or with ``grad_input`` of
``None`` when none of its inputs needs one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from kiln.compiler.ir.core import Value
from kiln.frontend.eager_values import ARRAYS, TENSOR_HOOKS
from kiln.frontend.module_hooks import RemovableHandle, held_hook, registered_hooks
from kiln.frontend.hooked_gradient import hooked_gradient
from kiln.frontend.trace import TraceContext, located_error


def register_tensor_hook(value: Value, hook: Callable[[Any], Any]) -> RemovableHandle:
    """Run ``hook(grad)`` on ``value``'s gradient at every eager backward through it."""
    hooks = TENSOR_HOOKS.get(value)
    if hooks is None:
        hooks = TENSOR_HOOKS[value] = {}
    return held_hook(hooks, hook)


def run_hooks(value: Value, grad: Any) -> Any:
    """``grad`` (an eager Tensor) through ``value``'s hooks in order; a hook returning a tensor replaces it."""
    return hooked_gradient(TENSOR_HOOKS.get(value, {}).values(), grad)


@dataclass
class ModuleBackward:
    """One call of a module with full backward hooks: its input and output aliases and the gradients that arrive."""

    module: Any
    inputs: list[Value | None]
    outputs: list[Value]
    grad_inputs: dict[int, Any] = field(default_factory=dict)
    grad_outputs: dict[int, Any] = field(default_factory=dict)
    fired: bool = False

    def on_output(self, index: int, grad: Any) -> Any:
        self.grad_outputs[index] = grad
        if len(self.grad_outputs) == len(self.outputs):
            for hook, _ in registered_hooks(self.module, "_backward_pre_hooks"):  # the global ones first
                replaced = hook(self.module, self._grad_output())
                if replaced is not None:
                    self.grad_outputs = dict(enumerate(replaced))
            if not any(self.inputs):
                self._fire()
        return self.grad_outputs[index]

    def on_input(self, index: int, grad: Any) -> Any:
        self.grad_inputs[index] = grad
        if len(self.grad_inputs) == sum(1 for value in self.inputs if value is not None and _reached(value)):
            self._fire()
        return self.grad_inputs[index]

    def _grad_output(self) -> tuple[Any, ...]:
        return tuple(self.grad_outputs.get(i) for i in range(len(self.outputs)))

    def _fire(self) -> None:
        grad_input = tuple(self.grad_inputs.get(i) for i in range(len(self.inputs)))
        for hook, _ in registered_hooks(self.module, "_backward_hooks"):
            replaced = hook(self.module, grad_input, self._grad_output())
            if replaced is not None:
                grad_input = tuple(replaced)
                self.grad_inputs = {i: g for i, g in enumerate(grad_input) if g is not None}
        self.fired = True


REACHED: set[int] = set()
"""``id`` of the hooked values the backward being run gives a cotangent (``EagerChain.graph`` fills it)."""


def _reached(value: Value) -> bool:
    return id(value) in REACHED


def call_with_backward_hooks(module: Any, forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``forward(*args, **kwargs)`` with the module's full backward hooks attached to its inputs' and outputs' gradients
    (eager only: a trace refuses backward hooks)."""
    from kiln.frontend.tensor import Tensor
    from kiln.runtime.pytree import flatten, unflatten

    if TraceContext.active():
        raise located_error(f"{type(module).__name__} has a backward hook, which a compiled step cannot call (its gradients "
                            "are one graph); run it eagerly, or read gradients with kiln.autograd.grad")
    leaves, structure = flatten(args)
    aliased = [_alias(leaf) if _differentiable(leaf) else leaf for leaf in leaves]
    call = ModuleBackward(module, [leaf.value if _differentiable(leaf) else None for leaf in aliased], [])
    for index, leaf in enumerate(aliased):
        if call.inputs[index] is not None:
            register_tensor_hook(leaf.value, lambda g, i=index: call.on_input(i, g))
    output = forward(*unflatten(structure, aliased), **kwargs)
    out_leaves, out_structure = flatten(output)
    results = [_alias(leaf) if _differentiable(leaf) else leaf for leaf in out_leaves]
    for leaf in results:
        if isinstance(leaf, Tensor) and _differentiable(leaf):
            index = len(call.outputs)
            call.outputs.append(leaf.value)
            register_tensor_hook(leaf.value, lambda g, i=index: call.on_output(i, g))
    return unflatten(out_structure, results)


def _differentiable(leaf: Any) -> bool:
    from kiln.frontend.tensor import Tensor

    return isinstance(leaf, Tensor) and leaf.dtype.is_float and leaf.value in ARRAYS and leaf.requires_grad


def _alias(tensor: Any) -> Any:
    """``tensor`` through an identity op: a value of its own, whose gradient is exactly this module's share."""
    from kiln.frontend.tensor import Tensor

    value = TraceContext.current().emit("tensor.broadcast_to", tensor.value, shape=tensor.value.type.shape)
    return Tensor(value)


__all__ = ["REACHED", "call_with_backward_hooks", "register_tensor_hook", "run_hooks"]
