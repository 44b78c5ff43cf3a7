"""NumPy's ufuncs on a parameter's ``.data`` in a trace, as the tensor operations PyTorch code means by them.

In PyTorch ``p.data`` is a tensor, so ``p.data * 0.5``, ``2 - p.data`` or
``p.data *= 0.99`` are tensor operations. In kiln it is a NumPy array (a
``TorchArray``) and those are NumPy ufuncs: eagerly the same numbers, but in a
``kiln.compile``'d function NumPy would compute them once, when the trace ran,
leaving a constant that is stale from the next call. ``traced_ufunc`` gives the
traced operation instead, reading the parameter's traced value (writing it, for
``out=`` the array itself: ``p.data *= 0.99`` is ``p.data.mul_(0.99)``). A
ufunc without a tensor counterpart here raises, naming the line, so the call
runs eagerly (or ``fullgraph=True`` says why) rather than use a stale value.
"""

from __future__ import annotations

import operator
from typing import Any, Callable

_OPERATORS: dict[str, Callable[..., Any]] = {
    "add": operator.add, "subtract": operator.sub, "multiply": operator.mul, "true_divide": operator.truediv,
    "divide": operator.truediv, "floor_divide": operator.floordiv, "remainder": operator.mod, "power": operator.pow,
    "matmul": operator.matmul, "negative": operator.neg, "positive": operator.pos, "absolute": operator.abs,
    "greater": operator.gt, "greater_equal": operator.ge, "less": operator.lt, "less_equal": operator.le,
    "equal": operator.eq, "not_equal": operator.ne,
}
"""Ufuncs that are Python operators: applied as operators, a tensor's reflected ones serve ``2 - p.data``."""

_METHODS = {
    "exp": "exp", "log": "log", "sqrt": "sqrt", "tanh": "tanh", "sin": "sin", "cos": "cos", "sign": "sign",
    "floor": "floor", "ceil": "ceil", "rint": "round", "square": "square", "reciprocal": "reciprocal",
    "clip": "clamp",
}
"""Ufuncs that are methods of the first argument, a tensor (NumPy's name: the tensor's)."""
_EXTREMA = {"maximum": "tensor.maximum", "minimum": "tensor.minimum"}
"""Ufuncs applied as kiln ops: either argument a tensor or a number, as NumPy takes them."""

_IN_PLACE = {"add": "add_", "subtract": "sub_", "multiply": "mul_", "true_divide": "div_", "divide": "div_",
             "power": "pow_", "clip": "clamp_"}
"""``p.data += x`` (the ufunc with ``out=`` its own first argument): the tensor's in-place method."""


def traced_ufunc(ufunc: Any, method: str, inputs: tuple[Any, ...], out: tuple[Any, ...], traced: Callable[[Any], Any]) -> Any:
    """``ufunc(*inputs, out=out)`` on traced values: ``traced(x)`` gives the parameter a ``.data`` stands for, or None."""
    from kiln.frontend.torch_array import traced_method  # lazily: that module dispatches here

    name = ufunc.__name__
    if method != "__call__" or len(out) > 1 or (out and (out[0] is not inputs[0] or name not in _IN_PLACE)):
        raise untraceable(name)
    if out:
        return traced_method(traced(out[0]), _IN_PLACE[name])(*inputs[1:])
    values = [_value(x, traced) for x in inputs]
    if name in _OPERATORS:
        return _OPERATORS[name](*values)
    if name in _EXTREMA:  # NumPy takes a number here (np.maximum(p.data, 0.0)), which Tensor.maximum refuses, as torch's
        from kiln.frontend.tensor import apply  # lazily: the tensor builds on this module's users

        return apply(_EXTREMA[name], *values)
    first = values[0]
    if name not in _METHODS or not hasattr(first, _METHODS[name]):
        raise untraceable(name)
    return getattr(first, _METHODS[name])(*values[1:])


def _value(argument: Any, traced: Callable[[Any], Any]) -> Any:
    parameter = traced(argument)
    return argument if parameter is None else parameter.detach()


def untraceable(name: str) -> Exception:
    """The error for NumPy's ``name`` (a ufunc or function) of a parameter's ``.data`` that a trace cannot record."""
    from kiln.frontend.trace import located_error  # lazily: the trace builds on this module's users

    return located_error(f"NumPy's {name}() of a parameter's .data in a traced function: its values exist only when "
                         "the compiled function runs; use the tensor's methods (p.data.sum(), p.data.mul_(0.9), "
                         "p.detach().exp()), which the trace records")


__all__ = ["traced_ufunc", "untraceable"]
