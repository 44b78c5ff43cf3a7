"""``torch.cond`` and ``torch.while_loop``: a branch or loop on a tensor's value.

```python
out = kiln.cond(x.sum() > 0, lambda x: x.sin(), lambda x: x.cos(), (x,))
```

Where ``pred`` is known (a Python bool or number, an eager tensor, a traced tensor made of constants), the branch it
picks runs, as torch's eager ``cond``. Where it is only known when the step runs (a traced value), both branches are
traced on ``operands`` and each output is ``where(pred, true_output, false_output)``: the values and gradients of the
branch taken (the other's gradient is zero), at the cost of computing both. So the branches must be pure functions
returning the same structure of tensors, of the same shapes and dtypes, as ``torch.cond`` requires.

```python
i, x = kiln.while_loop(lambda i, x: i < 5, lambda i, x: (i + 1, x * 2), (kiln.tensor(0), x))
```

``while_loop`` runs ``body_fn`` while ``cond_fn`` holds, as torch's eager ``while_loop``: each step's ops are recorded, so
gradients reach the carried inputs. The body must return the carried inputs' structure, shapes and dtypes (torch's
checks, at the step that breaks them). A condition known only when a compiled step runs (a traced value) cannot
choose how many steps kiln traces: that is refused, naming the line (trace a fixed count with a Python loop, or select
with ``kiln.cond``).
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


def while_loop(cond_fn: Callable[..., Any], body_fn: Callable[..., Any], carried_inputs: tuple | list) -> tuple:
    """``carried = body_fn(*carried)`` while ``cond_fn(*carried)`` (see the module docstring); returns the last carried
    tuple."""
    if not isinstance(carried_inputs, (tuple, list)):
        raise located_error(f"kiln.while_loop: carried_inputs must be a tuple or list, got {type(carried_inputs).__name__}")
    carried = tuple(carried_inputs)
    while _holds(cond_fn(*carried)):
        stepped = body_fn(*carried)
        stepped = tuple(stepped) if isinstance(stepped, (tuple, list)) else (stepped,)
        _check_carried(carried, stepped)
        carried = stepped
    return carried


def _holds(pred: Any) -> bool:
    """The loop condition's value: a Python bool, or a one-element tensor known now."""
    if not isinstance(pred, Tensor):
        return bool(pred)
    if pred.numel() != 1:
        raise located_error(f"kiln.while_loop: cond_fn must return a boolean scalar tensor, got one of shape {list(pred.shape)}")
    known = concrete_array(pred)
    if known is None:
        raise located_error("kiln.while_loop: the loop condition depends on values known only when the compiled function "
                            "runs, so kiln cannot choose how many steps to trace; loop a fixed number of times in Python, "
                            "select with kiln.cond, or run the loop eagerly")
    return bool(known.reshape(()))


def _check_carried(carried: tuple, stepped: tuple) -> None:
    """torch's check: body_fn returns as many values as it carries, each of the same shape and dtype."""
    if len(stepped) != len(carried):
        raise located_error(f"kiln.while_loop: body_fn returned {len(stepped)} values for {len(carried)} carried inputs; "
                            "it must return the carried inputs' structure (as torch.while_loop requires)")
    for index, (before, after) in enumerate(zip(carried, stepped)):
        if isinstance(before, Tensor) != isinstance(after, Tensor) or (isinstance(before, Tensor) and (
                tuple(before.shape) != tuple(after.shape) or before.dtype != after.dtype)):
            raise located_error(f"kiln.while_loop: body_fn's output {index} is {_described(after)}, its carried input "
                                f"{_described(before)}; each must keep its shape and dtype (as torch.while_loop requires)")


def _described(value: Any) -> str:
    return f"a tensor of shape {list(value.shape)} {value.dtype}" if isinstance(value, Tensor) else f"a {type(value).__name__}"


__all__ = ["cond", "while_loop"]
