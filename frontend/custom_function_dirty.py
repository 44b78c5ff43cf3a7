"""``ctx.mark_dirty``: a ``kiln.autograd.Function`` whose ``forward`` writes an input in place and returns it.

```python
class Scale(kiln.autograd.Function):
    @staticmethod
    def forward(ctx, x, w):
        x.mul_(w)
        ctx.mark_dirty(x)        # x was written in place: it is the output
        return x

y = Scale.apply(a, w)            # y is a; a holds the product, its grad_fn is Scale's op, its version counts the write
```

As PyTorch's: the caller's tensor is the output (the same object), written in place (``tensor_inplace.in_place``: its
version counter bumps, its views follow, an array it shares with NumPy takes the values, a leaf that requires grad
refuses while gradients are on), and the gradient reaching it goes through ``backward`` to the input as it was before
the write. A tensor marked dirty that ``forward`` does not return is PyTorch's error. Eagerly and traced alike.
"""

from __future__ import annotations

from typing import Any, Sequence

from kiln.compiler.errors import TraceError
from kiln.compiler.ir.core import Value


class DirtyNotReturnedError(TraceError, RuntimeError):
    """An input marked dirty that ``forward`` did not return: a ``RuntimeError``, as PyTorch's."""


def dirty_callers(cls: type, ctx: Any, callers: tuple[Any, ...], args: tuple[Any, ...], outputs: list[Any]) -> dict[int, Any]:
    """The caller's tensor for each argument ``forward`` marked dirty, by the ``id`` of the tensor ``forward`` got;
    refuses one that is no argument, or that ``forward`` did not return."""
    from kiln.frontend.inplace_leaf_checks import located  # lazily: the checks build on the tensors
    from kiln.frontend.trace import located_error

    by_argument = {id(arg): caller for caller, arg in zip(callers, args)}
    returned = {id(output) for output in outputs}
    dirty = {}
    for tensor in ctx.dirty:
        if id(tensor) not in by_argument:
            raise located_error(f"{cls.__name__}.forward: mark_dirty takes the inputs forward wrote in place; got a "
                                "tensor that is no input of apply")
        if id(tensor) not in returned:
            raise located(DirtyNotReturnedError, "Some elements marked as dirty during the forward method were not "
                          "returned as output. The inputs that are modified inplace must all be outputs of the Function. "
                          f"({cls.__name__}.forward: return the tensor it wrote in place)")
        dirty[id(tensor)] = by_argument[id(tensor)]
    return dirty


def written_into_dirty(cls: type, outputs: Sequence[Any], values: Sequence[Value], dirty: dict[int, Any]) -> list[Any]:
    """The op's results, each a new tensor, except that an output ``forward`` marked dirty is written into the
    caller's tensor, which is returned in its place."""
    from kiln.frontend.tensor import Tensor
    from kiln.frontend.tensor_inplace import in_place

    results: list[Any] = []
    for output, value in zip(outputs, values):
        caller = dirty.get(id(output))
        if caller is None:
            results.append(Tensor(value))
            continue
        results.append(in_place(caller, f"{cls.__name__}.apply (mark_dirty)", lambda _, value=value: Tensor(value)))
    return results


__all__ = ["DirtyNotReturnedError", "dirty_callers", "written_into_dirty"]
