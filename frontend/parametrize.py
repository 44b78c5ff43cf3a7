"""PyTorch's ``torch.nn.utils.parametrize`` for kiln modules: a tensor computed from trained originals.

```python
class Symmetric(nn.Module):
    def forward(self, X):
        return X.triu() + X.triu(1).mT

layer = nn.Linear(3, 3)
parametrize.register_parametrization(layer, "weight", Symmetric())
layer.parametrizations.weight.original     # the trained Parameter (state_dict: parametrizations.weight.original)
step = kiln.compile_train_step(layer, loss, kiln.optim.SGD(layer.parameters(), lr=0.1))
```

As PyTorch's, registration moves the tensor to ``module.parametrizations.<name>`` (a ``ParametrizationList``, whose
``original``, or ``original0``, ``original1``... when ``right_inverse`` returns a tuple, are the Parameters or Buffers
that train and that ``state_dict`` names), swaps the module's class for a ``Parametrized<Class>`` subclass and gives it
a property ``<name>``. Several parametrizations registered on one tensor chain, the first applied first.

Reading the property inside a trace (a layer's ``forward`` reading ``self.weight``) traces the parametrizations on the
originals, so the graph computes the weight from them and the gradient reaches them. Outside a trace it runs the
parametrizations eagerly (``runtime/eager.py``) and gives an eager tensor of the originals (``print(layer.weight)``,
``layer.weight.numpy()``; ``backward()`` reaches the originals), with the side effects PyTorch's read has (a spectral
norm in training mode runs its power iteration and keeps the new vectors). Assigning to it outside a
trace writes ``right_inverse(value)`` into the originals; inside a trace it is refused (a step owns the update).

``right_inverse`` runs as PyTorch's: at registration when a parametrization defines it, and on assignment. It is traced
and evaluated the same way, so it is written with the same tensor operations as ``forward``; one that needs NumPy itself
(a QR decomposition, a random draw) is marked ``@on_arrays`` and then receives and returns NumPy arrays.
"""

from __future__ import annotations

import copyreg
from contextlib import contextmanager
from copy import deepcopy
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.frontend.containers import ModuleDict, ModuleList
from kiln.frontend.module import ArrayLeaf, Buffer, Module, Parameter, _to_numpy
from kiln.frontend.trace import TensorSpec, TraceContext, located_error, trace_context


class ParametrizationError(KilnError, ValueError):
    """A parametrization that cannot be registered, evaluated or removed (a ``ValueError``, as PyTorch raises)."""


# Caching ----------------------------------------------------------------------------------------------------------

_cache_depth = 0
_cache: dict[tuple[int, str], tuple[Any, Any]] = {}
"""``(id(module), name) -> (trace context or None, value)`` while ``cached()`` is active."""


@contextmanager
def cached() -> Iterator[None]:
    """Inside, each parametrized tensor is computed once and reused (PyTorch's ``parametrize.cached``).

    In a trace this matters less than in PyTorch: the graph's common-subexpression pass merges repeated pure
    parametrizations anyway. It still changes what is computed where a parametrization has an effect: a spectral norm
    read twice in training mode runs its power iteration twice, as PyTorch's does, but once inside ``cached()``.
    Outside a trace it saves re-evaluating the parametrization on each read."""
    global _cache_depth
    _cache_depth += 1
    try:
        yield
    finally:
        _cache_depth -= 1
        if not _cache_depth:
            _cache.clear()


def on_arrays(right_inverse: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a ``right_inverse`` that takes and returns NumPy arrays (not traced): one needing ``np.linalg`` or randomness."""
    right_inverse._kiln_on_arrays = True  # type: ignore[attr-defined]
    return right_inverse


# Evaluation outside a trace ---------------------------------------------------------------------------------------


def evaluate(fn: Callable[..., Any], *arrays: np.ndarray) -> Any:
    """``fn`` run once on ``arrays`` through a compiled graph (NumPy backend): an array, or a tuple for a tuple result.
    Buffers ``fn`` writes (``self._u.copy_(...)``) get their new values, as in PyTorch's eager call."""
    from kiln.backends import get_backend
    from kiln.compiler.passes.manager import PassManager
    from kiln.runtime.train_step import DEFAULT_PIPELINE

    returned: dict[str, bool] = {}

    def traced(*inputs: Any) -> Any:
        result = fn(*inputs)
        returned["tuple"] = isinstance(result, (tuple, list))
        return result

    specs = [TensorSpec(array.shape, str(array.dtype)) for array in arrays]
    context = trace_context(traced, *specs, name=getattr(fn, "__name__", type(fn).__name__), what="the parametrization's result")
    if context.seed_input is not None:
        raise ParametrizationError(f"{_describe(fn)} draws random numbers; kiln evaluates parametrizations outside a "
                                   "trace without a seed: draw them with NumPy in an @on_arrays right_inverse instead")
    buffers = [buffer for buffer, _ in context.buffer_updates.values()]
    context.graph.outputs += [value for _, value in context.buffer_updates.values()]
    PassManager(DEFAULT_PIPELINE).run(context.graph)
    outputs = [np.asarray(o) for o in get_backend("numpy").compile(context.graph)(*arrays, *[p.data for p in context.parameters])]
    for buffer, update in zip(buffers, outputs[len(outputs) - len(buffers):]):
        np.copyto(buffer.data, update)
    results = outputs[: len(outputs) - len(buffers)]
    return tuple(results) if returned["tuple"] else results[0]


def _describe(fn: Any) -> str:
    owner = getattr(fn, "__self__", fn)
    return type(owner).__name__ if isinstance(owner, Module) else getattr(fn, "__qualname__", repr(fn))


def _right_inverse(parametrization: Module, value: Any) -> Any:
    """``parametrization.right_inverse(value)`` on arrays: called directly when ``@on_arrays``, else traced and evaluated."""
    method = parametrization.right_inverse
    if getattr(method, "_kiln_on_arrays", False):
        return method(value)
    return evaluate(method, np.asarray(value))


# The list of parametrizations on one tensor -----------------------------------------------------------------------


class ParametrizationList(ModuleList):
    """The parametrizations of one tensor, in order, and the originals they start from (``original`` or
    ``original0``, ``original1``...): PyTorch's ``ParametrizationList``. Calling it computes the tensor."""

    def __init__(self, modules: Sequence[Module], original: Parameter, unsafe: bool = False):
        if len(modules) == 0:
            raise ParametrizationError("ParametrizationList requires one or more modules.")
        super().__init__(modules)
        self.unsafe = unsafe
        new = original.data
        for module in reversed(list(self)):
            if hasattr(module, "right_inverse"):
                try:
                    new = _right_inverse(module, new)
                except NotImplementedError:
                    pass
        self.is_tensor = isinstance(new, np.ndarray)
        if self.is_tensor:
            _set(original, new, "right_inverse(original)")
            setattr(self, "original", original)
        elif isinstance(new, (tuple, list)):
            self.ntensors = len(new)
            for index, array in enumerate(new):
                array = np.asarray(array)
                setattr(self, f"original{index}", Buffer(array) if isinstance(original, Buffer) else Parameter(array, original.requires_grad))
        else:
            raise ParametrizationError(f"'right_inverse' must return a Tensor or a Sequence of tensors (list, tuple...). Got {type(new).__name__}")
        if self.is_tensor:
            self.ntensors = 1
        if not unsafe:
            _check_same(evaluate(self), original.data, "unparametrized", "parametrized", "the `unsafe` flag is enabled")

    def originals(self) -> list[Parameter]:
        return [self.original] if self.is_tensor else [getattr(self, f"original{i}") for i in range(self.ntensors)]

    def forward(self) -> Any:
        modules = list(self)
        x = modules[0](*self.originals())
        for module in modules[1:]:
            x = module(x)
        return x

    def right_inverse(self, value: Any) -> None:
        """Write ``value`` into the originals through every ``right_inverse``, last parametrization first."""
        if TraceContext.active():
            raise located_error("assigning to a parametrized tensor inside a traced function: a compiled step updates the "
                                "originals through its optimizer; assign outside the trace (it runs right_inverse)")
        value = np.asarray(_to_numpy(value.data if isinstance(value, ArrayLeaf) else value))
        for module in reversed(list(self)):
            if not hasattr(module, "right_inverse"):
                raise ParametrizationError(f"parametrization {type(module).__name__} does not implement right_inverse.")
            value = _right_inverse(module, value)
        if self.is_tensor:
            if not isinstance(value, np.ndarray):
                raise ParametrizationError(f"`right_inverse` should return a tensor. Got {type(value).__name__}")
            _set(self.original, value, "the tensor returned by `right_inverse`")
            return
        if not isinstance(value, (tuple, list)) or len(value) != self.ntensors:
            raise ParametrizationError(f"'right_inverse' must return a sequence of {self.ntensors} tensors. Got {type(value).__name__}.")
        for original, array in zip(self.originals(), value):
            _set(original, np.asarray(array), "a tensor returned by `right_inverse`")


def _set(original: Parameter, array: np.ndarray, what: str) -> None:
    """PyTorch's ``original.set_(array)``: the same Parameter object (optimizers keep it) now holds ``array``."""
    if array.dtype != original.data.dtype:
        raise ParametrizationError(f"{what} has dtype {array.dtype} while the original has dtype {original.data.dtype}; "
                                   "a right_inverse returning one tensor may not change the dtype")
    if array.shape == original.data.shape:
        np.copyto(original.data, array)
    else:
        original.data = np.array(array)


def _check_same(new: Any, old: np.ndarray, old_name: str, new_name: str, unless: str) -> None:
    if not isinstance(new, np.ndarray):
        raise ParametrizationError(f"A parametrization must return a tensor. Got {type(new).__name__}.")
    for what, a, b in (("dtype", old.dtype, new.dtype), ("shape", old.shape, new.shape)):
        if a != b:
            raise ParametrizationError(f"Registering a parametrization may not change the {what} of the tensor, unless {unless}.\n"
                                       f"{old_name} {what}: {a}\n{new_name} {what}: {b}")


# Registration -----------------------------------------------------------------------------------------------------


def register_parametrization(module: Module, tensor_name: str, parametrization: Module, *, unsafe: bool = False) -> Module:
    """Replace ``module.<tensor_name>`` (a Parameter, a Buffer or an already parametrized tensor) by
    ``parametrization(original)``, as ``torch.nn.utils.parametrize.register_parametrization``."""
    if not isinstance(module, Module):
        raise ParametrizationError(f"register_parametrization: the module must be a kiln Module, got {type(module).__name__}")
    if not isinstance(parametrization, Module):
        raise ParametrizationError(f"register_parametrization({tensor_name!r}): the parametrization must be a kiln nn.Module "
                                   f"with a forward, got {type(parametrization).__name__}; wrap a function in a Module whose "
                                   "forward calls it")
    parametrization.train(module.training)
    if is_parametrized(module, tensor_name):
        if not unsafe:
            _check_appended(module, tensor_name, parametrization)
        parametrizations = module.parametrizations[tensor_name]
        parametrizations.append(parametrization)
        parametrizations.unsafe |= unsafe
    elif tensor_name in module._parameters or tensor_name in module._buffers:
        original = module._parameters[tensor_name] if tensor_name in module._parameters else module._buffers[tensor_name]
        parametrizations = ParametrizationList([parametrization], original, unsafe=unsafe)
        delattr(module, tensor_name)
        if not is_parametrized(module):
            if not injected(module):
                _inject_new_class(module)
            module.parametrizations = ModuleDict()
        _inject_property(module, tensor_name)
        module.parametrizations[tensor_name] = parametrizations
    else:
        raise ParametrizationError(f"Module '{type(module).__name__}' does not have a parameter, a buffer, or a parametrized "
                                   f"element with name '{tensor_name}' (it has: {', '.join([*module._parameters, *module._buffers]) or 'none'})")
    return module


def _check_appended(module: Module, tensor_name: str, parametrization: Module) -> None:
    """A parametrization added to a chain keeps the tensor's shape and dtype, and so does its ``right_inverse``."""
    current = evaluate(module.parametrizations[tensor_name])
    new = evaluate(parametrization, current)
    _check_same(new, current, f"module.{tensor_name}", f"parametrization(module.{tensor_name})", "the `unsafe` flag is enabled")
    if hasattr(parametrization, "right_inverse"):
        try:
            inverse = _right_inverse(parametrization, new)
        except NotImplementedError:
            return
        _check_same(inverse, current, f"module.{tensor_name}", "parametrization.right_inverse's", "the `unsafe` flag is enabled")


def is_parametrized(module: Module, tensor_name: str | None = None) -> bool:
    """Whether ``module`` has a parametrization (on ``tensor_name``, when given)."""
    parametrizations = module.__dict__.get("parametrizations")
    if not isinstance(parametrizations, ModuleDict):
        return False
    return len(parametrizations) > 0 if tensor_name is None else tensor_name in parametrizations


def remove_parametrizations(module: Module, tensor_name: str, leave_parametrized: bool = True) -> Module:
    """Make ``module.<tensor_name>`` a plain Parameter (or Buffer) again: the current parametrized value when
    ``leave_parametrized`` (evaluated as a read is), else the original (only for a single original)."""
    if not is_parametrized(module, tensor_name):
        raise ParametrizationError(f"Module {type(module).__name__} does not have a parametrization on {tensor_name}")
    parametrizations = module.parametrizations[tensor_name]
    if parametrizations.is_tensor:
        original = parametrizations.original
        if leave_parametrized:
            value = evaluate(parametrizations)
            if value.dtype == original.data.dtype and value.shape == original.data.shape:
                np.copyto(original.data, value)
            else:
                original.data = value  # an unsafe parametrization changed the shape or dtype, as PyTorch's set_
    elif leave_parametrized:
        first = parametrizations.original0
        value = evaluate(parametrizations)
        original = Parameter(value, first.requires_grad) if not isinstance(first, Buffer) else Buffer(value)
    else:
        raise ParametrizationError("Cannot leave unparametrized (`leave_parametrized=False`) a tensor that is parametrized "
                                   "in terms of a sequence of tensors.")
    delattr(type(module), tensor_name)
    del module.parametrizations[tensor_name]
    setattr(module, tensor_name, original)
    if not is_parametrized(module):
        delattr(module, "parametrizations")
        if not module.__dict__.get("_legacy_weight_norms"):  # the legacy weight_norm's property lives there too
            object.__setattr__(module, "__class__", type(module).__bases__[0])
    return module


def type_before_parametrizations(module: Module) -> type:
    """The module's class before parametrizations swapped it for ``Parametrized<Class>``."""
    return type(module).__bases__[0] if injected(module) else type(module)


def injected(module: Module) -> bool:
    """Whether ``module``'s class is its own ``Parametrized<Class>``."""
    return bool(type(module).__dict__.get("_kiln_parametrized", False))


# The parametrized class and its properties ------------------------------------------------------------------------


def _inject_new_class(module: Module) -> None:
    """Give ``module`` its own subclass ``Parametrized<Class>``, where the parametrized tensors' properties live."""
    cls = type(module)

    def __setattr__(self: Module, name: str, value: Any) -> None:  # noqa: N807
        if is_parametrized(self, name):
            self.parametrizations[name].right_inverse(value)  # PyTorch's property setter
        else:
            cls.__setattr__(self, name, value)

    def __getstate__(self: Module) -> Any:  # noqa: N807
        raise ParametrizationError("a parametrized module is saved through its state_dict() (kiln.save, "
                                   "np.savez(**model.state_dict())), not pickled: its class is made at registration")

    def __deepcopy__(self: Module, memo: dict[int, Any]) -> Module:  # noqa: N807
        if id(self) in memo:
            return memo[id(self)]
        replica = self.__new__(type(self))
        memo[id(self)] = replica
        for slot in copyreg._slotnames(type(self)):  # type: ignore[attr-defined]
            if hasattr(self, slot):
                object.__setattr__(replica, slot, deepcopy(getattr(self, slot), memo))
        replica.__dict__.update(deepcopy(self.__dict__, memo))
        return replica

    namespace = {"__setattr__": __setattr__, "__getstate__": __getstate__, "__module__": cls.__module__, "_kiln_parametrized": True}
    if not hasattr(cls, "__deepcopy__"):
        namespace["__deepcopy__"] = __deepcopy__
    object.__setattr__(module, "__class__", type(f"Parametrized{cls.__name__}", (cls,), namespace))


def _inject_property(module: Module, tensor_name: str) -> None:
    if tensor_name in module.__dict__ or hasattr(type(module), tensor_name):
        raise ParametrizationError(f"Module already has an attribute named '{tensor_name}'")

    def get_parametrized(self: Module) -> Any:
        return parametrized_value(self, tensor_name)

    def set_original(self: Module, value: Any) -> None:
        self.parametrizations[tensor_name].right_inverse(value)

    setattr(type(module), tensor_name, property(get_parametrized, set_original, doc=f"``{tensor_name}``, parametrized"))


def parametrized_value(module: Module, tensor_name: str) -> Any:
    """The tensor's value: traced in a trace, else an eager tensor; reused inside ``cached()``."""
    parametrizations = module.parametrizations[tensor_name]
    context = TraceContext.current()  # outside a trace the eager context: the value is an eager tensor of the originals
    key = (id(module), tensor_name)
    if _cache_depth and key in _cache and _cache[key][0] is context:
        return _cache[key][1]
    value = parametrizations() if context is not None else evaluate(parametrizations)
    if _cache_depth:
        _cache[key] = (context, value)
    return value


__all__ = ["ParametrizationError", "ParametrizationList", "cached", "is_parametrized", "on_arrays", "register_parametrization",
           "remove_parametrizations", "type_before_parametrizations"]
