"""PyTorch's keyword forms that kiln's Python signatures lack.

- NumPy's names: every ATen function or method with a ``dim`` parameter also takes it as ``axis``, and ``keepdim`` as
  ``keepdims`` (torch's ``python_arg_parser`` ``numpy_compatibility_arg_names``): ``x.sum(axis=-1)`` (Spinning Up's
  SAC), ``x.mean(axis=0, keepdims=True)``, ``torch.cat(xs, axis=1)``.
- One keyword for a size that kiln takes as ``*dims``: ``x.permute(dims=(1, 0))``, ``torch.flip(x, dims=[1])``,
  ``x.reshape(shape=(3, 2))``, ``x.expand(size=...)``, ``x.new_ones(size=x.size())`` (HF Longformer)
  (``SEQUENCE_KEYWORDS``).

``accept_torch_keywords(Tensor)`` wraps the methods (``kiln.sum``, ``kiln.flip``... forward to them);
``kiln.cat``/``kiln.stack`` are wrapped one by one with ``numpy_keywords``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

ALIASES = {"axis": "dim", "keepdims": "keepdim"}
"""NumPy's keyword -> PyTorch's parameter it names."""

SEQUENCE_KEYWORDS = {"flip": "dims", "permute": "dims", "tile": "dims", "reshape": "shape", "view": "size",
                     "expand": "size", "repeat": "repeats", "new_zeros": "size", "new_ones": "size",
                     "new_empty": "size"}
"""Methods kiln takes as ``*sizes`` -> the one keyword PyTorch also takes the sequence as."""


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


def sequence_keyword(method: Callable[..., Any], keyword: str) -> Callable[..., Any]:
    """``method(self, *sizes)`` also taking the sizes as ``keyword=`` (one sequence), as PyTorch's."""

    @functools.wraps(method)
    def taking_keyword(self: Any, *sizes: Any, **kwargs: Any) -> Any:
        if keyword in kwargs:
            if sizes:
                raise TypeError(f"{method.__name__}() got the argument '{keyword}' twice, by position and by keyword")
            sizes = (kwargs.pop(keyword),)
        return method(self, *sizes, **kwargs)

    return taking_keyword


def accept_torch_keywords(cls: type) -> None:
    """Wrap every public plain method of ``cls`` (its own or inherited from a mixin) by ``numpy_keywords``, and the
    ``SEQUENCE_KEYWORDS`` ones by ``sequence_keyword``, on ``cls``."""
    for name in dir(cls):
        method = inspect.getattr_static(cls, name)
        if name.startswith("_") or not inspect.isfunction(method):
            continue
        wrapped = numpy_keywords(method)
        keyword = SEQUENCE_KEYWORDS.get(name)
        if keyword is not None and _takes_sizes_by_position_only(method, keyword):
            wrapped = sequence_keyword(wrapped, keyword)
        if wrapped is not method:
            setattr(cls, name, wrapped)


def _takes_sizes_by_position_only(method: Callable[..., Any], keyword: str) -> bool:
    """Whether ``keyword=`` is no keyword of ``method`` (absent, or the name of its ``*dims``)."""
    parameter = inspect.signature(method).parameters.get(keyword)
    return parameter is None or parameter.kind is inspect.Parameter.VAR_POSITIONAL
