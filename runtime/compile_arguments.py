"""What ``kiln.compile`` takes beyond kiln's own arguments: ``torch.compile``'s, and keyword arguments of a call.

```python
model = kiln.compile(model, mode="max-autotune", fullgraph=True)   # torch.compile's arguments, checked
@kiln.compile                                                       # and its decorator forms
def f(x): ...
model.compile()                                                     # nn.Module.compile: in place
out = model(src, src_key_padding_mask=mask, need_weights=False)     # keywords: tensors traced, the rest fixed
```

A call's keyword arguments become a function of positional arrays only (``with_keywords``): array or tensor
keywords are inputs after the positional ones; any other argument, keyword or positional (a flag, a string, None), is
fixed in the trace and part of the compiled variant's key, so another value traces anew, as ``torch.compile`` guards
on it. Positional numbers stay inputs (0-d arrays), as they always were; so does each tensor of a list, tuple or dict
holding tensors (micro-batches; lucidrains' ``Electra.forward(input, noise={...})``), positional or keyword, the
nesting and its other leaves (a flag beside the tensors) part of the key. Such a container was once fixed as a whole,
keyed by its repr, which prints tensors rounded: a call with other values close by reused the graph holding the first
call's tensors, silently wrong.

A Python number input is traced as a wrapped number (``numbers_weak``): it promotes as the number itself would
(``long_tensor * scale`` is float32, not float64), one variant serving every value. Where the trace needs its value (a
branch ``if t == 0:``, ``range(n)``), the number is traced as the constant it is at that call instead
(``numbers_fixed``): one variant per value, as ``torch.compile`` specialises a Python int.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.frontend.trace import input_names
from kiln.runtime.container_arguments import check_stores, snapshot
from kiln.runtime.plain_object_writes import watching_owners
from kiln.runtime.reachable_objects import is_plain_object, reachable_objects
from kiln.runtime.pytree import Structure, flatten, flatten_keeping, unflatten

TORCH_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
"""``torch.compile``'s modes: kiln compiles one way for each (its pass pipeline and memory plan)."""
TORCH_BACKENDS = {"inductor": "numpy"}
"""``torch.compile``'s default backend's name, as kiln's default backend."""
UNCOMPILED_BACKENDS = ("eager", "aot_eager")
"""``torch.compile``'s debugging backends, which run the function's own ops: kiln then returns it uncompiled."""


def checked_backend(backend: str, mode: str | None, options: dict[str, Any] | None) -> str:
    """kiln's backend for ``torch.compile``'s ``backend``, ``mode`` and ``options``, or a clear error."""
    if mode not in TORCH_MODES:
        raise KilnError(f"kiln.compile: mode={mode!r} is not one of torch.compile's modes {list(TORCH_MODES[1:])}")
    if options:
        raise KilnError(f"kiln.compile: options={options!r} are TorchInductor's settings, which kiln's compiler has not; "
                        "choose kiln's passes with pipeline= instead")
    return TORCH_BACKENDS.get(backend, backend)


def with_keywords(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Callable[..., Any], tuple[Any, ...], Hashable]:
    """``fn`` as a function of its array inputs only, those inputs, and what its variant's key adds: which positional
    arguments and which keywords are arrays, and the values of the fixed ones (anything else: ``None``, a flag, a
    string)."""
    trees = {k: _array_leaves(value) for k, value in [*enumerate(args), *kwargs.items()] if _holds_arrays(value)}
    positions = [k for k, value in enumerate(args) if _is_input(value) or k in trees]
    names = [name for name, value in kwargs.items() if _is_array(value) or name in trees]
    fixed = {name: value for name, value in kwargs.items() if name not in names}

    def call(*inputs: Any) -> Any:
        leaves = iter(inputs)
        given = {k: unflatten(trees[k][1], [next(leaves) for _ in trees[k][0]]) if k in trees else next(leaves)
                 for k in (*positions, *names)}
        positional = [given[k] if k in given else a for k, a in enumerate(args)]
        keywords = {**fixed, **{name: given[name] for name in names}}
        containers = [(arguments[k], "its argument", snapshot(a)) for k, a in enumerate(positional)]
        containers += [(name, "its argument", snapshot(value)) for name, value in keywords.items()]
        containers += [(labels[k], "its argument", snapshot(values[k])) for k in trees]  # the caller's, rebuilt above:
        # a hook's closure may still store into it (Whisper's kv_cache)
        owners = [owner for a in (*positional, *fixed.values()) if is_plain_object(a)  # cfg.scale read: guarded
                  for _, _, owner in reachable_objects(a, depth=2) if is_plain_object(owner)]
        result = watching_owners(fn, owners)(*positional, **keywords)
        check_stores(containers)  # stores into a dict or list argument: refused (runtime/container_arguments.py)
        return result

    arguments, values = input_names(fn, len(args)), {**dict(enumerate(args)), **kwargs}
    labels = {k: arguments[k] if isinstance(k, int) else k for k in (*positions, *names)}
    leaves = [(f"{labels[k]}{i}" if k in trees else labels[k], leaf)
              for k in (*positions, *names) for i, leaf in enumerate(trees[k][0] if k in trees else [values[k]])]
    fixed_key = tuple((k, _key(a)) for k, a in enumerate(args) if k not in positions) + tuple((k, _key(v)) for k, v in fixed.items())
    key = (tuple(positions), tuple(names), fixed_key, tuple((k, _key(structure)) for k, (_, structure) in trees.items()))
    return named_like(call, fn, [name for name, _ in leaves]), tuple(leaf for _, leaf in leaves), key


def number_positions(inputs: tuple[Any, ...]) -> tuple[int, ...]:
    """Where a call's inputs are Python numbers (int or float; a bool is a flag, fixed)."""
    return tuple(k for k, value in enumerate(inputs) if isinstance(value, (int, float)) and not isinstance(value, bool))


def numbers_weak(fn: Callable[..., Any], positions: tuple[int, ...]) -> Callable[..., Any]:
    """``fn`` traced with its inputs at ``positions`` marked as Python numbers (torch's wrapped numbers), which
    ``result_type`` ranks below tensors; ``fn`` itself where there are none. Carries ``numbers`` and ``unwrapped``
    for ``numbers_fixed``."""
    if not positions:
        return fn

    def call(*inputs: Any) -> Any:
        for k in positions:
            inputs[k].wrapped_number = True
        return fn(*inputs)

    call.numbers, call.unwrapped = positions, fn  # type: ignore[attr-defined]
    return named_like(call, fn)


def numbers_fixed(weak: Callable[..., Any], values: tuple[Any, ...]) -> Callable[..., Any]:
    """``numbers_weak``'s function traced with its numbers as the constants ``values`` (their inputs left unread)."""
    fixed = dict(zip(weak.numbers, values))  # type: ignore[attr-defined]
    fn = weak.unwrapped  # type: ignore[attr-defined]

    def call(*inputs: Any) -> Any:
        return fn(*[fixed.get(k, value) for k, value in enumerate(inputs)])

    return named_like(call, fn)


def traced_arguments(args: tuple[Any, ...]) -> bool:
    """Whether every positional argument is an input (an array, a tensor or a number): the plain call's fast path."""
    return all(_is_input(a) for a in args)


def _holds_arrays(value: Any) -> bool:
    """A list, tuple or dict of arrays and tensors only, or one with a tensor among its (nested) leaves: each array or
    tensor is an input, as ``torch.compile`` takes a list or dict of tensors (not a constant of the trace, fixed by its
    values). NumPy arrays beside other leaves stay fixed (OpenKE's batch dict with its ``"mode"`` string, read by
    ``torch.from_numpy``), as NumPy code needs their values."""
    from kiln.frontend.tensor import Tensor

    if not isinstance(value, (list, tuple, dict)):
        return False
    arrays = _array_leaves(value)[0]
    return bool(arrays) and (any(isinstance(a, Tensor) for a in arrays) or all(_is_array(leaf) for leaf in flatten(value)[0]))


def _array_leaves(value: Any) -> tuple[list[Any], Structure]:
    """The arrays and tensors in ``value``, and its structure holding the other leaves as constants."""
    return flatten_keeping(value, _is_array)


def _is_input(value: Any) -> bool:
    return _is_array(value) or isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def named_like(call: Callable[..., Any], fn: Callable[..., Any], names: list[str] | None = None) -> Callable[..., Any]:
    """``call``, a wrapper of ``fn``, traced under ``fn``'s names: the graph's, its inputs' (``names``, else ``fn``'s
    own) and its parameters' (the module's)."""
    call.__name__ = getattr(fn, "__name__", None) or type(fn).__name__
    call.__self__ = getattr(fn, "__self__", fn)  # type: ignore[attr-defined]
    call.input_names = names if names is not None else getattr(fn, "input_names", None)  # type: ignore[attr-defined]
    if call.input_names is None:  # type: ignore[attr-defined]
        call.forward = getattr(fn, "forward", fn)  # type: ignore[attr-defined]  # input_names reads its signature
    return call


def _is_array(value: Any) -> bool:
    from kiln.frontend.tensor import Tensor

    return isinstance(value, (np.ndarray, Tensor))


def _key(value: Any) -> Hashable:
    """A fixed keyword's value as a key: itself where hashable (``True``, ``3``, ``None``), else its repr."""
    try:
        hash(value)
        return type(value), value
    except TypeError:
        return type(value), repr(value)


__all__ = ["TORCH_MODES", "UNCOMPILED_BACKENDS", "checked_backend", "named_like", "traced_arguments", "with_keywords"]
