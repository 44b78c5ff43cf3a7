"""A gradient through its tensor's or parameter's ``register_hook`` hooks, one loop for every backward that calls
them: eager (``runtime/eager_hooks.py``, ``runtime/eager_backward.py``), eager with ``create_graph=True``
(``runtime/eager_create_graph.py``) and traced into a compiled step (``frontend/traced_hooks.py``).

As torch's, each hook is given the gradient so far and a tensor it returns replaces it. What it returns must be a
tensor of the gradient's shape and dtype: torch raises "hook 'h' has changed the size of value"; here the error names
the hook and the line that defines it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from kiln.compiler.errors import TraceError
from kiln.frontend.trace import SourceLocation, located_error


class HookResultError(TraceError, TypeError):
    """A gradient hook returned something other than None or a tensor of the gradient's shape and dtype. A
    ``TypeError`` as torch's for a result that is no tensor, and a ``RuntimeError`` (``TraceError``) as torch's for
    one of another size or type."""


def hooked_gradient(hooks: Iterable[Callable[[Any], Any]], grad: Any) -> Any:
    """``grad`` (a tensor) through ``hooks`` in order; a hook returning None leaves it as it is."""
    for hook in list(hooks):
        result = hook(grad)
        if result is not None:
            _check_result(hook, result, grad)
            grad = result
    return grad


def _check_result(hook: Callable[[Any], Any], result: Any, grad: Any) -> None:
    if not _is_tensor(result):
        _refuse(hook, f"returned {type(result).__name__}")
    if tuple(result.shape) != tuple(grad.shape):
        _refuse(hook, f"changed the gradient's shape from {tuple(grad.shape)} to {tuple(result.shape)}")
    if result.dtype != grad.dtype:
        _refuse(hook, f"changed the gradient's dtype from {grad.dtype} to {result.dtype}")


def _is_tensor(result: Any) -> bool:
    from kiln.frontend.tensor import Tensor  # lazily: the tensor builds on the trace

    return isinstance(result, Tensor) or getattr(result, "is_sparse", False) is True


def _refuse(hook: Callable[[Any], Any], what: str) -> None:
    code = getattr(hook, "__code__", None)
    location = None if code is None else SourceLocation(code.co_filename, code.co_firstlineno, code.co_name)
    name = getattr(hook, "__name__", type(hook).__name__)
    raise located_error(f"gradient hook {name!r} {what}; a hook returns None or a tensor of the gradient's shape and "
                        "dtype (the new gradient)", location, kind=HookResultError)


__all__ = ["HookResultError", "hooked_gradient"]
