"""PyTorch's NumPy-style keyword aliases: every ATen function or method with a ``dim`` parameter also takes it as
``axis``, and ``keepdim`` as ``keepdims`` (torch's ``python_arg_parser`` ``numpy_compatibility_arg_names``), so
``x.sum(axis=-1)`` (Spinning Up's SAC), ``x.mean(axis=0, keepdims=True)`` and ``torch.sum(x, axis=1)`` run as in
PyTorch. ``accept_numpy_keywords(Tensor)`` wraps the methods; ``kiln.sum``/``kiln.mean``... forward to them, and
``kiln.cat``/``kiln.stack`` are wrapped one by one with ``numpy_keywords``."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

ALIASES = {"axis": "dim", "keepdims": "keepdim"}
"""NumPy's keyword -> PyTorch's parameter it names."""


def numpy_keywords(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` taking ``axis=``/``keepdims=`` for its ``dim``/``keepdim`` parameters; itself where it has neither
    (or already takes the NumPy name)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return function
    renames = {alias: name for alias, name in ALIASES.items() if name in parameters and alias not in parameters}
    if not renames:
        return function

    @functools.wraps(function)
    def accepting_aliases(*args: Any, **kwargs: Any) -> Any:
        if kwargs:
            for alias, name in renames.items():
                if alias in kwargs:
                    if name in kwargs:
                        raise TypeError(f"{function.__name__}() got the argument '{name}' twice, also as '{alias}' "
                                        f"(PyTorch's NumPy-style name for it): give one")
                    kwargs[name] = kwargs.pop(alias)
        return function(*args, **kwargs)

    return accepting_aliases


def accept_numpy_keywords(cls: type) -> None:
    """Wrap every public plain method of ``cls`` (its own or inherited from a mixin) by ``numpy_keywords``, on ``cls``."""
    for name in dir(cls):
        if name.startswith("_"):
            continue
        method = inspect.getattr_static(cls, name)
        if inspect.isfunction(method):
            wrapped = numpy_keywords(method)
            if wrapped is not method:
                setattr(cls, name, wrapped)
