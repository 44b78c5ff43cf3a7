"""The objects a ``kiln.compile``'d function reaches besides its arguments, as ``torch.compile``'s guards see them: a
bound method's object, the closure's variables and the globals its code names, and through each function among
them (a wrapper's ``__wrapped__``, a ``functools.partial``'s function, a helper the code calls, a method of the bound
object it calls) theirs, and through
each plain object (an instance of a user's class) its attributes, a few levels deep.

Two checks walk them: the plain objects whose attributes a trace sets (``runtime/plain_object_writes.py``: TD3's
``self.total_it += 1`` on an agent held in a closure or a script's global) and the dicts and lists a trace must not
store its tensors into (``runtime/container_arguments.py``). Only the user's functions are walked into, never
kiln's, NumPy's, torch's or Python's own: their module-level tables are not the user's state.
"""

from __future__ import annotations

import functools
import sys
import sysconfig
import types
from typing import Any, Iterator

Reached = tuple[str, str, Any]
"""``(name, what holds it, object)``: ``("cache", "the closure variable", {...})``."""

_LIBRARIES = frozenset({"kiln", "numpy", "torch", "builtins"})
"""Top-level packages whose objects and functions are not the user's, besides Python's standard library."""


def reachable_objects(fn: Any, depth: int = 3) -> list[Reached]:
    """Each object ``fn`` reaches (``depth`` functions deep), once, with the name it is reached by; functions are
    walked through, not listed."""
    found: dict[int, Reached] = {}
    _walk(("fn", "the compiled function", fn), found, set(), depth)
    return list(found.values())


def reachable_with_module_attributes(fn: Any) -> list[Reached]:
    """``reachable_objects(fn)``, and the attributes of the modules among them and of their submodules (a module's
    ``self.batches`` iterator, ``self.rng`` generator)."""
    from kiln.frontend.module import Module  # lazily: the runtime builds on the frontend

    reached = reachable_objects(fn)
    modules = [item for _, _, item in reached if isinstance(item, Module)]
    for module in {id(m): m for root in modules for m in root.modules()}.values():
        reached += [(f"{type(module).__name__}.{name}", "the module attribute", value) for name, value in vars(module).items()]
    return reached


def reachable_functions(fn: Any, depth: int = 3) -> list[types.FunctionType]:
    """The functions ``fn`` reaches as ``reachable_objects`` walks them (the compiled function itself, the user's
    helpers, wrapped functions, methods called), and the ``forward`` of each user's module class among the modules
    it reaches (``fn`` itself where it is one) with the methods that ``forward`` calls on ``self``: the code whose
    globals and closure variables a trace reads (``runtime/namespace_reads.py``)."""
    from kiln.frontend.module import Module  # lazily: the runtime builds on the frontend

    found: dict[int, Reached] = {}
    functions: list[types.FunctionType] = []
    _walk(("fn", "the compiled function", fn), found, set(), depth, functions)
    modules = [item for _, _, item in found.values() if isinstance(item, Module)]
    classes = {type(module): None for root in modules for module in root.modules() if is_users(type(module))}
    for cls in classes:
        forward = getattr(cls, "forward", None)
        if isinstance(forward, types.FunctionType) and forward not in functions:
            functions += [forward, *(m for m in _class_methods_named(cls, forward) if m not in functions)]
    return functions


def is_users(item: Any) -> bool:
    """Whether ``item`` (an object or a function) comes from the user's code rather than a library's."""
    module = getattr(item, "__module__", None) if isinstance(item, (types.FunctionType, type)) else type(item).__module__
    return not _library((module or "builtins").split(".")[0])


def is_plain_object(item: Any) -> bool:
    """An instance of a user's class, a callable one too (timm's ``Mixup``, compiled itself): it has a ``__dict__``
    and is no Module, tensor, class or Python module, nor an object of kiln's (an optimizer, a user's subclass of
    one too: its state is captured otherwise), NumPy's, torch's or Python's own (a function, a ``partial``, a
    subclass of ``dict`` or ``Enum``)."""
    from kiln.frontend.module import Module  # lazily: the runtime builds on the frontend
    from kiln.frontend.tensor import Tensor

    if isinstance(item, (Module, Tensor, type, types.ModuleType)) or not hasattr(item, "__dict__"):
        return False
    return all(is_users(cls) for cls in type(item).__mro__[:-1])  # a user's LARS(Optimizer) is kiln's


@functools.lru_cache(maxsize=None)
def _library(package: str) -> bool:
    """Whether the top-level ``package`` is kiln, NumPy, torch or the standard library's (not a user's module that
    shadows one of its names)."""
    if package in _LIBRARIES:
        return True
    if package not in sys.stdlib_module_names:
        return False
    file = getattr(sys.modules.get(package), "__file__", None)
    return file is None or file.startswith(sysconfig.get_paths()["stdlib"])


def _walk(reached: Reached, found: dict[int, Reached], seen: set[int], depth: int,
          functions: list[types.FunctionType] | None = None) -> None:
    name, what, item = reached
    if item is None or id(item) in seen or depth < 0:
        return
    seen.add(id(item))
    if isinstance(item, types.MethodType):
        _walk((name, "the object of the bound method", item.__self__), found, seen, depth, functions)
        _walk((name, what, item.__func__), found, seen, depth, functions)
        for method in _methods_called(item):  # gail.py's update calling self.compute_grad_pen: traced into
            _walk((method.__name__, "a method it calls", method), found, seen, depth - 1, functions)
    elif isinstance(item, types.FunctionType):
        if is_users(item) or what == "the compiled function":
            if functions is not None:
                functions.append(item)
            for held in _held_by_function(item):
                _walk(held, found, seen, depth - 1, functions)
    elif isinstance(item, functools.partial):
        _walk((name, what, item.func), found, seen, depth - 1, functions)
    else:
        found.setdefault(id(item), reached)
        if is_plain_object(item):  # an agent's replay buffer, a config's sub-config
            for attribute, value in list(vars(item).items()):
                _walk((f"{name}.{attribute}", what, value), found, seen, depth - 1, functions)


def _methods_called(bound: types.MethodType) -> list[types.FunctionType]:
    """The user's methods of a bound method's class that its code names (``self.compute_grad_pen(...)``)."""
    function = bound.__func__
    if not isinstance(function, types.FunctionType):
        return []
    return _class_methods_named(type(bound.__self__), function)


def _class_methods_named(cls: type, function: types.FunctionType) -> list[types.FunctionType]:
    """The user's methods of ``cls`` that ``function``'s code names."""
    members = [getattr(cls, name, None) for name in function.__code__.co_names]
    return [member for member in members if isinstance(member, types.FunctionType) and is_users(member)]


def _held_by_function(function: types.FunctionType) -> Iterator[Reached]:
    """What ``function`` holds: its closure's variables, the globals its code names, the function it wraps."""
    code = function.__code__
    for name, cell in zip(code.co_freevars, function.__closure__ or ()):
        try:
            yield name, "the closure variable", cell.cell_contents
        except ValueError:  # an empty cell (a name assigned later)
            continue
    yield from ((name, "the global", function.__globals__[name]) for name in code.co_names if name in function.__globals__)
    yield "__wrapped__", "the wrapped function", getattr(function, "__wrapped__", None)


__all__ = ["Reached", "is_plain_object", "is_users", "reachable_functions", "reachable_objects",
           "reachable_with_module_attributes"]
