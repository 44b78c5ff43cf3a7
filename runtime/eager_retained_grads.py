"""``retain_grad()`` tensors filled by ``kiln.autograd.grad``, as PyTorch's engine fills them.

torch's ``retain_grad()`` is a hook on the tensor's autograd node: any backward that runs the node, an
``autograd.grad`` too, adds the gradient flowing through it to ``.grad``. ``autograd.grad`` runs only the nodes
between its outputs and its inputs, so a retained tensor on such a path (an input itself included) gets its
gradient there; one off every path (upstream of the inputs, or on a branch they do not feed) keeps its ``.grad``.

```python
y = x * 2; y.retain_grad()
(g,) = kiln.autograd.grad((y * y).sum(), x)   # y.grad is 2y, as torch's; x.grad stays None
```
"""

from __future__ import annotations

from typing import Any, Sequence

from kiln.compiler.ir.core import Value
from kiln.frontend.eager_values import GRAD_TENSORS, trained_parameter
from kiln.frontend.module import ArrayLeaf
from kiln.runtime.eager_backward import accumulate_grad, chain_of, marked_tensors


def retained_between(outputs: Sequence[Value], inputs: Sequence[Any]) -> list[tuple[Any, Value]]:
    """The live ``retain_grad()``'d tensors (with the value the outputs read) that the outputs depend on and that
    depend on an input or are one."""
    if not GRAD_TENSORS:
        return []
    found: dict[int, tuple[Any, Value]] = {}
    for output in outputs:
        found.update((id(tensor), (tensor, value)) for tensor, value in marked_tensors(output) if tensor.retains_grad)
    targets = {id(i.value) for i in inputs if not isinstance(i, ArrayLeaf)}
    parameters = {id(i) for i in inputs if isinstance(i, ArrayLeaf)}
    return [(tensor, value) for tensor, value in found.values() if _reaches(value, targets, parameters)]


def _reaches(value: Value, targets: set[int], parameters: set[int]) -> bool:
    """Whether ``value`` is one of the ``targets`` or is computed from one, or from a read of one of the
    ``parameters``."""
    if id(value) in targets:
        return True
    return any(id(operand) in targets or id(trained_parameter(operand)) in parameters
               for op in chain_of([value]) for operand in op.operands)


def fill_retained(retained: Sequence[tuple[Any, Value]], grads: Sequence[Any], create_graph: bool) -> None:
    """Add each retained tensor's gradient to its ``.grad``: an array, or under ``create_graph`` a tensor keeping its
    chain (``accumulate_with_graph``), as ``backward()`` fills them."""
    from kiln.runtime.eager_create_graph import accumulate_with_graph  # lazily: it builds on eager_grad

    for (tensor, _), grad in zip(retained, grads):
        if grad is None:
            continue
        if create_graph:
            accumulate_with_graph(tensor, grad)
        else:
            accumulate_grad(tensor, grad.numpy() if hasattr(grad, "numpy") else grad)


__all__ = ["fill_retained", "retained_between"]
