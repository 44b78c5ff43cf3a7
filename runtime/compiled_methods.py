"""Methods compiled in a class body (``@kiln.compile def forward(self, x)``), bound per instance as functions are:
``CompiledFunction.__get__`` gives each instance its own compiled function of its bound method, made on first access
and kept where it dies with the instance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.runtime.compiled_function import CompiledFunction


class _CompiledMethods(dict):
    """An instance's compiled methods by their class's ``method_key``. It lives in the instance's ``__dict__``, so it
    dies with the instance (the cycle instance -> compiled -> bound method -> instance is the collector's to free);
    held by the class's compiled function instead, it would keep every instance alive, since a bound trace holds its
    module. A copy or pickle of the instance starts empty, as ``Module.compile``'s: generated code is not copied,
    the copy's methods compile afresh for the copy."""

    def __copy__(self) -> _CompiledMethods:
        return _CompiledMethods()

    def __deepcopy__(self, memo: dict[int, Any]) -> _CompiledMethods:
        return _CompiledMethods()

    def __reduce__(self) -> tuple[Any, ...]:
        return _CompiledMethods, ()


_METHODS_ATTRIBUTE = "_kiln_compiled_methods"
_SLOTTED: dict[tuple[int, int], CompiledFunction] = {}
"""Compiled methods of instances without a ``__dict__`` (``__slots__``), by ``(id(method_key), id(instance))``: their
bound method holds the instance, which such a cache keeps alive."""


def bound_method(method: CompiledFunction, instance: Any) -> CompiledFunction:
    """``method`` bound to ``instance``: the one made on its first access, cached in the instance's ``__dict__``."""
    namespace = getattr(instance, "__dict__", None)
    if not isinstance(namespace, dict):
        return _bound_slotted(method, instance)
    cache = namespace.get(_METHODS_ATTRIBUTE)
    compiled = None if cache is None else cache.get(method.method_key)
    if compiled is not None and compiled.fn.__self__ is instance:
        return compiled
    if compiled is not None:  # a shallow copy shares the original's cache: the copy gets its own
        cache = None
    if cache is None:
        cache = namespace[_METHODS_ATTRIBUTE] = _CompiledMethods()
    compiled = cache[method.method_key] = method.bound_to(instance)
    return compiled


def _bound_slotted(method: CompiledFunction, instance: Any) -> CompiledFunction:
    """``bound_method`` for an instance without a ``__dict__``: cached in ``_SLOTTED``."""
    key = (id(method.method_key), id(instance))
    compiled = _SLOTTED.get(key)
    if compiled is None or compiled.fn.__self__ is not instance:
        compiled = _SLOTTED[key] = method.bound_to(instance)
    return compiled
