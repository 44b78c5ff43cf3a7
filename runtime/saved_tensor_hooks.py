"""``torch.autograd.graph.saved_tensors_hooks`` for eager mode: pack what the backward will read, unpack it there.

```python
with kiln.autograd.graph.saved_tensors_hooks(lambda t: t.to(kiln.float16), lambda t: t.to(kiln.float32)):
    loss = model(x).sum()          # each op's saved tensors are packed now (here: kept in half precision)
loss.backward()                    # the backward reads what unpack gives back
```

kiln's eager backward reads forward values directly (``runtime/eager_backward.py``): a compiled backward is fed the
leaves' arrays and the forward results its ops read (``EagerChain._feed_saved``), a replayed one runs on the eager
values themselves. So when an eager op runs under hooks (``pack_saved``, called by ``EagerContext.emit``), the
values kiln's VJP rule of that op reads (``saved_reads``: the op built alone and differentiated for the operands that
require grad, ``runtime/saved_versions._derived``) are given to ``pack_hook``; at ``backward()`` each packed value the
backward reads is replaced by ``unpack_hook``'s tensor (``unpacked_arrays`` for a compiled backward,
``unpack_originals`` for a replayed one; ``unpacked_in`` unpacks in backward order). Identity hooks give the same
gradients, hooks that transform change exactly what the backward reads.

Where kiln differs from torch (it does not know torch's per-op saved set, only what its own rules read):

- the tensors packed are those kiln's rule reads: ``relu`` packs its input (torch its result), ``a * a`` packs ``a``
  once (torch twice: self and other), ``x / y`` packs ``x`` and ``y`` where torch may pack ``y`` alone;
- a value is packed once, by the first op that saves it under hooks, and unpacked once per backward that reads it:
  kiln's backward feeds one array per value to every op reading it (a value saved by two ops, torch: two
  pack/unpack pairs); so the hooks of the first op that saved a value decide what every reader gets;
- unpack runs at every backward (kiln keeps its graph, as ``retain_graph=True``), at the start of it;
- the tensor ``pack_hook`` gets is the parameter itself for a parameter read, else an eager tensor of the same
  values, ``grad_fn`` and ``requires_grad`` (a fresh handle: holding it keeps no forward value alive);
- an unpacked tensor of another dtype is cast back to the saved one's (the compiled backward's types are fixed);
  one of another shape is an error naming both shapes (torch's error comes from the op that reads it);
- under ``create_graph`` an unpacked value that requires grad is ``unpacked + (saved - stop_gradient(saved))``: the
  unpacked values exactly, with the saved value's derivative (a saved inf or nan makes it nan);
- ops run inside a pack or unpack hook, or by a backward without ``create_graph``, pack nothing; nor do Python
  numbers (0-d constants: ``x ** 2``'s exponent).
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from kiln.compiler.ir.core import Value

if TYPE_CHECKING:
    from kiln.runtime.eager_backward import EagerChain

HOOKS: list[tuple[Callable[[Any], Any], Callable[[Any], Any]]] = []
"""The entered ``(pack_hook, unpack_hook)`` pairs, innermost last: only the innermost applies, as torch's."""
_DISABLED: list[str | None] = [None]
"""``disable_saved_tensors_hooks``' message while it is in force."""
_QUIET = [0]
"""Above 0 while a hook or a plain backward runs: its ops pack nothing."""


@dataclass
class Packed:
    """What ``pack_hook`` returned for a value, and the ``unpack_hook`` that turns it back into a tensor."""

    packed: Any
    unpack: Callable[[Any], Any]


PACKED: "weakref.WeakKeyDictionary[Value, list[tuple[str, int, Packed]]]" = weakref.WeakKeyDictionary()
"""By each result of an op run under hooks: what it packed, as ``("operand" | "result", index, Packed)``; kept while
the op's results live (no entry refers to a value: a leaf read by many steps packs anew at each)."""


class saved_tensors_hooks:  # noqa: N801 - torch's name
    """Pack each tensor an eager op saves for backward with ``pack_hook``; the backward reads ``unpack_hook(packed)``."""

    def __init__(self, pack_hook: Callable[[Any], Any], unpack_hook: Callable[[Any], Any]):
        self.pack_hook = pack_hook
        self.unpack_hook = unpack_hook

    def __enter__(self) -> None:
        if _DISABLED[0] is not None:
            raise RuntimeError(_DISABLED[0])
        HOOKS.append((self.pack_hook, self.unpack_hook))

    def __exit__(self, *exc: object) -> None:
        HOOKS.pop()


class save_on_cpu(saved_tensors_hooks):  # noqa: N801 - torch's name
    """torch's offload of saved tensors to host memory: kiln's eager arrays are host arrays already, so packing keeps
    the values as they are (``pin_memory`` and ``device_type`` change nothing)."""

    def __init__(self, pin_memory: bool = False, device_type: str = "cuda"):
        super().__init__(_pack_on_cpu, _unpack_from_cpu)


def _pack_on_cpu(tensor: Any) -> tuple[Any, Any]:
    return getattr(tensor, "device", None), tensor


def _unpack_from_cpu(packed: tuple[Any, Any]) -> Any:
    return packed[1]


@contextlib.contextmanager
def disable_saved_tensors_hooks(error_message: str) -> Iterator[None]:
    """Refuse saved-tensor hooks inside: entering one raises ``RuntimeError(error_message)``, and so does entering this
    while hooks are in force, as torch's."""
    if HOOKS:
        raise RuntimeError(error_message)
    previous = _DISABLED[0]
    _DISABLED[0] = error_message
    try:
        yield
    finally:
        _DISABLED[0] = previous


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """No packing inside (a hook's own ops, a backward's)."""
    _QUIET[0] += 1
    try:
        yield
    finally:
        _QUIET[0] -= 1


def pack_saved(grad_enabled: bool, result: Any) -> None:
    """Pack, with the innermost hooks, the values the backward of the eager op that made ``result`` reads, if one of
    its operands requires grad (``EagerContext.emit`` calls it while hooks are entered)."""
    if _QUIET[0] or not grad_enabled:
        return
    from kiln.frontend.autograd_graph import requires_grad_of

    results = result if isinstance(result, tuple) else (result,)
    op = results[0].producer
    if op is None or op.name == "tensor.constant":
        return
    needs = tuple(requires_grad_of(v) for v in op.operands)
    if not any(needs):
        return
    operands, outputs = saved_reads(op, needs)
    slots = [("operand", i, op.operands[i]) for i in sorted(operands) if not _number(op.operands[i])]
    slots += [("result", i, results[i]) for i in sorted(outputs) if i < len(results)]
    if not slots:
        return
    pack, unpack = HOOKS[-1]
    made: dict[int, Packed] = {}
    with quiet():
        for _, _, value in slots:
            if id(value) not in made:  # a * a: one value, packed once (kiln's backward is fed it once)
                made[id(value)] = Packed(pack(_handle(value)), unpack)
    records = [(kind, index, made[id(value)]) for kind, index, value in slots]
    for result in results:
        PACKED[result] = records


def _number(value: Value) -> bool:
    """A Python number of the user's (``x ** 2``'s 2): a 0-d constant, which torch never saves as a tensor."""
    return value.producer is not None and value.producer.name == "tensor.constant" and not value.type.shape


def saved_reads(op: Any, needs: tuple[bool, ...]) -> tuple[frozenset[int], frozenset[int]]:
    """The operands and results kiln's VJP rule of ``op`` reads, for the operands in ``needs`` (cached per signature)."""
    from kiln.runtime.saved_versions import vjp_reads  # lazily: it builds on the eager runtime

    return vjp_reads(op, needs)


def _handle(value: Value) -> Any:
    """The tensor ``pack_hook`` gets for ``value``: a parameter read's parameter, else a fresh eager handle on the same
    array, producer and mark (holding it keeps ``value`` itself unreferenced, so ``PACKED`` frees with the chain)."""
    from kiln.frontend.eager_values import ARRAYS, GRAD_TENSORS, PARAMETERS
    from kiln.frontend.tensor import Tensor

    parameter = PARAMETERS.get(value, (None, 0))[0]
    if parameter is not None:
        return parameter
    shadow = Value(value.type, value.producer, value.index, value.name_hint)
    ARRAYS[shadow] = ARRAYS[value]
    marked = GRAD_TENSORS.get(value)
    if marked is not None:
        GRAD_TENSORS[shadow] = marked
    return Tensor(shadow)


def unpacked_in(chain: "EagerChain", wanted: list[Value]) -> dict[int, np.ndarray]:
    """By ``id``: the unpacked arrays of those of ``wanted`` (values the backward reads) that were packed, each by the
    first op (in forward order) that saved it under hooks; unpacked in backward order (the last saver's first), as
    torch's engine reaches them."""
    packed = _packed_in(chain)
    found = [(packed[id(v)], v) for v in dict.fromkeys(wanted) if id(v) in packed]
    arrays: dict[int, np.ndarray] = {}
    with quiet():
        for (_, entry), value in sorted(found, key=lambda item: -item[0][0]):
            arrays[id(value)] = _checked_array(entry.unpack(entry.packed), value)
    return arrays


def _packed_in(chain: "EagerChain") -> dict[int, tuple[int, Packed]]:
    """By ``id`` of the chain's values: the position of the first op that saved each under hooks, and its pack."""
    found: dict[int, tuple[int, Packed]] = {}
    done: set[int] = set()
    for (position, _), result in sorted(chain.op_results().items(), key=lambda item: item[0]):
        records = PACKED.get(result)
        if records is None or position in done:
            continue
        done.add(position)
        for kind, index, packed in records:
            value = chain.ops[position].operands[index] if kind == "operand" else chain.value_at(("op", position, index))
            if value is not None:
                found.setdefault(id(value), (position, packed))
    return found


def _checked_array(tensor: Any, value: Value) -> np.ndarray:
    from kiln.frontend.eager_values import eager_array
    from kiln.frontend.tensor import Tensor

    if not isinstance(tensor, Tensor):
        raise TypeError(f"Output of saved tensor unpack_hook expected to be a Tensor but got result of type "
                        f"{type(tensor).__name__}")
    array = eager_array(tensor)
    array = np.asarray(tensor.data if array is None else array)
    expected = tuple(value.type.shape)
    if array.shape != expected:
        raise RuntimeError(f"{_size_mismatch(expected, array.shape)} (saved_tensors_hooks: unpack_hook returned a "
                           f"tensor of shape {array.shape} for a saved tensor of shape {expected})")
    dtype = value.type.dtype.numpy
    return array if array.dtype == dtype else array.astype(dtype)


def _size_mismatch(expected: tuple[int, ...], got: tuple[int, ...]) -> str:
    """torch's sentence for the backward op that meets the unpacked tensor (the saved one ``a``, the unpacked ``b``)."""
    rank = max(len(expected), len(got))
    a = (1,) * (rank - len(expected)) + expected
    b = (1,) * (rank - len(got)) + got
    for dim, (m, n) in enumerate(zip(a, b)):
        if m != n:
            return f"The size of tensor a ({m}) must match the size of tensor b ({n}) at non-singleton dimension {dim}"
    return f"The shape of the unpacked tensor {got} differs from the saved one's {expected}"


def unpacked_arrays(chain: "EagerChain", inputs: list[np.ndarray], saved: Sequence[tuple[int, int]],
                    saved_arrays: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """A compiled backward's feed with each packed leaf and saved result replaced by its unpacked array."""
    results = [chain.value_at(("op", *reference)) for reference in saved]
    arrays = unpacked_in(chain, [v for v in [*chain.sources, *results] if v is not None])
    inputs = [arrays.get(id(source), array) for source, array in zip(chain.sources, inputs)]
    saved_arrays = [arrays.get(id(value), array) for value, array in zip(results, saved_arrays)]
    return inputs, saved_arrays


def unpack_originals(chain: "EagerChain", graph: Any, originals: dict[int, Value]) -> None:
    """A replayed backward's graph inputs (the leaves and the fed forward results: what its ops read) that were packed
    stand for eager values of the unpacked arrays from now on. Under ``create_graph`` (outside a plain backward's
    ``quiet``) one that requires grad keeps its chain, as torch's unpacked tensor keeps the saved one's ``grad_fn``:
    ``unpacked + (saved - stop_gradient(saved))``, the unpacked values exactly (for finite saved ones) with the
    saved value's derivative."""
    from kiln.frontend.autograd_graph import requires_grad_of
    from kiln.frontend.eager_values import eager_leaf
    from kiln.frontend.trace import TraceContext

    wanted = [originals[id(copy)] for copy in graph.inputs if id(copy) in originals]
    arrays = unpacked_in(chain, wanted)
    chained = _QUIET[0] == 0
    for copy in graph.inputs:
        original = originals.get(id(copy))
        if original is None or id(original) not in arrays:
            continue
        leaf = eager_leaf(arrays[id(original)]).value
        if chained and requires_grad_of(original):
            with quiet():
                context = TraceContext.current()
                zero = context.emit("tensor.sub", original, context.emit("tensor.stop_gradient", original))
                leaf = context.emit("tensor.add", leaf, zero)
        originals[id(copy)] = leaf


__all__ = ["HOOKS", "PACKED", "disable_saved_tensors_hooks", "pack_saved", "quiet", "save_on_cpu",
           "saved_reads", "saved_tensors_hooks", "unpack_originals", "unpacked_arrays", "unpacked_in"]
