"""``kiln.compile(model)`` in a PyTorch training loop: the forward runs compiled and is one op of the eager chain.

As ``torch.compile``'s AOTAutograd: the forward is traced once per input signature and differentiated in the IR,
and the joint graph is split in two. The forward graph also returns what the backward reads (residuals:
activations, masks); the backward graph maps those and the outputs' cotangents to the gradients. Each call runs
the compiled forward and records one ``custom.vjp`` op on the eager chain, whose ``backward`` is the backward
graph: ``loss.backward()`` inlines it into the one function it compiles per chain structure, so the loss computed
eagerly after the model, ``.grad``, hooks and the optimizer work as before, without the forward's per-op dispatch.

```python
model = kiln.compile(model)
for x, y in loader:
    loss = F.cross_entropy(model(x), y)   # model(x): one compiled function, then one op on the chain
    optimizer.zero_grad(); loss.backward(); optimizer.step()
```

The residuals are constants to the recorded op. A ``create_graph`` backward through it first recomputes them eagerly
from the call's operands (``runtime/compiled_double_backward.py``), so a second derivative reaches the parameters
through them too (AOTAutograd refuses double backward).
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Container, Sequence

import numpy as np

from kiln.backends import get_backend
from kiln.compiler.autodiff.differentiate import differentiate_outputs
from kiln.compiler.ir.core import Graph, Op, Value, clone_graph, drop_all_operands
from kiln.compiler.ir.types import DType
from kiln.compiler.passes.cse import CSE, freeze_graph_key
from kiln.compiler.passes.decompose import decompose_where
from kiln.compiler.passes.manager import PassManager
from kiln.frontend.eager_values import ARRAYS, PARAMETERS, count_update, eager_leaf, eager_value
from kiln.frontend.lifted_tensors import LiftedTensors, lifted_after_parameters, lifting_eager_tensors
from kiln.frontend.module import ArrayLeaf, Parameter
from kiln.frontend.sparse_embedding import TRAINED_LOOKUPS
from kiln.frontend.trace import TensorSpec, TraceContext, trace_context, user_location
from kiln.frontend.value_guards import ValueGuards, guards_of, specializing_on
from kiln.frontend.traced_requires_grad import traced_requires_grad
from kiln.compiler.errors import KilnError
from kiln.runtime.argument_writes import refuse_argument_writes, values_before
from kiln.runtime.attribute_writes import AttributeWrites
from kiln.runtime.compile_arguments import named_like
from kiln.runtime.compiled_write_back import write_buffer
from kiln.runtime.executable import Executable
from kiln.runtime.pytree import Structure, flatten, unflatten
from kiln.runtime.rebound_names import bindings_guard

COMPILED_FORWARD = "kiln.compile"
"""The ``function`` attribute of the ``custom.vjp`` a compiled call records (before the module's name)."""
_BACKWARD_KEYS = itertools.count()


@dataclass
class SplitForward:
    """A traced forward split from its backward: ``graph`` returns the outputs, then the buffer updates, then the
    residuals; ``backward`` takes the saved values (``saved`` names each as a ``custom.vjp`` operand), then one
    cotangent per output, and returns the gradients of the inputs ``gradients`` names."""

    graph: Graph
    backward: Graph
    num_outputs: int
    num_buffers: int
    saved: tuple[int, ...]
    gradients: tuple[int, ...]
    recompute: Graph | None = None
    """The forward as traced (before the passes), for a double backward to run eagerly (``SPLITS``)."""


SPLITS: "weakref.WeakKeyDictionary[Graph, SplitForward]" = weakref.WeakKeyDictionary()
"""The split each recorded call's backward graph came from (by the ``custom.vjp``'s ``backward`` attribute)."""


def split_forward(graph: Graph, num_inputs: int, num_outputs: int, differentiated: Sequence[int],
                  kernels: Container[str] = ()) -> SplitForward:
    """Differentiate ``graph``'s first ``num_outputs`` outputs (the floating-point ones) with respect to the inputs
    ``differentiated`` names and split the result: ``graph`` keeps the forward, which now also returns the residuals.
    The first ``num_inputs`` inputs are the call's operands (arrays, then parameters); any later one (the seed) is read
    by the backward only as a residual. Composites without a kernel in ``kernels`` (the backend's) are expanded first,
    as the backend would, so that what the backward recomputes of them merges with the forward's (``_merged``)."""
    outputs = graph.outputs[:num_outputs]
    cotangents = [graph.add_input(value.type, "grad") for value in outputs]
    chosen = [(value, cotangent) for value, cotangent in zip(outputs, cotangents) if value.type.dtype.is_float]
    wrt = [graph.inputs[index] for index in differentiated]
    grads = differentiate_outputs(graph, [value for value, _ in chosen], wrt, [c for _, c in chosen])
    grads = _merged(graph, grads, kernels)
    forward, needed = _ops_reaching(graph.outputs), _ops_reaching(grads)
    backward, saved_values = _backward_graph(graph, [op for op in graph.ops if id(op) in needed and id(op) not in forward],
                                             cotangents, grads)
    drop_all_operands([op for op in graph.ops if id(op) not in forward])
    graph.ops = [op for op in graph.ops if id(op) in forward]
    graph.inputs = graph.inputs[: len(graph.inputs) - len(cotangents)]
    operand_of = {id(value): index for index, value in enumerate(graph.inputs[:num_inputs])}
    residuals = [value for value in saved_values if id(value) not in operand_of]
    num_buffers = len(graph.outputs) - num_outputs
    graph.outputs = [*graph.outputs, *residuals]
    first_residual = num_inputs + num_outputs
    residual_index = {id(value): first_residual + k for k, value in enumerate(residuals)}
    saved = tuple(operand_of.get(id(value), residual_index.get(id(value))) for value in saved_values)
    return SplitForward(graph, backward, num_outputs, num_buffers, saved, tuple(differentiated))  # type: ignore[arg-type]


def _merged(graph: Graph, grads: list[Value], kernels: Container[str]) -> list[Value]:
    """Merge the backward's recomputations into the forward ops they repeat (``cse``: dropout's VJP draws its mask
    from the seed again), so the backward reads the forward's result as a residual instead of computing it twice.
    ``tensor.stop_gradient`` stays (the backend's pipeline expands it): the forward a double backward replays
    (``SplitForward.recompute``) keeps what ``no_grad`` and ``detach()`` cut, a spectral norm's power iteration."""
    count = len(graph.outputs)
    graph.outputs = [*graph.outputs, *grads]
    decompose_where(graph, lambda op: op.name not in kernels and op.name != "tensor.stop_gradient")
    CSE().run(graph)
    grads, graph.outputs = graph.outputs[count:], graph.outputs[:count]
    return grads


def _ops_reaching(values: Sequence[Value]) -> set[int]:
    """``id`` of every op that ``values`` depend on."""
    reached: set[int] = set()
    stack = [value.producer for value in values if value.producer is not None]
    while stack:
        op = stack.pop()
        if id(op) not in reached:
            reached.add(id(op))
            stack.extend(operand.producer for operand in op.operands if operand.producer is not None)
    return reached


def _backward_graph(graph: Graph, ops: list[Op], cotangents: list[Value], grads: list[Value]) -> tuple[Graph, list[Value]]:
    """The backward ops copied into a graph of their own: each forward value they read becomes an input (a saved
    value), except an operand-free op's result (a constant), copied. Returns it and the saved values, in input order."""
    backward = Graph(f"{graph.name}_backward")
    grad_inputs = [Value(value.type, None, 0, value.name_hint) for value in cotangents]
    mapping: dict[int, Value] = {id(old): new for old, new in zip(cotangents, grad_inputs)}
    saved: list[Value] = []

    def resolved(value: Value) -> Value:
        if id(value) not in mapping:
            if value.producer is not None and not value.producer.operands:
                mapping[id(value)] = _copy_into(backward, value.producer, [])[value.index]
            else:
                mapping[id(value)] = Value(value.type, None, 0, value.name_hint)
                saved.append(value)
        return mapping[id(value)]

    for op in ops:
        results = _copy_into(backward, op, [resolved(v) for v in op.operands])
        mapping.update((id(old), new) for old, new in zip(op.results, results))
    backward.outputs = [resolved(grad) for grad in grads]
    backward.inputs = [mapping[id(value)] for value in saved] + grad_inputs
    freeze_graph_key(backward, (COMPILED_FORWARD, next(_BACKWARD_KEYS)))
    return backward, saved


def _copy_into(graph: Graph, op: Op, operands: list[Value]) -> list[Value]:
    copy = Op(op.name, operands, [result.type for result in op.results], op.attrs, op.location, op.region)
    for old, new in zip(op.results, copy.results):
        new.name_hint = old.name_hint
    graph.ops.append(copy)
    return list(copy.results)


def record_call(split: SplitForward, name: str, operands: list[Value], arrays: Sequence[np.ndarray]) -> list[Value]:
    """The outputs of a compiled call as eager values: the results of one ``custom.vjp`` op over the call's operands
    (arrays, then parameter reads), the outputs and the residuals, whose ``backward`` is ``split.backward``.
    ``arrays`` are what the compiled forward returned (outputs, buffer updates, residuals)."""
    from kiln.runtime.eager import _NO_RESULTS

    outputs = arrays[: split.num_outputs]
    residuals = arrays[split.num_outputs + split.num_buffers :]
    leaves = [_leaf(array, value.type) for array, value in zip([*outputs, *residuals], _typed(split))]
    location = user_location()
    op = Op("custom.vjp", (), [value.type for value in split.graph.outputs[: split.num_outputs]],
            {"function": f"{COMPILED_FORWARD}({name})", "num_inputs": len(operands), "num_outputs": split.num_outputs,
             "saved": split.saved, "gradients": split.gradients, "backward": split.backward},
            location.short if location else None, None)
    op.operands = [*operands, *leaves]  # no uses, as every eager op's
    results = list(op.results)
    for value, array in zip(results, outputs):
        ARRAYS[value] = array
    op.results = _NO_RESULTS  # type: ignore[assignment]  # as eager ops: the values link to the op, not back
    return results


def _typed(split: SplitForward) -> list[Value]:
    outputs = split.graph.outputs
    return [*outputs[: split.num_outputs], *outputs[split.num_outputs + split.num_buffers :]]


def _leaf(array: np.ndarray, type: Any) -> Value:
    leaf = Value(type, None, 0, None)
    ARRAYS[leaf] = array
    return leaf


@dataclass
class TrainingVariant:
    """One input signature's compiled forward for training calls, and what a call feeds and records."""

    split: SplitForward
    executable: Executable
    parameters: list[Parameter]
    buffers: list[Parameter]
    reads_seed: bool
    structure: Structure
    present: list[bool]
    """Which of the structure's leaves are tensors (the others are None)."""
    name: str
    detached: list[bool] = field(default_factory=list)
    """Which outputs require no grad (made under ``no_grad``, ``detach()``ed, integer): returned without a chain."""
    lifted: LiftedTensors = field(default_factory=lambda: LiftedTensors(None))
    """The eager tensors the forward read (a closure's): constants, a call finding one changed traces again; those
    that require grad are inputs after the parameters, and the recorded op links to their chains."""
    attributes: AttributeWrites = field(default_factory=AttributeWrites)
    """Module attributes the forward set to a tensor it computed: their values follow the buffer updates."""
    value_guards: ValueGuards = field(default_factory=ValueGuards)
    """Values the Python read from the inputs (``int(lengths.max())``): a call giving others traces again."""
    bindings: Callable[[], bool] = lambda: True
    """Whether the names the function reached its modules by hold them still (``runtime/rebound_names.py``)."""
    module_structure: Any = None
    """The modules it reaches with their parameters and submodules (``runtime/module_structure.py``'s
    ``ModuleStructure``), set by the caller after the trace."""

    def holds(self, arrays: Sequence[np.ndarray]) -> bool:
        """Whether the closure tensors read, the values read from the inputs, the plain objects' attributes read and the
        objects its names held are as traced, for a call on ``arrays``."""
        return (self.bindings() and (self.module_structure is None or self.module_structure.hold()) and self.lifted.hold()
                and self.value_guards.hold(arrays) and self.attributes.reads_hold())


def compile_training(fn: Callable[..., Any], arrays: Sequence[np.ndarray], wants_grad: Sequence[bool], backend: str,
                     pipeline: str) -> TrainingVariant:
    """Trace ``fn`` on arrays of these exact shapes (a new batch size traces anew, as the backward it records is
    specialised to its shapes), split off its backward and compile the forward. ``wants_grad[k]``: whether array ``k``
    (a tensor that requires a gradient) is differentiated, besides every trained parameter."""
    specs = [TensorSpec(np.shape(a), DType.of(np.asarray(a).dtype)) for a in arrays]
    structure: list[Any] = []

    def without_nones(*inputs: Any) -> list[Any]:  # MultiheadAttention's (out, None): the None comes back as is
        before = values_before(inputs)
        leaves, nesting = flatten(fn(*inputs))
        refuse_argument_writes(inputs, before, getattr(fn, "__name__", "the compiled function"))
        structure[:] = [nesting, [leaf is not None for leaf in leaves]]
        return [leaf for leaf in leaves if leaf is not None]

    traced = specializing_on(lifting_eager_tensors(without_nones, lifts=False), arrays)  # closure tensors: guarded constants
    context = trace_context(named_like(traced, fn), *specs, what="the compiled function's result", wants_grad=wants_grad)
    arguments = context.graph.inputs[: len(specs)]
    attributes = _compiled_attribute_writes(context)
    graph, parameters = context.graph, context.parameters
    num_outputs = len(graph.outputs)
    with context:  # outputs made under no_grad or detach()ed come back without a chain, as PyTorch's
        detached = [not traced_requires_grad(value) for value in graph.outputs]
    buffers = in_call_order(context)
    graph.outputs += attributes.traced_values()  # after the buffers': set by each call (runtime/attribute_writes.py)
    lifted = LiftedTensors(context.lifting)  # closure tensors that require grad: inputs after the parameters
    if attributes.stores is not None:  # a container's tensors the trace read: fed from it (runtime/container_stores.py)
        attributes.stores.follow_lifted(lifted)
    value_guards = guards_of(context, arguments, lifted)
    lifted_after_parameters(graph, context.lifting, [context.parameter_values[id(p)] for p in parameters], len(specs))
    differentiated = [k for k, (spec, wanted) in enumerate(zip(specs, wants_grad)) if wanted and spec.type.dtype.is_float]
    differentiated += [len(specs) + k for k, p in enumerate(parameters) if p.requires_grad and p.dtype.is_float]
    differentiated += [len(specs) + len(parameters) + k for k, wanted in enumerate(lifted.requiring_grad) if wanted]
    kernels = getattr(get_backend(backend), "table", ())
    split = split_forward(graph, len(specs) + len(parameters) + len(lifted.tensors), num_outputs, differentiated, kernels)
    split.recompute = clone_graph(split.graph)
    SPLITS[split.backward] = split
    PassManager(pipeline).run(split.graph)
    name = getattr(fn, "__name__", None) or type(fn).__name__
    return TrainingVariant(split, get_backend(backend).compile(split.graph), parameters, buffers,
                           context.seed_input is not None, *structure, name, detached, lifted, attributes, value_guards,
                           bindings_guard(fn))


def _compiled_attribute_writes(context: TraceContext) -> AttributeWrites:
    """The module attributes a traced forward set, if a compiled forward can stand for it: tensors it computed
    (a legacy weight_norm's ``module.weight``), set by each call; refused (the call runs eagerly) where it set a plain
    attribute (once per trace, not once per call) or looked a trained weight up sparsely."""
    if TRAINED_LOOKUPS.get(context):  # F.embedding(sparse=True): its weight's .grad is sparse, which runs eagerly
        context.restore_attributes()
        raise KilnError(f"the forward looks a trained weight up with {TRAINED_LOOKUPS[context][0]}(sparse=True), whose "
                        "gradient is a sparse tensor (for SparseAdam) that a compiled forward cannot give; the call runs "
                        "eagerly, or pass sparse=False for a dense gradient and a compiled forward")
    attributes = AttributeWrites.of(context)
    if attributes.writes:  # set once per trace, not once per call: runs eagerly (runtime/attribute_writes.py)
        context.restore_attributes()  # the eager call sets them
        raise AttributesSetPerTrace(attributes)
    return attributes


class AttributesSetPerTrace(KilnError):
    """A traced forward set plain Python attributes, which it would set once per trace, not once per call: a counter
    among them is traced as a number that changes instead (``runtime/dynamic_attributes.py``), else the call runs
    eagerly."""

    def __init__(self, writes: AttributeWrites) -> None:
        super().__init__(f"the forward sets {writes.names()}, a Python attribute the compiled forward would set once per "
                         "trace, not once per call; keep it as a tensor buffer (register_buffer) or set it outside the "
                         "forward")
        self.writes = writes


def in_call_order(context: TraceContext) -> list[Parameter]:
    """Lay a traced call's graph out as a call feeds and reads it: the buffer updates (BatchNorm's running statistics)
    become the last outputs and the seed (if the graph draws) the last input, after the arrays and the parameters.
    Returns the updated buffers, in output order."""
    context.graph.outputs += [value for _, value in context.buffer_updates.values()]
    if context.seed_input is not None:
        context.graph.inputs.remove(context.seed_input)
        context.graph.inputs.append(context.seed_input)
    return [buffer for buffer, _ in context.buffer_updates.values()]


def eager_inputs(inputs: Sequence[Any]) -> list[Value]:
    """The eager value of each input of a call: a tensor's own (its chain is what the recorded op links to), a read
    of a ``Parameter`` (``kiln.ones(2, requires_grad=True)`` is one: its ``.grad`` is filled), a new leaf for an
    array or a number."""
    context = TraceContext.current()
    return [context.value_of(a) if isinstance(a, ArrayLeaf) else eager_value(a) or eager_value(eager_leaf(a))
            for a in inputs]


def _reads_before_writes(parameters: Sequence[Parameter], written: Sequence[Parameter]) -> list[Value]:
    """The eager reads of the parameters a call was fed, as the forward read them: a buffer the call writes (a
    spectral norm's ``weight_u``) is read as a copy of its values before the write, so that a double backward, which
    replays the forward from these operands (``runtime/compiled_double_backward.py``), iterates from the same vectors
    (it read the written ones: the second derivative's sigma came from two power iterations). The copy is no read of
    the buffer for the version check, as the ``u.clone()`` PyTorch's spectral norm saves is not."""
    context = TraceContext.current()
    reads = [context.value_of(p) for p in parameters]
    written_ids = {id(buffer) for buffer in written}
    for parameter, value in zip(parameters, reads):
        if id(parameter) in written_ids:
            ARRAYS[value] = np.array(ARRAYS[value])
            PARAMETERS.pop(value, None)
    return reads


def call_training(variant: TrainingVariant, values: Sequence[Value]) -> Any:
    """Run the compiled forward on the arrays of ``values`` (``eager_inputs``) and the parameters as they are now;
    write the buffer updates; return the outputs as eager tensors, in ``fn``'s structure."""
    from kiln.frontend import init
    from kiln.frontend.tensor import Tensor

    arrays = [ARRAYS[value] for value in values]
    feeds = [*arrays, *[p.data for p in variant.parameters], *variant.lifted.arrays()]
    if variant.reads_seed:
        feeds.append(init.draw_seed())  # as eager dropout draws
    results = [np.asarray(result) for result in variant.executable(*feeds)]
    split = variant.split
    updates = results[split.num_outputs : split.num_outputs + split.num_buffers]
    context = TraceContext.current()
    reads = _reads_before_writes(variant.parameters, variant.buffers)
    for buffer, update in zip(variant.buffers, updates):
        write_buffer(buffer, update)
        count_update(buffer)  # a backward that saved the old values refuses, as after an eager forward's copy_
    variant.attributes.replayed(updates[len(variant.buffers) :])
    operands = [*values, *reads, *map(eager_value, variant.lifted.tensors)]
    outputs = record_call(split, variant.name, operands, results)
    detached = variant.detached or [False] * len(outputs)
    tensors = [Tensor(context.without_gradient(v) if cut or not v.type.dtype.is_float else v) for v, cut in zip(outputs, detached)]
    leaves = iter(tensors)
    return unflatten(variant.structure, [next(leaves) if present else None for present in variant.present])


__all__ = ["AttributesSetPerTrace", "COMPILED_FORWARD", "SPLITS", "SplitForward", "TrainingVariant", "call_training", "compile_training",
           "eager_inputs", "in_call_order", "record_call", "split_forward"]
