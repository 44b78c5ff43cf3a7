"""PyTorch's version-counter check at ``backward()``: refused only where the backward needs a value since overwritten.

PyTorch saves, per op, the tensors its backward reads (``mul`` both operands, ``add`` none, ``exp`` its result), and
only for the gradients it will compute (``x * w`` with ``x`` not requiring grad saves ``x`` alone, for ``w``'s).
``backward()`` refuses a graph one of whose saved tensors was since written in place. kiln finds an op's saved values
by building its VJP once, symbolically, and seeing which of the op's operands and results the gradients read
(``saved_by``), cached per op signature; ``TORCH_SAVES`` names the few ops whose rule reads other values than
PyTorch's saves (``relu``: PyTorch saves the result, kiln's rule reads the input).

```python
y = x + buf; buf.copy_(new); y.sum().backward()      # fine: add saved nothing
y = w * buf; buf.copy_(new); y.sum().backward()      # RuntimeError: ... [torch.FloatTensor [3]] is at version 1; ...
```

A value is overwritten when its parameter was updated since it was read (``eager_values.updates``), or when an eager
in-place write replaced it (``frontend/version_counter.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Hashable, Sequence

from kiln.compiler.autodiff.differentiate import differentiate_outputs
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.frontend.eager_values import COPIES, GRAD_TENSORS, PARAMETERS, updates
from kiln.frontend.inplace_leaf_checks import ModifiedSinceForwardError, located
from kiln.frontend.tensor_inplace import VIEW_OPS
from kiln.frontend.version_counter import OVERWRITTEN
from kiln.runtime.eager import op_signature

if TYPE_CHECKING:
    from kiln.runtime.eager_backward import EagerChain

Saved = tuple[frozenset[int], frozenset[int]]
"""The indices of an op's operands and of its results that its backward reads."""

TORCH_SAVES: dict[str, Callable[[Op, tuple[bool, ...]], Saved]] = {
    "tensor.relu": lambda op, needs: (frozenset(), frozenset({0})),  # threshold_backward(grad, result, 0)
    "nn.log_softmax": lambda op, needs: (frozenset(), frozenset({0})),  # grad - exp(result) * sum(grad)
    "tensor.div": lambda op, needs: _div_saves(op, needs),
    "nn.cross_entropy": lambda op, needs: (frozenset(range(1, len(op.operands))), frozenset()),  # log_softmax's own
}
"""Ops whose PyTorch backward saves other values than kiln's VJP rule reads, by which operands need a gradient."""


def _div_saves(op: Op, needs: tuple[bool, ...]) -> Saved:
    """``a / b`` saves ``b`` (and ``a`` for ``b``'s gradient); ``number / b`` is PyTorch's reciprocal, saving its
    result."""
    numerator = op.operands[0].producer
    if numerator is not None and numerator.name == "tensor.constant" and op.operands[0].type.rank == 0:
        return frozenset(), frozenset({0})
    return frozenset({1, *([0] if needs[1] else [])}), frozenset()


SHAPE_ONLY = frozenset({"tensor.numel"})
"""Ops that read their operand's shape, not its values: a backward reading them saves nothing."""

_SAVED_BY_OP: dict[Hashable, Saved] = {}
_SAVED_BY_CHAIN: dict[Hashable, list[tuple[Hashable, Hashable | None]]] = {}
CACHE_LIMIT = 4096


def saved_by(op: Op, needs: tuple[bool, ...]) -> Saved:
    """The operands and results ``op``'s backward reads, ``needs[i]`` saying whether operand ``i`` needs a
    gradient."""
    if op.name in TORCH_SAVES:
        return TORCH_SAVES[op.name](op, needs)
    known = vjp_reads(op, needs)
    if _compiled_call(op):
        known = known[0] | _viewed_by_residuals(op), known[1]
    return known


def vjp_reads(op: Op, needs: tuple[bool, ...]) -> Saved:
    """The operands and results kiln's VJP rule of ``op`` reads for the operands in ``needs``, cached per op
    signature (``saved_by`` without PyTorch's exceptions; the saved-tensor hooks pack these)."""
    key = (op_signature(op), needs)
    known = _SAVED_BY_OP.get(key)
    if known is None:
        try:
            known = _derived(op, needs)
        except Exception:  # noqa: BLE001 - a VJP this standalone build cannot make: every value counts as read
            known = frozenset(range(len(op.operands))), frozenset({0})
        if len(_SAVED_BY_OP) < CACHE_LIMIT:
            _SAVED_BY_OP[key] = known
    return known


def _compiled_call(op: Op) -> bool:
    """Whether ``op`` records a ``kiln.compile``d call (``runtime/compiled_training.py``), whose residuals are computed
    from its inputs inside (``_viewed_by_residuals``)."""
    from kiln.runtime.compiled_training import COMPILED_FORWARD  # lazily: it builds on the eager runtime

    return op.name == "custom.vjp" and str(op.attrs.get("function", "")).startswith(f"{COMPILED_FORWARD}(")


def _viewed_by_residuals(op: Op) -> frozenset[int]:
    """The inputs of a compiled call whose views its backward reads as residuals (a weight's transpose, computed inside
    the forward): PyTorch saves such a view, which shares the weight's version counter, so they count as saved. An
    input the residuals only computed from (a spectral norm's ``weight_u``, read under ``no_grad`` by the power
    iteration) does not: PyTorch saves none of it, and a second forward writing it leaves the first's backward alone.
    Every input where the forward as traced is not at hand, conservatively."""
    from kiln.runtime.compiled_training import SPLITS  # lazily: it builds on the eager runtime

    num_inputs = op.attrs["num_inputs"]
    split = SPLITS.get(op.attrs["backward"])
    if split is None or split.recompute is None:
        return frozenset(range(num_inputs))
    graph = split.recompute
    inputs = {id(value): index for index, value in enumerate(graph.inputs[:num_inputs])}
    first_residual = num_inputs + split.num_outputs
    residuals = graph.outputs[split.num_outputs + split.num_buffers:]
    bases = [_viewed(residuals[index - first_residual])[-1] for index in op.attrs["saved"] if index >= first_residual]
    return frozenset(inputs[id(base)] for base in bases if id(base) in inputs)


def _derived(op: Op, needs: tuple[bool, ...]) -> Saved:
    """Build ``op`` alone on fresh inputs, differentiate it for the operands in ``needs``, and walk the gradients back
    to the op's operands and results."""
    graph = Graph("saved_values")
    inputs = [graph.add_input(v.type, None) for v in op.operands]
    made = Builder(graph).op(op.name, *inputs, **op.attrs)
    results = list(made) if isinstance(made, tuple) else [made]
    outputs = [r for r in results if r.type.dtype.is_float]
    seeds = [graph.add_input(r.type, "gradient") for r in outputs]
    wrt = [v for v, needed in zip(inputs, needs) if needed and v.type.dtype.is_float]
    gradients = differentiate_outputs(graph, outputs, wrt, seeds) if wrt and outputs else []
    return _reached(gradients, inputs, results)


def _reached(gradients: Sequence[Value], inputs: Sequence[Value], results: Sequence[Value]) -> Saved:
    operand_index = {id(v): i for i, v in enumerate(inputs)}
    result_index = {id(v): i for i, v in enumerate(results)}
    operands: set[int] = set()
    reached_results: set[int] = set()
    seen: set[int] = set()
    pending = list(gradients)
    while pending:
        value = pending.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if id(value) in operand_index:
            operands.add(operand_index[id(value)])
        elif id(value) in result_index:
            reached_results.add(result_index[id(value)])
        elif value.producer is not None and value.producer.name not in SHAPE_ONLY:
            pending.extend(value.producer.operands)
    return frozenset(operands), frozenset(reached_results)


def check_saved_versions(chain: "EagerChain") -> None:
    """Refuse, as PyTorch's ``backward()``, a chain whose backward needs a value overwritten since the forward read
    it."""
    reads = [PARAMETERS.get(source) if source is not None else None for source in chain.sources]
    suspects = {id(value) for value in list(OVERWRITTEN.keys()) if chain.reaches(value)} if OVERWRITTEN else set()
    suspects.update(id(source) for source, read in zip(chain.sources, reads)
                    if read is not None and updates(read[0]) != read[1])
    if not suspects:
        return  # the common case, a few lookups: nothing the chain holds was written since
    for value, reader in reversed(_saved_values(chain, reads)):  # in backward order: PyTorch names the first it unpacks
        if any(id(base) in suspects for base in _viewed(value)):
            _check(value, reader)


def _saved_values(chain: "EagerChain", reads: list[tuple[Any, int] | None]) -> list[tuple[Value, Value | None]]:
    """The chain's values its backward reads, from its references cached per structure and which leaves need grad
    (``reads``: each input's parameter and its update count when read, or None)."""
    requiring = tuple(_requires_grad(source, read) for source, read in zip(chain.sources, reads))
    key = (chain.key, requiring)
    references = _SAVED_BY_CHAIN.get(key)
    if references is None:
        references = _saved_references(chain, requiring)
        if len(_SAVED_BY_CHAIN) < CACHE_LIMIT:
            _SAVED_BY_CHAIN[key] = references
    values = [(chain.value_at(reference), reader and chain.value_at(reader)) for reference, reader in references]
    return [(value, reader) for value, reader in values if value is not None]


def _requires_grad(source: Value | None, read: tuple[Any, int] | None) -> bool:
    if source is None or not source.type.dtype.is_float:
        return False
    return bool(read[0].requires_grad) if read is not None else source in GRAD_TENSORS


def _saved_references(chain: "EagerChain", requiring: tuple[bool, ...]) -> list[tuple[Hashable, Hashable | None]]:
    """The chain's references (``EagerChain.value_at``'s) to the values its backward reads, each with the reference
    to the result of the op reading it as an operand (None where it is that op's own result), walking the ops in
    order and propagating which values require grad (as PyTorch's ``requires_grad``: an op any of whose operands
    requires it, or a value ``kiln.autograd.grad`` differentiates)."""
    varying: set[Hashable] = {("input", index) for index, flag in enumerate(requiring) if flag}
    varying.update(chain.target_references())
    saved: list[tuple[Hashable, Hashable | None]] = []
    for position, op in enumerate(chain.ops):
        references = chain.operand_references(position)
        if references is None:
            continue
        needs = tuple(reference in varying or (reference[0] == "op" and reference[1] in varying)
                      for reference in references)
        if not any(needs):
            continue
        operands, results = saved_by(op, needs)
        saved.extend((references[index], ("op", position, 0)) for index in sorted(operands))
        saved.extend((("op", position, index), None) for index in sorted(results))
        varying.add(position)  # its float results require grad (an eager op keeps no results: they are not listed)
    return list(dict.fromkeys(saved))


def _check(value: Value, reader: Value | None) -> None:
    """Raise if ``value``, or the value it is a view of (which shares its version counter, as ``weight.T`` does the
    weight's), was overwritten, unless by the write ``reader`` (the result of the op reading it; None where ``value`` is
    its op's own result) is part of. PyTorch names the op that made a saved result, and the tensor's current maker
    for a saved operand."""
    for base in _viewed(value):
        parameter, read_at = PARAMETERS.get(base, (None, 0))
        if parameter is not None and updates(parameter) != read_at:
            raise _modified(value, None, updates(parameter), read_at, _parameter_hint(base))
        overwrite = OVERWRITTEN.get(base)
        if overwrite is not None and (reader is None or reader not in overwrite.written):
            producer = value.producer if reader is None else _grad_fn_maker(overwrite.holder(), value)
            raise _modified(value, producer, overwrite.counter.version, overwrite.version)


def _viewed(value: Value) -> list[Value]:
    """``value`` and, while it is made by a view op, the value it views (not past a ``clone()``'s copy, which kiln
    makes by a ``broadcast_to`` of its source: new storage in PyTorch)."""
    chain = [value]
    while chain[-1].producer is not None and chain[-1].producer.name in VIEW_OPS and chain[-1].producer.operands \
            and chain[-1] not in COPIES:
        chain.append(chain[-1].producer.operands[0])
    return chain


def _parameter_hint(leaf: Value) -> str:
    return (f" (a parameter of shape {tuple(leaf.type.shape)} was updated in place by optimizer.step() or an in-place "
            "method under no_grad after the forward read it)")


def _current_producer(holder: object) -> Op | None:
    value = getattr(holder, "__dict__", {}).get("_value")
    return None if value is None else value.producer


def _grad_fn_maker(holder: Any, saved: Value) -> Op | None:
    """The op PyTorch names for a saved operand since overwritten: its tensor's current ``grad_fn``, which it has only
    while it requires grad (``x += y`` with ``y`` requiring grad: Add; ``h.add_(1)`` of an ``h`` that does not: none);
    the saved value's maker where the tensor is gone."""
    if holder is None:
        return saved.producer
    return _current_producer(holder) if getattr(holder, "requires_grad", False) else None


_TORCH_TYPES = {"f32": "Float", "f64": "Double", "f16": "Half", "bf16": "BFloat16", "i64": "Long", "i32": "Int",
                "i16": "Short", "i8": "Char", "u8": "Byte", "bool": "Bool"}


def _modified(value: Value, producer: Op | None, current: int, expected: int,
              hint: str = "") -> ModifiedSinceForwardError:
    """PyTorch's message (its tensor type and shape, the op that made it, the versions), with the user's line."""
    shape = ", ".join(str(dim) for dim in value.type.shape)
    made_by = f", which is output {value.index} of {_node_name(producer)}," if producer is not None else ""
    return located(ModifiedSinceForwardError,
                   "one of the variables needed for gradient computation has been modified by an inplace operation: "
                   f"[torch.{_TORCH_TYPES.get(value.type.dtype.value, 'Float')}Tensor [{shape}]]{made_by} is at "
                   f"version {current}; expected version {expected} instead{hint}. Hint: the backward of an op that "
                   "read it needs its old value (as PyTorch's saved tensors); call backward() before the in-place "
                   "write, or write a copy instead (y = x.clone(); y.add_(1))")


def _node_name(op: Op) -> str:
    """PyTorch's autograd node name for a kiln op, near enough: ``tensor.exp`` -> ``Exp``, ``tensor.reduce_sum`` ->
    ``ReduceSum``."""
    return "".join(part.capitalize() for part in op.name.split(".")[-1].split("_"))


__all__ = ["SHAPE_ONLY", "TORCH_SAVES", "check_saved_versions", "saved_by"]
