"""``kiln.compile(model)``: a forward function compiled on first call, like ``torch.compile``.

Parameters are graph inputs fed with their current arrays on every call, so
the compiled function always sees the latest trained weights. A call comes in
one of two kinds:

- inference (NumPy arrays, ``no_grad``, ``eval()`` without tensors needing
  gradients): one compiled graph per input signature, the batch dim symbolic;
- training (tensors given, gradients wanted: a PyTorch-style loop): the forward
  compiled per exact signature and recorded as one op of the eager chain, so
  ``loss.backward()`` runs its compiled backward (``runtime/compiled_training.py``).

A whole training step (a function calling ``loss.backward()`` and ``optimizer.step()``) is traced as one graph
with its effects on ``.grad`` and the optimizer (``runtime/step_capture.py``). What cannot be traced on a
PyTorch-style call (a branch on ``.item()``, a scheduler stepped inside a step) runs eagerly, warned once, as
``torch.compile`` runs what it cannot capture; ``torch.compile``'s own arguments and keyword arguments of calls are
handled by ``runtime/compile_arguments.py``.

``@kiln.compile`` on a method in a class body binds as a function does (``CompiledFunction.__get__``): each instance
gets its own compiled function of its bound method, kept in the instance's ``__dict__`` so it dies with it.
"""

from __future__ import annotations

import inspect
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

import numpy as np

from kiln.backends import get_backend
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.core import Graph, Value
from kiln.compiler.passes.manager import PassManager
from kiln.frontend import init
from kiln.frontend.autocast import autocast_signature
from kiln.frontend.eager_values import ARRAYS, eager_leaf
from kiln.frontend.lifted_tensors import LiftedTensors, lifted_after_parameters, lifting_eager_tensors
from kiln.frontend.module import Module, Parameter
from kiln.frontend.symbolic_dims import static_on_demand
from kiln.frontend.torch_array import plain
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext, trace_context, user_stacklevel
from kiln.frontend.value_guards import ValueGuards, guards_of, specializing_on
from kiln.frontend.whole_step_inputs import BackwardInCompiledForward, GradArguments, tracing_compiled_forward
from kiln.runtime.argument_writes import write_back_argument_grads, write_back_arguments
from kiln.runtime.attribute_writes import AttributeWrites
from kiln.runtime.compile_arguments import (UNCOMPILED_BACKENDS, checked_backend, named_like, number_positions,
                                            numbers_fixed, numbers_weak, traced_arguments, with_keywords)
from kiln.runtime.compiled_methods import bound_method
from kiln.runtime.compiled_training import (AttributesSetPerTrace, TrainingVariant, call_training, compile_training,
                                            eager_inputs, in_call_order)
from kiln.runtime.compiled_write_back import written_back
from kiln.runtime.class_attribute_writes import refusing_class_attribute_writes
from kiln.runtime.container_arguments import checking_reachable_stores
from kiln.runtime.dynamic_attributes import DynamicAttributes
from kiln.runtime.plain_object_writes import plain_owners, watching_plain_owner
from kiln.runtime.module_structure import ModuleStructure
from kiln.runtime.namespace_reads import guarding_namespace_reads
from kiln.runtime.donation import value_donations
from kiln.runtime.executable import Executable
from kiln.runtime.batch_dims import BATCH, BatchDim, batch_axes, batch_signature, batch_specs, scalars_unbatched
from kiln.runtime.pytree import Structure, unflatten
from kiln.runtime.reachable_host_state import refusing_host_state_changes
from kiln.runtime.reachable_iterators import refusing_reachable_iterators
from kiln.runtime.reachable_objects import reachable_with_module_attributes
from kiln.runtime.rebound_names import bindings_guard
from kiln.runtime.step_capture import CapturedStep, Modes, StepCapture, capturing
from kiln.runtime.train_step import DEFAULT_PIPELINE


@dataclass
class _Variant:
    graph: Graph
    executable: Executable
    parameters: list[Parameter]
    buffers: list[Parameter] = field(default_factory=list)
    """Buffers updated by the call (BatchNorm's running statistics in training mode): the last outputs, written back."""
    reads_seed: bool = False
    """Whether the graph draws random numbers: its last input is then the int64 ``rng_seed``."""
    captured: CapturedStep | None = None
    """A training step's ``.grad``s and optimizer updates (``runtime/step_capture.py``): inputs before the seed, outputs last."""
    returns_none: bool = False
    """Whether ``fn`` returned None when traced (a step returning nothing): each call returns None."""
    structure: Structure = None
    """How ``fn``'s result nests its outputs (a dict of metrics): a PyTorch-style call (tensors given) returns its
    outputs so, as ``torch.compile``'s; a NumPy call its leaves, flat."""
    modes: Modes = field(default_factory=Modes)
    """The ``train()``/``eval()`` modes the trace read (guarded) and set (set again by each call)."""
    writes: AttributeWrites = field(default_factory=AttributeWrites)
    """Module attributes the trace set (``self.nfe += 1``): guarded on their value before it, set at each call."""
    donations: dict[int, int] = field(default_factory=dict)
    """``{input index: output index}`` the backend may write in place (``graph.donations``): each updated parameter,
    buffer and optimizer state. An output that comes back as the very array fed for its input needs no write-back."""
    lifted: LiftedTensors = field(default_factory=lambda: LiftedTensors(None))
    """Eager tensors the function read (a closure's): fed after the parameters at each call; guarded values."""
    needs_chain: bool = False
    """Whether an output required grad when traced (the function read a closure's trained parameter or a tensor that
    requires grad), and the trace wrote no parameter in place: a PyTorch-style call with gradients enabled then
    takes the training path (``_closure_training``), so ``backward()`` reaches them."""
    value_guards: ValueGuards = field(default_factory=ValueGuards)
    """Values the Python read from the inputs (``int(lengths.max())``): recomputed from a call's, which needs the same."""
    argument_writes: tuple[int, ...] = ()
    """The arguments ``fn`` writes in place (SwAV's queue): their new values, the last outputs, go into the caller's."""
    marked_arguments: tuple[int, ...] = ()
    """The arguments a whole step marked by ``requires_grad_()``: the caller's tensors require grad after each call."""
    argument_grads: tuple[int, ...] = ()
    """Those the step's ``backward()`` reached: their ``.grad``s, the very last outputs, go into the caller's ``.grad``."""
    grad_leaves: tuple[int, ...] = ()
    """The arguments given leaves that require grad: their traced ``.grad`` is whole (replaces the caller's)."""
    bindings: Callable[[], bool] = lambda: True
    """Whether the names the function reached its modules and optimizers by hold them still (``runtime/rebound_names.py``)."""
    module_structure: ModuleStructure | None = None
    """The modules it reaches with their parameters and submodules (``runtime/module_structure.py``)."""

    def holds(self, arrays: Sequence[np.ndarray]) -> bool:
        """Whether what the trace assumed for a call on ``arrays`` (modules' modes, a step's ``.grad``s and optimizers,
        the shapes of the eager tensors it read and the values it used, the objects its names held) still holds."""
        return (self.bindings() and (self.module_structure is None or self.module_structure.hold()) and self.modes.hold()
                and self.writes.hold() and (self.captured is None or self.captured.holds())
                and self.lifted.hold() and self.value_guards.hold(arrays))



def _refusing_unreplayable(traced: Callable[..., Any], fn: Any) -> Callable[..., Any]:
    """``traced`` refusing the host-side effects a replay after each call cannot redo (``next()`` of an iterator
    ``fn`` reaches, a class attribute set, a NumPy array or random generator changed), so the call runs eagerly."""
    reached = reachable_with_module_attributes(fn)
    for refusing in (refusing_reachable_iterators, refusing_class_attribute_writes, refusing_host_state_changes):
        traced = refusing(traced, reached)
    return traced

@dataclass
class CompiledFunction:
    """Calls ``fn`` (a function or Module) on arrays through one compiled graph per input signature."""

    fn: Callable[..., Any]
    backend: str = "numpy"
    pipeline: str = DEFAULT_PIPELINE
    batch_dim: BatchDim = 0
    """Each input's symbolic batch dim (``runtime/batch_dims.py``): another size there reuses the compiled graph."""
    seed: int | None = None
    """Random ops (``Distribution.sample``, ``rand_like``, dropout in training mode) draw from ``seed * 2**20 + k`` on
    the ``k``-th call, so each call draws anew and a run replays given its seed. ``None``: a PyTorch-style call
    (tensors given) draws from kiln's generator, as ``torch.compile``'s (``kiln.manual_seed`` repeats a run); a NumPy
    call refuses them: a model left in training mode at inference is an error, not silently random."""
    calls: int = 0
    """Calls that drew random numbers so far (the ``k`` above)."""
    trace_count: int = 0
    """How many times ``fn`` was traced so far (each new signature, each retrace a failed guard made), as
    ``torch._dynamo``'s ``unique_graphs`` counter. A Python side effect in ``fn`` counts calls, not traces: a
    ``traces.append(1)`` is replayed after each call, as ``torch.compile`` replays it."""
    variants: dict[tuple[Any, ...], _Variant | None] = field(default_factory=dict)
    """Inference functions by input signature; None where the trace failed on a PyTorch-style call (it runs eagerly)."""
    training_variants: dict[tuple[Any, ...], TrainingVariant | None] = field(default_factory=dict)
    """Forwards compiled for training calls (``runtime/compiled_training.py``) by exact input signature; None where
    the trace failed (the call then runs eagerly)."""
    trained_eagerly: bool = False
    """Whether a call ran eagerly (its trace failed); the warning is given once."""
    fullgraph: bool = False
    """``torch.compile``'s ``fullgraph``: a training forward that cannot be traced raises instead of running eagerly."""
    recompile_limit: int = 8
    """Training forwards traced (one per exact input signature) before calls with new signatures run eagerly, as
    ``torch.compile``'s ``cache_size_limit``."""
    training_superseded: dict[tuple[Any, ...], list[TrainingVariant]] = field(default_factory=dict)
    """Earlier training forwards of a signature whose guards failed (a branch on a counter taken the other way), kept
    as ``superseded``'s: a call whose state matches one again reuses it instead of tracing."""
    superseded: dict[tuple[Any, ...], list[_Variant]] = field(default_factory=dict)
    """Earlier variants of a signature whose guards failed (``eval()`` called, a ``.grad`` cleared), kept as
    ``torch.compile``'s cache entries are: a call whose state matches one again reuses it instead of tracing."""
    specialized: dict[tuple[Any, ...], set[tuple[Any, ...]]] = field(default_factory=dict)
    """The number values traced as constants so far, per signature (``_SPECIALIZED``)."""
    running: int = 0
    """Calls in progress: while one runs ``fn``, a module compiled in place (``Module.compile``) runs its forward."""
    value_retraces: dict[tuple[Any, ...], int] = field(default_factory=dict)
    """Training forwards traced again per signature because a value read from the inputs changed (``value_guards``)."""
    dynamic_ints: DynamicAttributes = field(default_factory=DynamicAttributes)
    """Int attributes seen changing between calls (a counter), traced as numbers that change from then on."""
    whole_step: bool = False
    """Whether ``fn``, given tensors that require grad, called ``backward()``: a whole training step, whose calls take
    the step path from then on (``frontend/whole_step_inputs.py``)."""
    grad_arguments: GradArguments = GradArguments()
    """The arguments that require grad in the call being traced as a whole step, and which are leaves, whose ``.grad``
    the step's ``backward()`` fills (``frontend/whole_step_inputs.py``)."""
    arguments_now: tuple[Any, ...] = ()
    """The call's arguments, where a step's feeds read them (a leaf argument's ``.grad``)."""
    method_owner: type | None = None
    """The class whose body compiled ``fn`` as a method (``__set_name__``): ``Base.forward(self, x)`` binds ``self``."""
    method_key: object = field(default_factory=object, repr=False, compare=False)
    """This method's key in each instance's compiled methods (``runtime/compiled_methods.py``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.method_owner = owner

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        """A method compiled in a class body (``@kiln.compile def forward(self, x)``) is bound as a function is: each
        instance gets its own compiled function of the bound method (its own traces, guards and parameters, as
        ``torch.compile`` guards on ``self``), made on first access and cached on the instance. Inside a trace the
        bound method itself is given: a compiled call there is inlined anyway, and the trace writes nothing. A module
        or bound method compiled is no method: it is returned as it is."""
        if instance is None or not inspect.isfunction(self.fn):
            return self
        if TraceContext.active():
            return types.MethodType(self.fn, instance)
        return bound_method(self, instance)

    def bound_to(self, instance: Any) -> CompiledFunction:
        """A compiled function of ``fn`` bound to ``instance``, compiled with this one's settings."""
        compiled = CompiledFunction(types.MethodType(self.fn, instance), self.backend, self.pipeline, self.batch_dim,
                                    self.seed)
        compiled.fullgraph, compiled.recompile_limit = self.fullgraph, self.recompile_limit
        return compiled

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.method_owner is not None and args and isinstance(args[0], self.method_owner) and inspect.isfunction(self.fn):
            return self.__get__(args[0])(*args[1:], **kwargs)  # Base.forward(self, x): the instance's bound method
        plain = not kwargs and traced_arguments(args)
        fn, arrays, extra = (self.fn, args, None) if plain else with_keywords(self.fn, args, kwargs)
        override = getattr(self.fn, "__dict__", {}).get("forward")  # model.forward = ...: traced anew, as torch's guard
        extra = extra if override is None else (extra, override)
        self.running += 1  # the module's own calls inside (Module.compile) go to its forward
        try:
            if TraceContext.active():  # called inside another trace (a compiled step calling a compiled model): inlined
                return self.fn(*args, **kwargs)
            training = None if self.whole_step else _training_signature(self.fn, arrays)
            positions = tuple(k for k, a in enumerate(arrays) if isinstance(a, Tensor) and a.requires_grad and self.whole_step)
            self.grad_arguments, self.arguments_now = GradArguments.of(arrays, positions), arrays
            arrays_np = [np.asarray(a) for a in arrays] if training is None else []
            step_key = (extra, self.grad_arguments) if positions else extra  # a step traced per grad argument set
            variant = None if training is not None else self._inference_lookup(fn, arrays, arrays_np, step_key)
            training = training if variant is None else _closure_training(variant, arrays)
            if training is None:
                outputs = self._inference_call(variant, arrays, arrays_np)
            else:
                values = eager_inputs(arrays)
                weak = numbers_weak(fn, number_positions(arrays))  # Python numbers promote as numbers
                try:
                    trained = self._training_variant(weak, [ARRAYS[value] for value in values], extra, *training)
                except BackwardInCompiledForward:  # a whole training step: traced again as one
                    self.whole_step = True
                    return self(*args, **kwargs)
                outputs = _EAGER if trained is None else call_training(trained, values)
                if variant is not None and trained is not None:  # a closure's model: the modes the function set
                    variant.modes.replay()
            return self.fn(*args, **kwargs) if outputs is _EAGER else outputs
        finally:
            self.running -= 1
            if not self.running:
                self.arguments_now = ()  # the call's tensors are not kept past it

    def _inference_lookup(self, fn: Callable[..., Any], arrays: tuple[Any, ...], arrays_np: list[np.ndarray],
                          extra: Hashable) -> Any:
        """The inference variant for these arrays (traced on first sight), ``_EAGER`` where the call runs eagerly."""
        batch_dim = scalars_unbatched(arrays_np, self.batch_dim)
        batch_dim = batch_dim if len(arrays_np) < 2 else _broadcast_inputs_static(arrays_np, batch_dim)
        tensors_given = pytorch_style(arrays)
        variant = self._variant_for(numbers_weak(fn, number_positions(arrays)), arrays_np, batch_dim, extra, tensors_given)
        return _EAGER if variant is None else variant

    def _inference_call(self, variant: Any, arrays: tuple[Any, ...], arrays_np: list[np.ndarray]) -> Any:
        if variant is _EAGER:
            return _EAGER
        tensors_given = pytorch_style(arrays)
        feeds = [*arrays_np, *[plain(p.data) for p in variant.parameters]]  # plain views: outputs written in place are them
        feeds += variant.lifted.arrays()
        feeds += variant.captured.inputs() if variant.captured is not None else []
        if variant.reads_seed:
            feeds.append(self._seed_feed())
        outputs = variant.executable(*feeds)
        variant.modes.replay()
        outputs = variant.writes.replayed(outputs)
        if variant.lifted.written:
            outputs, written = outputs[: -len(variant.lifted.written)], outputs[-len(variant.lifted.written) :]
            variant.lifted.write_back(written)
        outputs = written_back(variant.buffers, variant.captured, variant.donations, outputs, feeds,
                               feeds[len(arrays_np) :])
        outputs = write_back_argument_grads(arrays, variant.marked_arguments, variant.argument_grads, outputs,
                                            variant.grad_leaves)
        outputs = write_back_arguments(arrays, variant.argument_writes, outputs)
        if variant.returns_none:
            return None
        if not tensors_given:  # NumPy in: the leaves, flat
            return outputs[0] if len(outputs) == 1 else outputs
        outputs = tuple(eager_leaf(o) for o in outputs)  # tensors in, tensors out (with no chain), as torch.compile's
        return _nested(variant.structure, outputs)

    def _seed_feed(self) -> np.ndarray:
        """The call's ``rng_seed``: ``seed * 2**20 + k`` on the ``k``-th drawing call; without a ``seed`` (a compiled
        training step), one drawn from kiln's generator, as eager dropout's (``kiln.manual_seed`` repeats a run)."""
        if self.seed is None:
            return init.draw_seed()
        self.calls += 1
        return np.asarray(self.seed * 2**20 + self.calls - 1, dtype=np.int64)

    def _training_variant(self, fn: Callable[..., Any], arrays_np: list[np.ndarray], extra: Hashable,
                          wants_grad: tuple[bool, ...], flags: tuple[bool, ...]) -> TrainingVariant | None:
        """For a call whose outputs ``loss.backward()`` will differentiate: the compiled forward, which the call records
        on the eager chain as one op whose backward is compiled with the loss's (``runtime/compiled_training.py``).
        None where ``fn`` cannot be traced: the call runs eagerly."""
        key = (tuple((a.shape, a.dtype.str) for a in arrays_np), wants_grad, autocast_signature(), flags, extra)
        variant = self.training_variants.get(key)
        if variant is not None and not variant.holds(arrays_np):  # a closure tensor or an input value it read changed
            del self.training_variants[key]
            if self._earlier_training_variant(key, variant, arrays_np):
                return self.training_variants[key]
            if self._retraced_past_limit(key, variant, arrays_np):
                return None
        if key not in self.training_variants:
            if sum(variant is not None for variant in self.training_variants.values()) >= self.recompile_limit:
                return self._over_limit(key)
            self.training_variants[key] = self._compile_training(fn, arrays_np, wants_grad)
        return self.training_variants[key]

    def _earlier_training_variant(self, key: tuple[Any, ...], failed: TrainingVariant, arrays_np: list[np.ndarray]) -> bool:
        """Keep ``failed`` (its guards fail now) among the signature's earlier forwards and make the one whose guards
        hold the current one, if any (True); an int read that changed is a number that changes from now on instead,
        traced again (False), as is a call no earlier forward fits. At most ``recompile_limit`` are kept."""
        earlier = self.training_superseded.setdefault(key, [])
        earlier.append(failed)
        del earlier[: -self.recompile_limit]
        if self.dynamic_ints.mark_changed(failed.attributes):  # an int it read changed: a number that changes
            return False
        match = next((variant for variant in earlier if variant.holds(arrays_np)), None)
        if match is not None:
            earlier.remove(match)
            self.training_variants[key] = match
        return match is not None

    def _retraced_past_limit(self, key: tuple[Any, ...], failed: TrainingVariant, arrays_np: list[np.ndarray]) -> bool:
        """Count a training forward traced again because ``failed``'s guards fail and no earlier one fits (a value read
        from the inputs, an attribute or global read); past ``recompile_limit`` such traces the signature runs eagerly
        (warned, naming what changed; ``fullgraph`` raises), as the inference calls' ``_guarded_variant``."""
        self.value_retraces[key] = self.value_retraces.get(key, 0) + 1
        if self.value_retraces[key] < self.recompile_limit:
            return False
        if failed.attributes.reads_hold():
            reason = _VALUES_CHANGE if not failed.value_guards.hold(arrays_np) else "its guards fail at every call"
        else:
            reason = _READ_CHANGES.format(failed.attributes.changed_read_names())
        self._eager_past_limit(f"{self._variants_traced()}: {reason}", tensors_given=True)  # fullgraph: raised
        self.training_variants[key] = None
        return True

    def _over_limit(self, key: tuple[Any, ...]) -> None:
        """None (run eagerly) for a training call past ``recompile_limit`` traced shapes, warned once, as
        ``torch.compile`` falls back at its ``cache_size_limit``; the shape keeps running eagerly."""
        self.training_variants[key] = None
        self._warn_eager(f"{self.recompile_limit} input signatures are compiled already (recompile_limit), as by "
                         "sequences padded to their batch's length; pad to a few fixed lengths to keep them compiled")

    def _variant_for(self, fn: Callable[..., Any], arrays: list[np.ndarray], batch_dim: BatchDim, extra: Hashable,
                     tensors_given: bool, traced: bool = False) -> _Variant | None:
        """The variant for these arrays' signature (traced on first sight, again where a step's guards fail); one per
        exact shape where the trace needed static shapes. ``traced``: this call traced it (the static retry)."""
        key = (batch_signature(arrays, batch_dim), autocast_signature(), extra, batch_dim)  # in a region or not
        if key not in self.variants:
            traced = True
            self.variants[key] = self._inference_variant(fn, arrays, batch_dim, extra, tensors_given)
        variant = self.variants[key]
        if variant is _STATIC:
            return self._variant_for(fn, arrays, None, extra, tensors_given, traced)
        if variant is _SPECIALIZED:
            return self._specialized_variant(key, fn, arrays, batch_dim, extra, tensors_given, traced)
        if variant is not None and not traced and not variant.holds(arrays):  # the state changed: an earlier variant, or trace again
            variant = self.variants[key] = self._guarded_variant(key, fn, arrays, batch_dim, extra, tensors_given)
            if variant is _STATIC or variant is _SPECIALIZED:  # the new trace needs static shapes or number values
                return self._variant_for(fn, arrays, batch_dim, extra, tensors_given, True)
        return variant

    def _specialized_variant(self, key: tuple[Any, ...], fn: Callable[..., Any], arrays: list[np.ndarray],
                             batch_dim: BatchDim, extra: Hashable, tensors_given: bool, traced: bool) -> _Variant | None:
        """The variant for this call's number values, traced with them as constants (``numbers_fixed``); past
        ``recompile_limit`` values, None (the call runs eagerly, warned), as ``torch.compile`` at its cache limit."""
        values = tuple(arrays[k].item() for k in fn.numbers)  # type: ignore[attr-defined]
        seen = self.specialized.setdefault(key, set())
        if values not in seen and len(seen) >= self.recompile_limit:
            return self._eager_past_limit(f"{self.recompile_limit} values of its number arguments are compiled already "
                                          "(recompile_limit): the function needs their values (a branch on one); pass a "
                                          "0-d tensor for a value that changes", tensors_given)
        seen.add(values)
        return self._variant_for(numbers_fixed(fn, values), arrays, batch_dim, (extra, values), tensors_given, traced)

    def _guarded_variant(self, key: tuple[Any, ...], fn: Callable[..., Any], arrays: list[np.ndarray],
                         batch_dim: BatchDim, extra: Hashable, tensors_given: bool) -> Any:
        """The superseded variant for ``key`` whose guards hold now, else a new trace; at most ``recompile_limit``
        kept (the oldest dropped)."""
        earlier = self.superseded.setdefault(key, [])
        earlier.append(self.variants[key])
        if self.dynamic_ints.mark_changed(earlier[-1].writes):  # a counter: traced once more, as a number that changes
            return self._inference_variant(fn, arrays, batch_dim, extra, tensors_given or earlier[-1].captured is not None)
        match = next((variant for variant in earlier if variant.holds(arrays)), None)
        if match is None and len(earlier) >= self.recompile_limit:  # traced again at every call: none fits for long
            return self._past_recompile_limit(earlier[-1], arrays, tensors_given)
        if match is None:
            match = self._inference_variant(fn, arrays, batch_dim, extra, tensors_given or earlier[-1].captured is not None)
        else:
            earlier.remove(match)
        del earlier[: -self.recompile_limit]
        return match

    def _past_recompile_limit(self, last: _Variant, arrays: list[np.ndarray], tensors_given: bool) -> None:
        """None (run eagerly from now on, warned once) where ``recompile_limit`` variants of one signature were traced
        and the state fits none of them, as ``torch.compile`` falls back at its cache limit: most often an attribute
        the function changes at every call (a counter), whose every value the graph would need."""
        if last.writes.hold() and not last.value_guards.hold(arrays) and self.dynamic_ints.marked:
            return self._eager_past_limit(f"{self._variants_traced()} and none fits: the Python needs the value of "
                                          f"{self.dynamic_ints.names()}, which it changes at every call (a float or a "
                                          "string of it), or of its inputs; keep a count as a tensor buffer "
                                          "(register_buffer) or outside the compiled function", tensors_given)
        if last.writes.hold() and not last.value_guards.hold(arrays):
            return self._eager_past_limit(f"{self._variants_traced()} and none fits: {_VALUES_CHANGE}", tensors_given)
        if not last.writes.reads_hold():
            changed_reads = _READ_CHANGES.format(last.writes.changed_read_names())
            return self._eager_past_limit(f"{self._variants_traced()} and none fits: {changed_reads}", tensors_given)
        described = last.captured.changes() if last.captured is not None else []
        if described:  # a user's optimizer keeping a Python int in its state (transformers' Adafactor's step)
            return self._eager_past_limit(f"{self._variants_traced()} and none fits: it changes {'; '.join(described)} "
                                          "at every call; keep such a count in a tensor (state['step'] = "
                                          "torch.zeros(()), as torch's optimizers do)", tensors_given)
        changed = f"it sets {last.writes.names()} at every call" if not last.writes.hold() else "its guards fail at every call"
        return self._eager_past_limit(f"{self._variants_traced()} and none fits: {changed}; keep a count as a tensor "
                                      "buffer (register_buffer) or outside the compiled function", tensors_given)

    def _variants_traced(self) -> str:
        """The start of a recompile-limit message: how many variants of one call were traced."""
        return f"{self.recompile_limit} variants of this call are traced (recompile_limit)"

    def _eager_past_limit(self, reason: str, tensors_given: bool) -> None:
        """None (the call runs eagerly, warned once) past a recompile limit; with ``fullgraph``, or on a NumPy call
        (which has no eager fallback), the reason is raised instead."""
        if self.fullgraph or not tensors_given:
            raise KilnError(f"kiln.compile: {reason}")
        self._warn_eager(reason)
        return None

    def _inference_variant(self, fn: Callable[..., Any], arrays: list[np.ndarray], batch_dim: BatchDim, extra: Hashable,
                           tensors_given: bool) -> Any:
        """The compiled function, or None (warned once) where a PyTorch-style call (tensors given) cannot be traced: a
        branch on ``.item()``, a scheduler stepped inside a training step. Its calls then run
        eagerly, as ``torch.compile`` runs what it cannot capture; NumPy calls and ``fullgraph=True`` raise.

        A function that traces only with static shapes (it slices the batch by a constant: micro-batches by
        ``x[:16]``, ``x.chunk(2)``) gives ``_STATIC``, and its calls get one variant per exact shape instead."""
        try:
            return self._compile(fn, arrays, batch_dim, tensors_given)
        except (KilnError, TypeError) as error:  # TypeError: Python arithmetic on a symbolic dim (x.shape[0] // 2)
            static_error = self._static_trace_error(fn, arrays, extra, tensors_given) if _symbolic(arrays, batch_dim) else error
            if static_error is None:
                return _STATIC
            if getattr(fn, "numbers", ()):  # a number the trace needs the value of: traced as a constant per value
                return _SPECIALIZED
            if self.fullgraph or not tensors_given or isinstance(static_error, TypeError):
                if static_error is error:
                    raise
                raise static_error from None  # the blocker left once shapes are static, not the symbolic trace's
            self._warn_eager(_eager_reason(static_error))
            return None

    def _static_trace_error(self, fn: Callable[..., Any], arrays: list[np.ndarray], extra: Hashable,
                            tensors_given: bool) -> Exception | None:
        """None where ``fn`` traces with static shapes (the variant is kept for these exact shapes), else the static
        trace's error: what stops the trace once shapes are not the question (the error shown)."""
        key = (batch_signature(arrays, None), autocast_signature(), extra, None)
        try:
            static = self._compile(fn, arrays, None, tensors_given)
        except (KilnError, TypeError) as error:
            return error
        self.variants.setdefault(key, static)
        return None

    def _warn_eager(self, reason: str) -> None:
        if not self.trained_eagerly:
            self.trained_eagerly = True
            warnings.warn(f"kiln.compile: this call runs eagerly, op by op ({reason}); loss.backward() still reaches the "
                          "parameters. For one compiled training step use kiln.compile_train_step(model, loss_fn, "
                          "optimizer)", stacklevel=user_stacklevel())

    def _compile_training(self, fn: Callable[..., Any], arrays: list[np.ndarray],
                          wants_grad: tuple[bool, ...]) -> TrainingVariant | None:
        """The training variant, or None (warned once) where ``fn`` cannot be traced: its calls then run eagerly
        (with ``fullgraph=True``, the trace's error is raised instead, as ``torch.compile``'s)."""
        reason = "" if self.backend == "numpy" else f"the {self.backend} backend's arrays are not the eager chain's"
        if not reason:
            try:
                return self._training_trace(fn, arrays, wants_grad)
            except BackwardInCompiledForward:
                raise
            except KilnError as error:
                if self.fullgraph:
                    raise
                reason = _eager_reason(error)
        self._warn_eager(reason)
        return None

    def _training_trace(self, fn: Callable[..., Any], arrays: list[np.ndarray], wants_grad: tuple[bool, ...]) -> TrainingVariant:
        """``compile_training`` of ``fn``; where the forward sets an int attribute (a Neural ODE's ``self.nfe += 1``),
        traced again reading it as a number that changes, and where that fails, as before (``dynamic_attributes``)."""
        try:
            return self._training_trace_once(fn, arrays, wants_grad)
        except BackwardInCompiledForward:
            raise
        except AttributesSetPerTrace as error:
            if not self.dynamic_ints.mark_ints(error.writes):
                raise
        except Exception:  # Python that needs the int itself
            if not self.dynamic_ints.refuse_placed():
                raise
        return self._training_trace(fn, arrays, wants_grad)  # ends: each retry marks a new counter or refuses one

    def _training_trace_once(self, fn: Callable[..., Any], arrays: list[np.ndarray],
                             wants_grad: tuple[bool, ...]) -> TrainingVariant:
        self.trace_count += 1
        watched = checking_reachable_stores(watching_plain_owner(fn, self.fn), self.fn)
        watched = guarding_namespace_reads(_refusing_unreplayable(watched, self.fn), self.fn)
        traced = self.dynamic_ints.tracing(watched)
        try:
            with tracing_compiled_forward():  # a backward() inside: a whole step (frontend/whole_step_inputs.py)
                variant = compile_training(traced, arrays, wants_grad, self.backend, self.pipeline)
            variant.module_structure = ModuleStructure.reached_by(self.fn)
            self.dynamic_ints.follow(variant.lifted)
            return variant
        finally:
            self.dynamic_ints.restore()  # the counters read as numbers that change hold their ints again

    def __getattr__(self, name: str) -> Any:
        """What the compiled module does not have it takes from ``fn``, as ``torch.compile``'s module is the module:
        ``model.eval()``, ``model.parameters()``, ``model.state_dict()``; a method returning ``fn`` itself (``train``,
        ``eval``, ``to``) returns this compiled function, so ``model = model.eval()`` stays compiled. A submodule is the
        module itself (``compiled.retnet.retentions[0]``), as ``torch.compile``'s."""
        if name.startswith("__") or name in _FIELDS:
            raise AttributeError(name)
        fn = self.__dict__["fn"]
        attribute = getattr(fn, name)
        if not callable(attribute) or isinstance(attribute, (type, Module)):
            return attribute

        def forwarded(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            return self if result is fn else result

        return forwarded

    @property
    def graph(self) -> Graph:
        return [variant for variant in self.variants.values() if isinstance(variant, _Variant)][-1].graph

    def _compile(self, fn: Callable[..., Any], arrays: list[np.ndarray], batch_dim: BatchDim, tensors_given: bool) -> _Variant:
        """The trace of ``fn`` compiled; where it fails with a counter read as a number that changes (Python that needs
        the int itself), traced again with that counter's value (``runtime/dynamic_attributes.py``)."""
        try:
            return self._compile_once(fn, arrays, batch_dim, tensors_given)
        except Exception:  # an assert isinstance(n, int) too: the trace that did not read a counter so decides
            if not self.dynamic_ints.refuse_placed():
                raise
        return self._compile_once(fn, arrays, batch_dim, tensors_given)

    def _compile_once(self, fn: Callable[..., Any], arrays: list[np.ndarray], batch_dim: BatchDim,
                      tensors_given: bool) -> _Variant:
        self.trace_count += 1
        captures: list[StepCapture] = []  # a training step's backward() and optimizer.step() (runtime/step_capture.py)
        step = capturing(fn, captures, self.grad_arguments, lambda: self.arguments_now)
        traced = checking_reachable_stores(watching_plain_owner(step, self.fn), self.fn)
        traced = guarding_namespace_reads(_refusing_unreplayable(traced, self.fn), self.fn)
        specializing = specializing_on(lifting_eager_tensors(self.dynamic_ints.tracing(traced)), arrays)  # values read: guarded
        try:
            with static_on_demand(frozenset({BATCH})):  # x[0] of the batch: traced again with static shapes
                context = trace_context(named_like(specializing, traced), *batch_specs(arrays, batch_dim),
                                        what="the compiled function's result")
            try:
                variant = self._compiled_trace(context, captures, tensors_given, len(arrays))
            except KilnError:
                context.restore_attributes()  # the call runs eagerly (or raises): the trace did not stand for it
                raise
            self.dynamic_ints.follow(variant.lifted)
            return variant
        finally:
            self.dynamic_ints.restore()  # the counters read as numbers that change hold their ints again

    def _compiled_trace(self, context: TraceContext, captures: list[StepCapture], tensors_given: bool, arguments: int) -> _Variant:
        """The traced ``context`` compiled. Random ops draw at each call: from ``seed`` where given, else from kiln's
        generator on a PyTorch-style call (tensors given: dropout in training mode, as ``torch.compile``'s; repeated
        by ``kiln.manual_seed``); a NumPy call without a seed refuses them (a model left in training mode)."""
        seed = context.seed_input
        step = captures[0] if captures and captures[0].captured() else None
        if seed is not None and self.seed is None and step is None and not tensors_given:
            raise KilnError(
                f"kiln.compile traced random ops (dropout in training mode, a sample) in {context.graph.name}"
                f"{_first_draw(seed)}; call model.eval() first, or pass kiln.compile(fn, seed=0) to draw (each call anew), "
                "or train it with kiln.compile_train_step, which feeds the seed")
        needs_chain = _outputs_need_chain(context)
        arguments_given = context.graph.inputs[:arguments]
        buffers = in_call_order(context)
        parameter_inputs = [context.parameter_values[id(p)] for p in context.parameters]
        lifted_after_parameters(context.graph, context.lifting, parameter_inputs, arguments)
        captured = step.finish() if step is not None else None
        context.graph.outputs += context.lifting.restore_written()  # closure tensors written in place, then
        lifted = LiftedTensors(context.lifting)
        value_guards = guards_of(context, arguments_given, lifted)
        writes = _attribute_writes(context, lifted)
        _follow_plain_attributes(lifted, plain_owners(self.fn))
        if writes.namespace is not None:
            writes.namespace.follow_lifted(lifted)
        if writes.stores is not None:
            writes.stores.follow_lifted(lifted)
        context.graph.outputs += writes.traced_values()  # attributes set to a traced tensor: last
        donations = self._donations(context, step)
        PassManager(self.pipeline).run(context.graph)
        context.graph.donations = donations
        executable = get_backend(self.backend).compile(context.graph)
        return _Variant(context.graph, executable, context.parameters, buffers, seed is not None, captured,
                        captures[0].returned_none, captures[0].structure, captures[0].modes(), writes, donations, lifted,
                        needs_chain, value_guards, argument_writes=captures[0].argument_writes,
                        marked_arguments=captures[0].marked_arguments, argument_grads=captures[0].argument_grads,
                        grad_leaves=self.grad_arguments.leaves, bindings=bindings_guard(self.fn), module_structure=ModuleStructure.reached_by(self.fn))

    def _donations(self, context: TraceContext, step: StepCapture | None) -> dict[int, int]:
        """What the backend may update in place: each updated parameter or buffer and each optimizer state, as
        ``compile_train_step``'s. On NumPy only, which writes into the fed array; the others keep a donated result
        resident for a caller that passes ``RESIDENT``, which a call here never does."""
        if self.backend != "numpy":
            return {}
        pairs = [(context.parameter_values[key], value) for key, (_, value) in context.buffer_updates.items()
                 if key in context.parameter_values]
        return value_donations(context.graph, pairs + (step.donated if step is not None else []))


_READ_CHANGES = ("it reads {}, which changes at every call (each trace bakes in the value it read, as "
                 "torch.compile's guards do); keep a value that changes at every call in a tensor (a buffer filled in "
                 "place, or an argument) so the graph takes it as an input")
_VALUES_CHANGE = ("a value it reads from its inputs (item(), int() or bool() of a tensor, or a mask's positions: nonzero(), "
                  "x[mask]) differs at every call; compute with the tensor instead (kiln.where for a branch, a mask for a "
                  "length, the mask as weights for a selection)")


def _eager_reason(error: Exception) -> str:
    """An error's message for the eager-fallback warning, with the user's line where the error names it: a located
    error reads ``file:line in fn: source`` then the message (``frontend/trace.py`` ``located_error``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) < 2:
        return lines[0] if lines else type(error).__name__
    return f"{' '.join(lines[1:])}; at {lines[0]}"


def _nested(structure: Structure, outputs: tuple[Any, ...]) -> Any:
    """The outputs in the result's nesting (dicts, lists, tuples, a 1-tuple too); without a nesting recorded, one
    output, or a flat tuple."""
    if structure is None:
        return outputs[0] if len(outputs) == 1 else outputs
    return unflatten(structure, outputs)


def _symbolic(arrays: list[np.ndarray], batch_dim: BatchDim) -> bool:
    """Whether some array gets a symbolic batch dim."""
    return any(axis is not None for axis in batch_axes(arrays, batch_dim))


def _broadcast_inputs_static(arrays: list[np.ndarray], batch_dim: BatchDim) -> BatchDim:
    """``batch_dim`` with the inputs whose batch dim is not the largest made static: a broadcast operand (an attention
    bias of shape (1, H, L, S) beside a batch of 8, as ``torch.compile`` keeps size-1 dims) or an input of its own
    length (a table of 4 rows beside a batch of 32); they share no symbolic batch size with the batch."""
    axes = batch_axes(arrays, batch_dim)
    sizes = [None if axis is None else array.shape[axis] for array, axis in zip(arrays, axes)]
    largest = max((size for size in sizes if size is not None), default=None)
    if all(size in (None, largest) for size in sizes):
        return batch_dim
    return tuple(None if size != largest else axis for size, axis in zip(sizes, axes))


_FIELDS = frozenset(CompiledFunction.__dataclass_fields__)
"""The compiled function's own attributes: never looked up on ``fn`` (while the dataclass is being built or copied)."""
_STATIC = object()
"""A signature whose trace needed static shapes: its calls look up their exact shape's variant."""
_SPECIALIZED = object()
"""A signature whose trace needed the values of its number arguments: its calls look up their values' variant."""
_EAGER = object()
"""What a call whose trace failed gives back: run ``fn`` itself."""


def pytorch_style(arrays: tuple[Any, ...]) -> bool:
    """Whether a call is PyTorch's kind, which gets tensors back and runs eagerly where it cannot be traced: given a
    tensor, or nothing at all (a step reading its model and data from a closure, as ``torch.compile``d code calls
    ``train_step()``); a call given NumPy arrays gets NumPy arrays back."""
    return not arrays or any(isinstance(a, Tensor) for a in arrays)


def _training_signature(fn: Callable[..., Any], arrays: tuple[Any, ...]) -> tuple[tuple[bool, ...], tuple[bool, ...]] | None:
    """For a call whose outputs a backward may differentiate, as ``torch.compile``'s module's (outside a trace, with
    gradients enabled, given eager tensors: NumPy arrays get the inference function; and either a tensor that requires
    a gradient or a module with trainable parameters, in training or eval mode: fine-tuning with frozen BatchNorm
    statistics trains in eval mode): which arrays require a gradient, and what else its trace depends on (each
    submodule's mode, which parameters are trained). None for any other call."""
    from kiln.frontend.grad_mode import is_grad_enabled
    from kiln.frontend.module import Module
    from kiln.frontend.tensor import Tensor

    if TraceContext.active() or not any(isinstance(a, Tensor) for a in arrays) or not is_grad_enabled():
        return None
    wants_grad = tuple(isinstance(a, Tensor) and a.requires_grad for a in arrays)
    if not isinstance(fn, Module):
        return (wants_grad, ()) if any(wants_grad) else None
    trained = tuple(p.requires_grad for p in fn.parameters())
    if not any(wants_grad) and not any(trained):
        return None
    return wants_grad, (*[m.training for m in fn.modules()], *trained)


def _closure_training(variant: Any, arrays: tuple[Any, ...]) -> tuple[tuple[bool, ...], tuple[Any, ...]] | None:
    """``_training_signature``'s answer for a PyTorch-style call with gradients enabled whose trace read a trained
    parameter that is not the compiled module's (a closure's model: ``kiln.compile(lambda x: model(x).sum())``) or a
    closure tensor that requires grad: its outputs need a chain back to them, as ``torch.compile``'s. The parameters'
    flags and the modes the trace read key the training variant, as a module's do. None for any other call, and for
    a whole training step (its ``backward()`` is in the graph)."""
    from kiln.frontend.grad_mode import is_grad_enabled

    if variant is _EAGER or not variant.needs_chain or variant.captured is not None or not is_grad_enabled():
        return None
    if not pytorch_style(arrays):
        return None
    trained = tuple(p.requires_grad and p.dtype.is_float for p in variant.parameters)
    return (False,) * len(arrays), ("closure", trained, tuple(mode for _, mode in variant.modes.read))


def _attribute_writes(context: TraceContext, lifted: LiftedTensors) -> AttributeWrites:
    """The attribute writes of a finished trace; where one sets a traced tensor in place of a tensor the trace read
    (``self.h = self.h * 0.5 + x``), that input is fed from the attribute at each call (the last call's tensor)."""
    writes = AttributeWrites.of(context)
    read = {id(tensor) for tensor in lifted.tensors}
    for module, name, before in writes.tensors:
        if id(before) in read:
            lifted.follow_attribute(before, module, name)
    return writes


def _follow_plain_attributes(lifted: LiftedTensors, owners: list[Any]) -> None:
    """Feed each lifted tensor a plain object's attribute holds from that attribute at each call, as ``torch.compile``
    reads the attribute anew: the program may set it to another tensor between calls (a draw fed to the step,
    ``holder.noise = torch.rand(...)``), which a trace keeping the tensor it read would miss."""
    lifted_ids = {id(tensor) for tensor in lifted.tensors}
    for owner in owners:
        for name, value in list(getattr(owner, "__dict__", {}).items()):
            if id(value) in lifted_ids:
                lifted.follow_attribute(value, owner, name)


def _outputs_need_chain(context: TraceContext) -> bool:
    """``_Variant.needs_chain`` of a finished trace (before its buffer updates join the outputs)."""
    from kiln.frontend.module import Buffer
    from kiln.frontend.traced_requires_grad import traced_requires_grad

    if any(not isinstance(written, Buffer) for written, _ in context.buffer_updates.values()):
        return False  # p.data *= 0.5 then model(x): its gradient is the written value's, which the split cannot give
    with context:
        return any(traced_requires_grad(value) for value in context.graph.outputs)


def _first_draw(seed: Value) -> str:
    """Where the first random op reading ``seed`` was traced (``, the first at model.py:14 in forward: ...``), if known."""
    located = [op.location for op, _ in seed.uses if op.location]
    return f", the first at {located[0]}" if located else ""


def compile(fn: Callable[..., Any] | None = None, backend: str = "numpy", pipeline: str = DEFAULT_PIPELINE,
            batch_dim: BatchDim = 0, seed: int | None = None, *, fullgraph: bool = False, dynamic: bool | None = None,
            mode: str | None = None, options: dict[str, Any] | None = None, disable: bool = False) -> Any:
    """Compile ``fn`` for ``backend``; it traces on the first call with each new input signature. ``batch_dim`` names
    each input's batch dim (0 by default; 1 for sequence-first inputs; ``None`` for static shapes). ``seed`` lets
    ``fn`` draw random numbers (a policy's ``Categorical(logits).sample()``), fresh on every call.

    ``torch.compile``'s arguments work as there: without ``fn``, a decorator; ``fullgraph=True`` raises where a
    training forward cannot be traced (else it runs eagerly, warned once); ``dynamic=False`` traces static shapes;
    ``mode`` is checked (kiln compiles one way for every mode); ``backend="inductor"`` is kiln's default,
    ``"eager"``/``"aot_eager"`` and ``disable=True`` give ``fn`` back uncompiled; ``options`` (TorchInductor's) are
    refused."""
    if fn is None:
        return lambda f: compile(f, backend, pipeline, batch_dim, seed, fullgraph=fullgraph, dynamic=dynamic, mode=mode,
                                 options=options, disable=disable)
    backend = checked_backend(backend, mode, options)
    if disable or backend in UNCOMPILED_BACKENDS:
        return fn
    get_backend(backend)
    from kiln.frontend.module import Module
    from kiln.runtime.compiled_module import CompiledModule  # a Module too: it imports this file

    kind = CompiledModule if isinstance(fn, Module) else CompiledFunction
    compiled = kind(fn, backend, pipeline, None if dynamic is False else batch_dim, seed)
    compiled.fullgraph = fullgraph
    return compiled
