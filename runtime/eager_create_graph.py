"""``loss.backward(create_graph=True)`` in eager mode: gradients that keep their chain, accumulated into ``.grad``.

```python
loss.backward(create_graph=True)                      # each p.grad is an eager tensor with a chain, as PyTorch's
penalty = sum((p.grad ** 2).sum() for p in model.parameters())
penalty.backward()                                    # adds d(penalty)/dp: second-order terms, into the same .grad
fast = [p - lr * p.grad for p in model.parameters()]  # MAML: the outer loss differentiates through the inner step
```

The loss's chain is the one a plain ``backward()`` differentiates (``runtime/eager_backward.py``); its gradient
ops are not compiled but replayed eagerly on the chain's own values (``eager_grad.replayed``, as
``kiln.autograd.grad(..., create_graph=True)``), so each gradient is an eager tensor whose chain reaches back to the
parameters and marked tensors the loss read. As PyTorch's ``AccumulateGrad`` under ``create_graph``:

- a ``.grad`` that is None becomes that tensor (a new ``Tensor`` object: in-place methods on it rebind only it);
- an existing ``.grad`` (a plain backward's NumPy array, or a chained tensor) becomes ``grad + new``, a tensor whose
  chain keeps both.

A later plain ``backward()`` adds its arrays to a chained ``.grad`` in place (``p.grad += g``, which rebinds the tensor
and keeps its chain; the added array is a constant, so a derivative through ``.grad`` is what PyTorch's is). After a
plain backward, ``.grad`` stays the NumPy array it always was: only ``create_graph=True`` makes it a tensor.
Parameter hooks get the chained gradient (a tensor they return replaces it), then post-accumulate hooks run.

A chained ``.grad`` keeps the forward it differentiates alive (and, through its reads, the parameter itself) until
it is dropped: set it to None (``optimizer.zero_grad()``) after use, as PyTorch's warning asks of its reference cycle.
"""

from __future__ import annotations

from typing import Any, Sequence

from kiln.frontend.eager_values import eager_value
from kiln.frontend.hooked_gradient import hooked_gradient
from kiln.frontend.module import ArrayLeaf
from kiln.frontend.trace import TraceContext
from kiln.runtime.compiled_double_backward import differentiable_residuals
from kiln.runtime.eager_backward import after_accumulation, backward_chain, seed_array, still_requires_grad
from kiln.runtime.eager_grad import replayed


def backward_with_graph(loss: Any, gradient: Any = None, inputs: Any = None) -> None:
    """``loss.backward(gradient, inputs=inputs, create_graph=True)``: add d(loss)/d(owner), as an eager tensor with a
    chain, to the ``.grad`` of each trained parameter and marked tensor the loss depends on (or of ``inputs``)."""
    differentiable_residuals([loss.value], "backward(create_graph=True)")
    chain, owners = backward_chain(loss, inputs, "backward(create_graph=True)")
    grads = replayed(chain, [_seed(loss, gradient)])
    for owner, grad in _per_owner(owners, grads):
        if still_requires_grad(owner):
            accumulate_with_graph(owner, grad)
    after_accumulation([p for p in chain.trained if still_requires_grad(p)])


def _seed(loss: Any, gradient: Any) -> Any:
    """``gradient`` as an eager tensor when it is one of the loss's type, or a parameter (its chain joins the
    gradients'), else as an array of the loss's dtype and shape (None: a scalar loss's implicit 1)."""
    tensor = eager_reading(gradient)
    if tensor is not None and tensor.value.type == loss.value.type:
        return tensor
    return seed_array(loss.value, gradient, "backward(create_graph=True): the tensor", "gradient=")


def eager_reading(tensor: Any) -> Any:
    """An eager tensor as it is; a ``Parameter`` as an eager tensor reading it (a gradient through it reaches the
    parameter); anything else None."""
    if isinstance(tensor, ArrayLeaf):
        from kiln.frontend.tensor import Tensor  # lazily: the tensor builds on the runtime's eager ops

        return Tensor(TraceContext.current().value_of(tensor))
    return tensor if eager_value(tensor) is not None else None


def _per_owner(owners: Sequence[Any], grads: Sequence[Any]) -> list[tuple[Any, Any]]:
    """One chained gradient per parameter or tensor (a parameter read several times sums its reads'), through the
    parameter's ``register_hook`` hooks, called once on its whole gradient as PyTorch's."""
    summed: dict[int, tuple[Any, Any]] = {}
    for owner, grad in zip(owners, grads):
        previous = summed.get(id(owner))
        summed[id(owner)] = (owner, grad if previous is None else previous[1] + grad)
    return [(owner, _parameter_hooks(owner, grad)) for owner, grad in summed.values()]


def _parameter_hooks(owner: Any, grad: Any) -> Any:
    """``grad`` through a parameter's ``register_hook`` hooks in order (a tensor a hook returns replaces it)."""
    return hooked_gradient(owner.__dict__.get("_grad_hooks", {}).values(), grad) if isinstance(owner, ArrayLeaf) else grad


def accumulate_with_graph(owner: Any, grad: Any) -> None:
    """``owner.grad`` becomes ``grad`` (a new tensor object holding its value) or, if it has one, ``owner.grad + grad``:
    in both cases an eager tensor whose chain is kept, as PyTorch's ``AccumulateGrad`` under ``create_graph``."""
    from kiln.frontend.tensor import Tensor  # lazily: the tensor builds on the runtime's eager ops

    current = getattr(owner, "grad", None)
    owner.grad = Tensor(eager_value(grad)) if current is None else grad + current  # tensor first: an array + tensor is NumPy's


__all__ = ["accumulate_with_graph", "backward_with_graph", "eager_reading"]
