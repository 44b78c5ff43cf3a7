"""``torch._foreach_*``: one method applied to each tensor of a list, as EMA code calls them (timm's and diffusers'
``_foreach_lerp_(ema_params, params, 1 - decay)``, ``_foreach_mul_``/``_foreach_add_``, ``_foreach_norm``).

```python
kiln._foreach_mul_(ema_params, decay)                      # each in place; returns the list, as torch's
kiln._foreach_add_(ema_params, params, alpha=1 - decay)    # a list argument pairs up with the tensors
norms = kiln._foreach_norm(grads)                          # the out-of-place forms return a list
```

An argument that is a list or tuple gives each tensor its own entry; anything else (a number, a tensor) goes to every
call. PyTorch fuses the loop into few kernels; kiln calls the method per tensor (each is one eager op, or one traced op).
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

BINARY = ("add", "sub", "mul", "div", "lerp", "addcmul", "addcdiv", "pow", "maximum", "minimum", "clamp_min", "clamp_max")
UNARY = ("neg", "abs", "exp", "log", "sqrt", "sign", "sigmoid", "reciprocal", "sin", "cos", "tanh")
ONLY_OUT_OF_PLACE = ("norm", "max")
ONLY_IN_PLACE = ("zero_", "copy_")


def _entry(argument: Any, index: int, count: int, name: str) -> Any:
    if not isinstance(argument, (list, tuple)):
        return argument
    if len(argument) != count:
        raise ValueError(f"_foreach_{name}: a list argument of {len(argument)} entries for {count} tensors; "
                         "give one entry per tensor, or a single number or tensor for all")
    return argument[index]


_SCALAR_FORMS = {"maximum": "clamp_min", "minimum": "clamp_max", "maximum_": "clamp_min_", "minimum_": "clamp_max_"}
"""The methods for torch's Scalar overloads ``_foreach_maximum(tensors, 0.0)``: ``Tensor.maximum`` takes only a tensor."""


def _call(tensor: Any, method: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """``tensor.method(*args, **kwargs)``; an in-place form tensors lack (``maximum_``) copies the out-of-place result in."""
    if method in _SCALAR_FORMS and args and isinstance(args[0], numbers.Number):
        method = _SCALAR_FORMS[method]
    if hasattr(tensor, method) or not method.endswith("_"):
        return getattr(tensor, method)(*args, **kwargs)
    return tensor.copy_(getattr(tensor, method[:-1])(*args, **kwargs))


def _foreach(method: str) -> Callable[..., Any]:
    in_place = method.endswith("_")

    def apply(tensors: Sequence[Any], *args: Any, **kwargs: Any) -> Any:
        if not isinstance(tensors, (list, tuple)):
            raise TypeError(f"_foreach_{method} takes a list or tuple of tensors first, got {type(tensors).__name__}")
        count = len(tensors)
        results = [_call(tensor, method, [_entry(a, i, count, method) for a in args],
                         {k: _entry(v, i, count, method) for k, v in kwargs.items()})
                   for i, tensor in enumerate(tensors)]
        return tensors if in_place else results

    apply.__name__ = apply.__qualname__ = f"_foreach_{method}"
    apply.__doc__ = f"``tensor.{method}(...)`` for each tensor of the list (``torch._foreach_{method}``)."
    return apply


FOREACH = {f"_foreach_{method}": _foreach(method)
           for method in (*BINARY, *(m + "_" for m in BINARY), *UNARY, *(m + "_" for m in UNARY), *ONLY_OUT_OF_PLACE, *ONLY_IN_PLACE)}
globals().update(FOREACH)

__all__ = sorted(FOREACH)
