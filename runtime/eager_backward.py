"""``loss.backward()`` in eager mode: the loss's op chain becomes one graph, differentiated and compiled.

The chain from the loss back to its leaves (the parameters it read, the
arrays it was given) is rebuilt as a graph whose inputs are those leaves;
the autodiff pass appends the backward; the NumPy backend compiles it after
the usual cleanup. The compiled function is cached by the chain's structure
(op names, attributes, types, wiring), so a training loop compiles once and
then runs the cached function every step. The forward results the backward
reads (activations, a max's indices, a weight's transpose) are inputs of the
compiled function, fed the arrays the eager forward computed, as PyTorch's
saved tensors: the forward is not run twice.

A structure's first backward is not compiled: the backward ops run one by one
on the forward's own arrays (``eager_grad.replayed``), and a structure seen a
second time is compiled. A loop compiles at its second step; a chain whose
structure changes every time (actor_critic.py's episodes, each of its own
length) never pays for a compilation it would not reuse. (The two round
differently in float32, at the level of 1e-6 relative.)

Arrays the user passed in (a batch) are inputs of the graph, not constants,
so a new batch of the same shape reuses the compiled function; 0-d constants
(Python numbers) stay constants.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from kiln.backends import get_backend
from kiln.compiler.autodiff.differentiate import differentiate_outputs
from kiln.compiler.ir.builder import Builder
from kiln.compiler.ir.core import Graph, Op, Value
from kiln.compiler.ir.types import TensorType
from kiln.compiler.passes.manager import PassManager
from kiln.frontend.anomaly_mode import is_anomaly_enabled
from kiln.frontend.autograd_graph import requires_grad_of, started_backward
from kiln.frontend.custom_function_once import USED as ONCE_USED, check_once_differentiable
from kiln.frontend.eager_values import ARRAYS, GRAD_TENSORS, PARAMETERS, TENSOR_HOOKS, trained_parameter
from kiln.frontend.hooked_gradient import hooked_gradient
from kiln.frontend.module import ArrayLeaf, Parameter
from kiln.frontend.torch_array import torch_array
from kiln.frontend.trace import located_error
from kiln.frontend.version_counter import REWRITTEN, rewrite_saved_views
from kiln.runtime.eager import op_signature
from kiln.runtime.eager_hooks import REACHED
from kiln.runtime.eager_sparse_grad import sparse_reads, with_sparse_gradients
from kiln.frontend.sparse_embedding import SPARSE_READS
from kiln.runtime.executable import Executable
from kiln.runtime.saved_tensor_hooks import PACKED, quiet, unpack_originals, unpacked_arrays
from kiln.runtime.saved_versions import check_saved_versions
from kiln.runtime.train_step import DEFAULT_PIPELINE, collection_paused

_COMPILED: dict[Hashable, tuple[Executable, list[tuple[int, int]]]] = {}
"""Compiled backwards by chain structure, with the forward results each is fed (``EagerChain._feed_saved``)."""
_REPLAY_GRAPHS: dict[Hashable, tuple[Graph, list[tuple[Value, tuple[int, int] | int]], list[tuple[int, int]]]] = {}
"""Backward graphs replayed op by op (``EagerChain.replay_graph``) by chain structure and seeding, with their bindings."""
COMPILED_LIMIT = 64
"""Compiled backwards kept (by chain structure); a 0-d constant that changes every step makes a new one each time."""


@dataclass
class EagerInput:
    """One input of the chain's graph: a leaf (a parameter's or fed array) or a fed constant, and what it is fed."""

    type: TensorType
    name: str | None
    array: np.ndarray
    trained: Parameter | None


class EagerChain:
    """The op chain behind ``outputs``: its ``inputs`` (with the arrays to feed), and ``key``, what a compiled backward of
    it depends on (op signatures and wiring, input types, which inputs are differentiated). ``graph()`` builds it, only
    when the key is new: a training loop's later steps only walk the chain.

    The differentiated inputs are the leaves reading a parameter in ``wanted`` (every trained one when None) and the
    ``targets``: any eager values of the chain (``kiln.autograd.grad`` with respect to an activation or a batch).
    """

    def __init__(self, outputs: Sequence[Value], wanted: set[int] | None, targets: Sequence[Value] = (),
                 sparse_leaves: frozenset[int] = frozenset()):
        self._sparse_leaves = sparse_leaves
        """``id``s of parameter leaves read by sparse lookups only: not differentiated (their targets' rows are)."""
        self.ops = chain_of(outputs)
        started_backward(self)  # multi-grad hooks count per backward (frontend/autograd_graph.py)
        if ONCE_USED[0]:  # a derivative through a @once_differentiable backward is refused (custom_function_once.py)
            check_once_differentiable(self.ops, requires_grad_of)
        self.inputs: list[EagerInput] = []
        self.sources: list[Value | None] = []
        """The eager value each input stands for: a leaf, or a fed constant's result."""
        self._input_of: dict[int, int] = {}
        """``id`` of a leaf value, or of a fed constant op -> its input index."""
        self._position = {id(op): index for index, op in enumerate(self.ops)}
        self._results: dict[tuple[int, int], Value] = {}
        """(position, index) of an op result -> the eager value (the op itself keeps no results)."""
        self._wanted = wanted
        wiring = [self._wiring(op) for op in self.ops]
        self.outputs = list(outputs)
        self.targets = [value if self.reaches(value) else None for value in targets]
        self.key = (tuple(wiring), tuple(map(self._reference, self.outputs)),
                    tuple(None if t is None else self._reference(t) for t in self.targets),
                    tuple((i.type, i.trained is not None) for i in self.inputs))
        if REWRITTEN:
            rewrite_saved_views(self.ops, self._results)  # a write through x.data reaches views kiln's ops made of x
        check_saved_versions(self)  # PyTorch's version-counter check, on the values the backward reads

    def op_results(self) -> dict[tuple[int, int], Value]:
        """The eager results of the chain's ops that it refers to, by (position, index)."""
        return self._results

    def reaches(self, value: Value) -> bool:
        """Whether ``value`` is one of the chain's leaves or results (an output depends on it)."""
        return id(value) in self._input_of if value.producer is None else id(value.producer) in self._position

    def operand_references(self, position: int) -> tuple[Hashable, ...] | None:
        """``_reference`` of each operand of the op at ``position`` (None for a fed constant, an input)."""
        wiring = self.key[0][position]
        return None if wiring == "fed" else wiring[1]

    def target_references(self) -> list[Hashable]:
        return [self._reference(target) for target in self.targets if target is not None]

    def value_at(self, reference: Hashable) -> Value | None:
        """The eager value a ``_reference`` stands for (None for an op result no other op of the chain reads)."""
        kind, *where = reference  # type: ignore[misc]
        return self.sources[where[0]] if kind == "input" else self._results.get((where[0], where[1]))

    def _wiring(self, op: Op) -> Hashable:
        if _fed(op):
            self._input_of[id(op)] = self._add(TensorType.of_array(op.attrs["value"]), None, np.asarray(op.attrs["value"]), None)
            return "fed"
        return op_signature(op), tuple([self._reference(v) for v in op.operands])

    def _reference(self, value: Value) -> Hashable:
        op = value.producer
        if op is None:
            return "input", self._leaf(value)  # a leaf
        op_id = id(op)
        fed = self._input_of.get(op_id)
        if fed is not None:  # a fed constant (also in the chain: its position is not referenced)
            self.sources[fed] = value
            return "input", fed
        position = self._position.get(op_id)
        if position is None:
            return "input", self._leaf(value)  # an integer value the chain stops at
        self._results[(position, value.index)] = value
        return "op", position, value.index

    def _leaf(self, value: Value) -> int:
        if id(value) not in self._input_of:
            parameter = PARAMETERS.get(value, (None, 0))[0]
            trained = trained_parameter(value) is not None and value.type.dtype.is_float and \
                (self._wanted is None or id(parameter) in self._wanted) and id(value) not in self._sparse_leaves
            self._input_of[id(value)] = self._add(value.type, value.name_hint, ARRAYS[value], parameter if trained else None)
            self.sources[-1] = value
        return self._input_of[id(value)]

    def _add(self, type: TensorType, name: str | None, array: np.ndarray, trained: Parameter | None) -> int:
        self.inputs.append(EagerInput(type, name, array, trained))
        self.sources.append(None)
        return len(self.inputs) - 1

    @property
    def trained(self) -> list[Parameter]:
        return [i.trained for i in self.inputs if i.trained is not None]

    def graph(self, seeded: Sequence[bool]) -> Graph:
        """The chain as a graph with its backward appended: its outputs are the gradients of the trained inputs, in
        order, then of the reached targets; a seeded output's cotangent is an input after the leaves."""
        graph = Graph("eager_backward")
        inputs = [graph.add_input(i.type, i.name) for i in self.inputs]
        results: dict[tuple[int, int], Value] = {}
        self._copies: dict[int, tuple[int, int]] = {}
        """``id`` of a graph value copied from an eager op result -> that result's (position, index) in the chain."""
        self._bindings: list[tuple[Value, tuple[int, int] | int]] = [
            (copy, index) for index, (copy, source) in enumerate(zip(inputs, self.sources)) if source]
        """Each graph value copied from the chain and what it copies: an input's index or a result's (position, index)."""
        self.originals: dict[int, Value] = {id(copy): source for copy, source in zip(inputs, self.sources) if source}
        """``id`` of a graph value copied from the chain -> the eager value it copies (``kiln.autograd.grad``'s
        ``create_graph`` replays the rest)."""

        def copied(value: Value) -> Value:
            kind, *where = self._reference(value)
            return inputs[where[0]] if kind == "input" else results[(where[0], where[1])]

        for position, op in enumerate(self.ops):
            if id(op) in self._input_of:
                continue
            made = Builder(graph, location=op.location).op(op.name, *map(copied, op.operands), **op.attrs)
            for index, result in enumerate(made if isinstance(made, tuple) else (made,)):
                results[(position, index)] = result
                if (position, index) in self._results:
                    self.originals[id(result)] = self._results[(position, index)]
                    self._copies[id(result)] = (position, index)
                    self._bindings.append((result, (position, index)))
        outputs = [copied(v) for v in self.outputs]
        seeds = [graph.add_input(v.type, "gradient") if s else None for v, s in zip(outputs, seeded)]
        wrt = [v for v, i in zip(inputs, self.inputs) if i.trained is not None]
        wrt += [copied(t) for t in self.targets if t is not None]
        self.hook_points: dict[int, Value] = {}
        """``id`` of a graph value marking a hooked value's complete cotangent -> the hooked eager value."""
        hooks = self._mark_hooked(graph) if self.hooked else None
        forward = {id(op) for op in graph.ops}
        graph.outputs = differentiate_outputs(graph, outputs, wrt, seeds, hooks)
        self.saved = self._feed_saved(graph, forward)
        return graph

    def _feed_saved(self, graph: Graph, forward: set[int]) -> list[tuple[int, int]]:
        """Make each forward result the backward reads an input of ``graph`` (after the seeds), fed the array the eager
        forward computed, so the compiled backward does not recompute the forward (the cleanup drops the forward ops no
        longer read). Returns the (position, index) of the fed results, in input order."""
        fed: dict[tuple[int, int], Value] = {}

        def saved(value: Value) -> Value:
            reference = self._copies.get(id(value)) if value.producer is not None else None
            if reference is None or id(value.producer) not in forward:
                return value
            if reference not in fed:
                fed[reference] = graph.add_input(value.type, value.name_hint)
                self.originals[id(fed[reference])] = self._results[reference]
                self._bindings.append((fed[reference], reference))
            return fed[reference]

        for op in graph.ops:
            if id(op) not in forward:
                for index, operand in enumerate(op.operands):
                    if saved(operand) is not operand:
                        op.set_operand(index, saved(operand))
        graph.outputs = [saved(value) for value in graph.outputs]
        return list(fed)

    def replay_graph(self, seeded: Sequence[bool]) -> Graph:
        """``graph(seeded)`` to replay op by op (not to compile: passes would edit it), shared by every chain of this
        structure: a ``create_graph`` loop differentiates its chain once, not at every step. A hooked chain's graph
        marks its own hooked values, so it is built anew."""
        graph = self._replay_graph(seeded)
        if PACKED:  # values packed by saved_tensors_hooks: the backward reads what unpack gives
            unpack_originals(self, graph, self.originals)
        return graph

    def _replay_graph(self, seeded: Sequence[bool]) -> Graph:
        if self.hooked:
            return self.graph(seeded)
        key = (self.key, tuple(seeded))
        cached = _REPLAY_GRAPHS.get(key)
        if cached is None:
            graph = self.graph(seeded)
            if len(_REPLAY_GRAPHS) >= COMPILED_LIMIT:
                del _REPLAY_GRAPHS[next(iter(_REPLAY_GRAPHS))]
            _REPLAY_GRAPHS[key] = (graph, self._bindings, self.saved)
            return graph
        graph, bindings, self.saved = cached
        self.originals = {id(copy): self._bound(copied) for copy, copied in bindings}
        self.hook_points = {}
        return graph

    def _bound(self, copied: tuple[int, int] | int) -> Value:
        """This chain's eager value for a binding: an input's source or a result."""
        return self.sources[copied] if isinstance(copied, int) else self._results[copied]  # type: ignore[return-value]

    def saved_arrays(self, saved: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """The eager forward's arrays for ``saved`` (``_feed_saved``'s references), in this step's chain."""
        return [ARRAYS[self._results[reference]] for reference in saved]

    @property
    def hooked(self) -> bool:
        """Whether a value of the chain has ``register_hook`` hooks (its backward then runs eagerly, calling them)."""
        return bool(TENSOR_HOOKS) and any(v in TENSOR_HOOKS for v in [*self._results.values(), *filter(None, self.sources)])

    def _mark_hooked(self, graph: Graph) -> Callable[[Value, Value], Value]:
        builder = Builder(graph, location="gradient hook")
        REACHED.clear()

        def mark(value: Value, cotangent: Value) -> Value:
            original = self.originals.get(id(value))
            if original is None or original not in TENSOR_HOOKS:
                return cotangent
            marked = builder.broadcast_to(cotangent, shape=cotangent.type.shape)
            self.hook_points[id(marked)] = original
            REACHED.add(id(original))
            return marked

        return mark


def _fed(op: Op) -> bool:
    """A constant array of rank > 0 (a batch the user passed): an input, so the next batch reuses the compiled graph."""
    return op.name == "tensor.constant" and np.ndim(op.attrs["value"]) > 0


def chain_of(outputs: Sequence[Value]) -> list[Op]:
    """The ops ``outputs`` depend on through floating-point values, operands before readers (iterative: a long chain
    would overflow the stack). An integer or bool operand (an ``argmax``'s, ``topk``'s indices, a mask) carries no
    gradient, as in PyTorch: the chain stops there and its array is fed as a leaf, so a parameter read only through
    it gets no ``.grad`` (None), not zeros."""
    order: list[Op] = []
    seen: set[int] = set()
    stack: list[tuple[Op, bool]] = [(v.producer, False) for v in reversed(outputs) if v.producer is not None]
    while stack:
        op, expanded = stack.pop()
        if expanded:
            order.append(op)
            continue
        if id(op) in seen:
            continue
        seen.add(id(op))
        stack.append((op, True))
        stack.extend([(operand.producer, False) for operand in reversed(op.operands)
                      if operand.producer is not None and operand.type.dtype.is_float])
    return order


def backward(loss: Any, gradient: Any = None, inputs: Any = None) -> None:
    """Add d(loss)/d(parameter) (weighted by ``gradient`` for a non-scalar loss) to each trained parameter's ``.grad``,
    and d(loss)/d(tensor) to each marked tensor's (``requires_grad_()``, ``retain_grad()``) the loss depends on.
    ``inputs`` (parameters or eager tensors) limits the accumulation to those."""
    found = sparse_reads(loss.value, _wanted(inputs)) if SPARSE_READS else []  # embedding(sparse=True)'s lookups
    chain, owners = backward_chain(loss, inputs, "backward()", found)
    grads = gradients(chain, [_seed(loss, gradient)])
    if found:
        grads = with_sparse_gradients(grads, found)
    for owner, grad in _per_owner(owners, grads):
        if still_requires_grad(owner):
            accumulate_grad(owner, grad)
    after_accumulation([p for p in [*chain.trained, *[lookup.parameter for lookup in found]] if still_requires_grad(p)])


def still_requires_grad(owner: Any) -> bool:
    """Whether ``backward()`` accumulates into ``owner``: a parameter read while it required grad (the chain reaches
    it) that was frozen since (``requires_grad_(False)`` between the forward and the backward) gets nothing, as
    PyTorch's ``AccumulateGrad`` skips a leaf that no longer requires grad; the rest of the backward runs."""
    return not isinstance(owner, ArrayLeaf) or bool(owner.requires_grad)


def backward_chain(loss: Any, inputs: Any, what: str, sparse: Sequence[Any] = ()) -> tuple[EagerChain, list[Any]]:
    """The chain ``loss.backward(inputs=inputs)`` differentiates, and the owner of each gradient it gives (its trained
    parameters' reads, then the reached marked tensors), or a clear error if there is none. ``sparse``: the sparse
    lookups the loss depends on (``runtime/eager_sparse_grad.py``): their rows are differentiated last, owned by their
    weights, whose leaves are not differentiated."""
    chosen = _chosen(inputs)
    wanted = _wanted(inputs)
    found = marked_tensors(loss.value) if chosen is None else [(t, t.value) for t in chosen if not isinstance(t, ArrayLeaf)]
    marked = [tensor for tensor, _ in found]
    chain = EagerChain([loss.value], wanted, [*[value for _, value in found], *[lookup.rows for lookup in sparse]],
                       frozenset(id(lookup.leaf) for lookup in sparse))
    owners = [*chain.trained, *[t for t, value in zip(marked, chain.targets) if value is not None],
              *[lookup.parameter for lookup in sparse]]
    if not owners:
        raise located_error(f"{what}: the tensor does not depend on any parameter that requires a gradient (a float "
                            "kiln.nn.Parameter with requires_grad=True) or on a tensor marked by requires_grad_(), so "
                            "there is nothing to differentiate")
    return chain, owners


def _chosen(inputs: Any) -> list[Any] | None:
    return None if inputs is None else list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def _wanted(inputs: Any) -> set[int] | None:
    chosen = _chosen(inputs)
    return None if chosen is None else {id(p) for p in chosen if isinstance(p, ArrayLeaf)}


def _per_owner(owners: list[Any], grads: Sequence[Any]) -> list[tuple[Any, np.ndarray]]:
    """One gradient per parameter or tensor (a parameter read twice sums its leaves'), through its
    ``register_hook`` hooks: PyTorch calls a parameter's hooks once, on its whole gradient."""
    summed: dict[int, tuple[Any, np.ndarray]] = {}
    for owner, grad in zip(owners, grads):
        previous = summed.get(id(owner))
        summed[id(owner)] = (owner, _as_gradient(grad) if previous is None else _summed(previous[1], grad))
    return [(owner, _parameter_hooks(owner, grad)) for owner, grad in summed.values()]


def _parameter_hooks(owner: Any, grad: np.ndarray) -> np.ndarray:
    """``grad`` through a parameter's ``register_hook`` hooks, given to them as a tensor."""
    hooks = list(owner.__dict__.get("_grad_hooks", {}).values()) if isinstance(owner, ArrayLeaf) else []
    if not hooks:
        return grad
    from kiln.frontend.eager_values import eager_leaf

    sparse = getattr(grad, "is_sparse", False)  # a SparseGrad goes to the hooks as is, as PyTorch's sparse .grad
    tensor = hooked_gradient(hooks, grad if sparse else eager_leaf(np.array(grad)))
    return tensor if getattr(tensor, "is_sparse", False) else np.asarray(tensor)


def _as_gradient(grad: Any) -> Any:
    return grad if getattr(grad, "is_sparse", False) else np.asarray(grad)


def _summed(previous: Any, grad: Any) -> Any:
    from kiln.runtime.eager_sparse_grad import summed  # lazily: it builds on this module

    return summed(previous, grad)


_AFTER_BACKWARD: "weakref.WeakKeyDictionary[Any, tuple[Callable[..., None], Callable[..., None]]]" = weakref.WeakKeyDictionary()
"""Callbacks run once per ``backward()`` with the parameters it accumulated, keyed (weakly) by their owner, each an
eager one and one for a backward traced into a ``kiln.compile``d step: ``DistributedDataParallel`` averages its
gradients across ranks there."""


def after_backward(owner: Any, callback: Callable[[list[Parameter]], None],
                   traced: Callable[[Any, list[Parameter]], None]) -> None:
    """Call ``callback(parameters)`` after each eager ``backward()`` that accumulates gradients, while ``owner``
    lives, and ``traced(capture, parameters)`` after each one traced into a compiled step (``StepCapture``)."""
    _AFTER_BACKWARD[owner] = (callback, traced)


def after_accumulation(trained: list[Parameter], capture: Any = None) -> None:
    """Each parameter's ``register_post_accumulate_grad_hook`` hooks (once per parameter), then the callbacks: the
    eager ones, or, given the ``capture`` of a ``kiln.compile``d step whose backward is being traced, the traced ones
    (the hooks' and their ops go into the step: an optimizer stepped per parameter in the backward, DDP's allreduce)."""
    seen: set[int] = set()
    for parameter in trained:
        if id(parameter) not in seen:
            seen.add(id(parameter))
            for hook in list(parameter.__dict__.get("_post_accumulate_grad_hooks", {}).values()):
                hook(parameter)
    for eager, traced in list(_AFTER_BACKWARD.values()):
        eager(trained) if capture is None else traced(capture, trained)


def marked_tensors(loss: Value) -> list[tuple[Any, Value]]:
    """The live tensors marked by ``requires_grad_()``/``retain_grad()`` whose values ``loss`` depends on, each with
    the value ``loss`` read (a leaf written under ``no_grad`` since holds a new one: PyTorch's leaf is the same)."""
    if not GRAD_TENSORS:
        return []
    values = {id(loss): loss}
    for op in chain_of([loss]):
        values.update((id(v), v) for v in op.operands)
    found = [(GRAD_TENSORS[v](), v) for v in values.values() if v in GRAD_TENSORS]
    return [(tensor, value) for tensor, value in found if tensor is not None]


def gradients(chain: EagerChain, seeds: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """The chain's gradients (``EagerChain.graph``'s outputs). A structure's first backward runs its ops one by one
    (``eager_grad.replayed``), so a chain that never repeats (an episode of a new length) pays no compilation; one seen
    before runs its compiled backward, compiled at its second sight. A hooked chain always runs op by op."""
    with quiet():  # a backward without create_graph records nothing: its ops pack no saved tensors
        if chain.hooked or is_anomaly_enabled() or not _seen_before(_key(chain, seeds)):
            from kiln.runtime.eager_grad import replayed  # lazily: it builds on this module

            return [np.asarray(g) for g in replayed(chain, seeds)]
        return run_backward(chain, seeds)


_SEEN: dict[Hashable, None] = {}
"""Structures whose backward ran once, op by op: the next one compiles (the oldest forgotten past ``SEEN_LIMIT``)."""
SEEN_LIMIT = 1024


def _seen_before(key: Hashable) -> bool:
    """Whether this structure's backward ran or was compiled before; remembers it if not."""
    if key in _COMPILED or key in _SEEN:
        return True
    if len(_SEEN) >= SEEN_LIMIT:
        del _SEEN[next(iter(_SEEN))]
    _SEEN[key] = None
    return False


def _key(chain: EagerChain, seeds: Sequence[np.ndarray | None]) -> Hashable:
    return chain.key, tuple(seed is not None for seed in seeds)


def run_backward(chain: EagerChain, seeds: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    """The chain's gradients from its compiled backward, compiled on a new key only."""
    key = _key(chain, seeds)
    compiled = _COMPILED.get(key)
    if compiled is None:
        if len(_COMPILED) >= COMPILED_LIMIT:
            del _COMPILED[next(iter(_COMPILED))]  # the oldest: a loop reuses one or two
        graph = chain.graph(key[1])
        compiled = _COMPILED[key] = (_compile(graph), chain.saved)
    executable, saved = compiled
    inputs, saved_arrays = [i.array for i in chain.inputs], chain.saved_arrays(saved)
    if PACKED:  # values packed by saved_tensors_hooks: the backward is fed what unpack gives
        inputs, saved_arrays = unpacked_arrays(chain, inputs, saved, saved_arrays)
    return executable(*inputs, *[seed for seed in seeds if seed is not None], *saved_arrays)


def _seed(loss: Any, gradient: Any) -> np.ndarray | None:
    return seed_array(loss.value, gradient, "backward() of a tensor", "gradient=")


def seed_array(output: Value, gradient: Any, what: str, argument: str) -> np.ndarray | None:
    """``gradient`` as an array of ``output``'s dtype and shape (None for a scalar's implicit 1; ones for another
    one-element tensor's, as PyTorch's), or a clear error."""
    array = ARRAYS[output]
    if gradient is None:
        if array.ndim != 0 and array.size == 1:
            return np.ones_like(array)
        if array.ndim != 0:
            raise located_error(f"grad can be implicitly created only for scalar outputs: {what} has shape "
                                f"{array.shape}; reduce it (loss.mean()) or pass {argument} of its shape")
        return None
    seed = np.asarray(gradient.numpy() if hasattr(gradient, "numpy") else gradient, dtype=array.dtype)
    if seed.shape != array.shape:
        raise located_error(f"{what}: the gradient ({argument}) has shape {seed.shape}, the tensor {array.shape}")
    return seed


def _compile(graph: Graph) -> Executable:
    with collection_paused():  # as TrainStep's compile: the cyclic collector would walk every new op and value
        PassManager(DEFAULT_PIPELINE).run(graph)
        return get_backend("numpy").compile(graph)


def accumulate_grad(owner: Any, grad: np.ndarray) -> None:
    """``owner.grad += grad`` as PyTorch's backward does (a copy: the compiled function may reuse its buffers)."""
    current = getattr(owner, "grad", None)
    if getattr(grad, "is_sparse", False) or getattr(current, "is_sparse", False):  # embedding(sparse=True)
        owner.grad = grad.astype(owner.dtype.numpy) if current is None else _sparse_sum(current, grad)
    elif current is None:
        owner.grad = torch_array(np.array(grad, dtype=owner.dtype.numpy, order="C"))  # p.grad.zero_(), .view(-1) work
    else:
        current += grad


def _sparse_sum(current: Any, grad: Any) -> Any:
    """A ``.grad`` plus a gradient, one of them sparse: sparse if both are, else a new dense ``.grad``, as PyTorch's."""
    total = _summed(current, grad)
    return total if getattr(total, "is_sparse", False) else torch_array(total)
