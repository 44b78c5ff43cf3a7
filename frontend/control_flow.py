"""``torch.cond``: a branch on a tensor's value that a trace can hold.

```python
out = kiln.cond(x.sum() > 0, lambda x: x.sin(), lambda x: x.cos(), (x,))
```

Where ``pred`` is known (a Python bool or number, an eager tensor, a traced tensor made of constants), the branch it
picks runs, as torch's eager ``cond``. Where it is only known when the step runs (a traced value), both branches are
traced on ``operands`` and each output is ``where(pred, true_output, false_output)``: the values and gradients of the
branch taken (the other's gradient is zero), at the cost of computing both. So the branches must be pure functions
returning the same structure of tensors, of the same shapes and dtypes, as ``torch.cond`` requires.
"""

from __future__ import annotations

from typing import Any, Callable

from kiln.frontend.eager_data_dependent import concrete_array
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import located_error


def cond(pred: Any, true_fn: Callable[..., Any], false_fn: Callable[..., Any], operands: tuple | list = ()) -> Any:
    """``true_fn(*operands)`` if ``pred`` else ``false_fn(*operands)`` (see the module docstring)."""
    operands = tuple(operands)
    if not isinstance(pred, Tensor):
        return (true_fn if pred else false_fn)(*operands)
    if pred.numel() != 1:
        raise located_error(f"Expected pred to be bool or single-element tensor, but got a tensor of shape "
                            f"{list(pred.shape)} (kiln.cond: reduce it first, e.g. pred.all() or pred.any())")
    known = concrete_array(pred)
    if known is not None:
        return (true_fn if bool(known.reshape(())) else false_fn)(*operands)
    return _selected(pred.reshape(()).bool(), true_fn(*operands), false_fn(*operands))


def _selected(pred: Tensor, taken: Any, other: Any) -> Any:
    """``where(pred, taken, other)`` leaf by leaf of two outputs of the same structure."""
    from kiln.frontend.torch_functions import where

    if isinstance(taken, (tuple, list)) and isinstance(other, (tuple, list)) and len(taken) == len(other):
        return type(taken)(_selected(pred, a, b) for a, b in zip(taken, other))
    if isinstance(taken, dict) and isinstance(other, dict) and taken.keys() == other.keys():
        return {key: _selected(pred, taken[key], other[key]) for key in taken}
    if isinstance(taken, Tensor) and isinstance(other, Tensor):
        if tuple(taken.shape) != tuple(other.shape) or taken.dtype != other.dtype:
            raise located_error(f"kiln.cond: true_fn returned a tensor of shape {list(taken.shape)} {taken.dtype}, "
                                f"false_fn one of shape {list(other.shape)} {other.dtype}; both branches must return "
                                "the same shapes and dtypes (as torch.cond requires)")
        return where(pred, taken, other)
    raise located_error(f"kiln.cond: true_fn and false_fn returned different structures ({type(taken).__name__} and "
                        f"{type(other).__name__}); both must return the same tensors, tuples, lists or dicts of them")


__all__ = ["cond"]
