"""The compiled training step: forward, backward, gradient transforms and optimizer update as one graph.

```python
step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.Adam(model.parameters(), lr=1e-3),
                               clip_grad_norm=1.0, accumulate=4)
loss = step(x, y)     # compiles on the first call; the batch dim is symbolic
step.save("run.npz")  # model, optimizer state and step counter; step.load("run.npz") resumes exactly
```

The graph maps ``(batch, params, optimizer state, lr, step) -> (loss, new
params, new state)`` (see ``runtime/step_graph.py``). After each call the new
values are written into the parameters' and the optimizer's arrays in place,
so ``model.state_dict()`` sees them, and ``optimizer.step_count`` goes up by
one. A new compile happens only for a new non-batch shape or dtype, or when an
optimizer option that is not a graph input (momentum, betas, groups; a momentum a
scheduler cycles is one: ``Optimizer.feed_as_input``) changes.

Options:

- ``clip_grad_norm=max_norm``: rescale all gradients by ``min(1, max_norm / (norm + 1e-6))``
  of their global 2-norm (``torch.nn.utils.clip_grad_norm_``).
- ``clip_grad_value=v``: clamp each gradient to ``[-v, v]`` (applied before the norm clip).
- ``accumulate=k``: each call's batch splits into ``k`` equal micro-batches inside the one
  graph (k forward/backward passes, one update); the loss and gradients are the means over
  micro-batches, as ``(loss / k).backward()`` per micro-batch does in PyTorch.
- ``loss_scale=s``: the loss is multiplied by ``step.loss_scale`` (a graph input, so a
  dynamic scaler can change it without recompiling) before autodiff and the gradients are
  divided by it; the returned loss is unscaled. There is no inf/nan check yet.
- ``batch_dim``: each input's batch dim (default 0; ``1`` for sequence-first ``(L, N, ...)`` inputs, a tuple for one
  per input, ``None`` for static shapes): the graph's symbolic dim, and the dim ``accumulate`` splits
  (``runtime/batch_dims.py``).
- ``pipeline``, ``verify_each``, ``print_ir_after_all``: the pass manager's.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from kiln.backends import get_backend
from kiln.compiler.errors import CheckpointError, InputError, KilnError
from kiln.compiler.ir.core import Graph
from kiln.compiler.ops.optim import hyper_dtype
from kiln.compiler.passes.manager import PassManager
from kiln.frontend.autocast import autocast_signature
from kiln.frontend.module import Module
from kiln.frontend.module_registry import CHANGES
from kiln.frontend.optim import Optimizer
from kiln.frontend.optim_combined import Combined
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TensorSpec
from kiln.runtime import checkpoint
from kiln.runtime.executable import Executable
from kiln.runtime.batch_dims import BatchDim, batch_signature, batch_specs, split_micro_batches
from kiln.runtime.donation import buffer_inputs, step_donations
from kiln.runtime.lazy import LazyScalar
from kiln.runtime.resident import ResidentState
from kiln.runtime.step_graph import GradientOptions, StepGraph, build_step_graph, hyper_feeds, refuse_parameter_hooks

DEFAULT_PIPELINE = "canonicalize,constant-fold,cse,rematerialize,dce"
"""Graph-level cleanup; backends lower further (the NumPy backend fuses and plans memory on its copy)."""


@dataclass
class CompiledStep:
    """One compiled variant: the step graph (and where its inputs come from) and its executable."""

    step_graph: StepGraph
    executable: Executable
    comm: Any = None
    """The communicator of the model's tensor-parallel layers (their collectives run on it); None for most models."""

    @property
    def graph(self) -> Graph:
        return self.step_graph.graph


@dataclass
class TrainStep:
    model: Module
    loss_fn: Callable[..., Tensor]
    optimizer: Optimizer
    backend: str = "numpy"
    pipeline: str = DEFAULT_PIPELINE
    verify_each: bool = False
    print_ir_after_all: bool = False
    clip_grad_norm: float | None = None
    clip_grad_value: float | None = None
    accumulate: int = 1
    loss_scale: float | None = None
    """The current loss scale (a graph input: change it between steps freely), or None for none."""
    seed: int = 0
    """Seeds the random ops (dropout): step ``k`` draws from ``rng_seed = seed * 2**20 + k``, so a step replays given its seed."""
    data_parallel_ranks: int = 1
    """Ranks each batch is sharded over; ``kiln.distributed.DataParallel`` sets it so BatchNorm uses the global batch's statistics."""
    batch_dim: BatchDim = 0
    """Each input's batch dim, symbolic in the graph and split by ``accumulate`` (``runtime/batch_dims.py``)."""
    compiled: dict[tuple[Any, ...], CompiledStep] = field(default_factory=dict)
    compile_count: int = 0
    """How many times a graph was traced and compiled (a new input signature or optimizer option each)."""
    _resident: ResidentState = field(default_factory=ResidentState, repr=False)
    _hooks_checked: int = field(default=-1, repr=False)
    """``CHANGES`` when the parameters were last checked for hooks the step cannot call (``refuse_parameter_hooks``)."""

    def __post_init__(self) -> None:
        if not isinstance(self.accumulate, int) or self.accumulate < 1:
            raise KilnError(f"accumulate must be a whole number of micro-batches >= 1, got {self.accumulate!r}")
        for name in ("clip_grad_norm", "clip_grad_value", "loss_scale"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise KilnError(f"{name} must be > 0 (or None to turn it off), got {value!r}")

    @property
    def options(self) -> GradientOptions:
        return GradientOptions(self.accumulate, self.loss_scale is not None, self.clip_grad_value, self.clip_grad_norm, self.data_parallel_ranks)

    def __call__(self, *batch: Any) -> float:
        arrays = [array if hasattr(array, "__cuda_array_interface__") else np.asarray(array) for array in batch]  # device batches stay
        compiled = self._compiled_for(arrays)
        micro_batches = split_micro_batches(arrays, self.accumulate, self.batch_dim)
        feeds = self._feeds(compiled.step_graph, micro_batches)
        if compiled.comm is None:
            outputs = self._run(compiled, feeds, len(micro_batches))
        else:
            from kiln.runtime.distributed.communicator import using  # lazily: the distributed package imports this module

            with using(compiled.comm):  # the tensor-parallel layers' collectives run on their communicator
                outputs = self._run(compiled, feeds, len(micro_batches))
        self._write_back(compiled.step_graph, outputs[1:])
        self.optimizer.step_count += 1
        return outputs[0] if isinstance(outputs[0], LazyScalar) else float(outputs[0])  # asynchronous backends: read on demand

    def _run(self, compiled: CompiledStep, feeds: list[Any], batch_count: int) -> list[Any]:
        """Run the executable; on a backend that keeps state on its device, parameters and state stay there."""
        executable = compiled.executable
        if not getattr(executable, "keeps_state", False):
            return list(executable(*feeds))
        executable.lazy_outputs = True
        owners = {batch_count + i: p for i, p in enumerate(compiled.step_graph.parameters)}
        owners |= buffer_inputs(compiled.step_graph, batch_count)
        fed = self._resident.substitute(executable, owners, feeds)
        return self._resident.hold(executable, owners, fed, executable(*fed))

    def sync(self) -> None:
        """Bring parameters and optimizer state kept on a device back into their NumPy arrays."""
        self._resident.sync()

    @property
    def graph(self) -> Graph:
        """The most recently compiled graph (the IR of the step)."""
        if not self.compiled:
            raise InputError("the step has not been compiled yet: call it on a batch first (or call step.compile(*specs))")
        return list(self.compiled.values())[-1].graph

    def compile(self, *specs: TensorSpec) -> CompiledStep:
        """Trace and compile for these batch specs (the first dim of each is usually ``"N"``)."""
        self.compile_count += 1
        with collection_paused():
            step_graph = build_step_graph(self.model, self.loss_fn, self.optimizer, specs, self.options)
            PassManager(self.pipeline, verify_each=self.verify_each, print_ir_after_all=self.print_ir_after_all).run(step_graph.graph)
            step_graph.graph.donations = step_donations(step_graph, len(specs) * self.accumulate)  # updated in place
            return CompiledStep(step_graph, get_backend(self.backend).compile(step_graph.graph), self._tensor_parallel_comm())

    def _compiled_for(self, arrays: Sequence[np.ndarray]) -> CompiledStep:
        key = (batch_signature(arrays, self.batch_dim), self.optimizer.signature(), autocast_signature())  # a region around the call
        if key not in self.compiled:
            self.compiled[key] = self.compile(*batch_specs(arrays, self.batch_dim))  # specs (and their checks) only when compiling
        compiled = self.compiled[key]
        if self._hooks_checked != CHANGES[0]:  # a hook registered since (each registration counts a change)
            refuse_parameter_hooks(compiled.step_graph.parameters, lambda: {id(p): n for n, p in self.model.named_parameters()})
            self._hooks_checked = CHANGES[0]
        return compiled

    def _feeds(self, step_graph: StepGraph, micro_batches: list[np.ndarray]) -> list[np.ndarray]:
        """The arrays for every graph input, in the graph's order."""
        feeds = micro_batches + [p._data for p in step_graph.parameters + step_graph.frozen]  # _data: no device sync
        if step_graph.reads_seed:
            feeds.append(np.asarray(self.seed * 2**20 + self.optimizer.step_count, dtype=np.int64))
        feeds += [self.optimizer.state_of(p)[name] for p, names in zip(step_graph.parameters, step_graph.state_names) for name in names]
        if self.loss_scale is not None:
            feeds.append(np.asarray(self.loss_scale, dtype=hyper_dtype(step_graph.graph.outputs[0].type.dtype).numpy))
        feeds += hyper_feeds(self.optimizer, step_graph.hyper_inputs)
        if step_graph.reads_step:
            feeds.append(np.asarray(self.optimizer.step_count + 1, dtype=np.int64))
        return feeds

    def _write_back(self, step_graph: StepGraph, outputs: Sequence[Any]) -> None:
        count = len(step_graph.parameters)
        for param, new in zip(step_graph.parameters, outputs[:count]):
            if new is not None and new is not param._data:  # None: kept on the device (ResidentState); itself: donated
                np.copyto(param._data, new)
        states = iter(outputs[count:])
        for param, names in zip(step_graph.parameters, step_graph.state_names):
            if not names:
                continue  # plain SGD keeps no state: no lookup per parameter and step
            state = self.optimizer.state_of(param)
            for name in names:
                new = next(states)
                if new is not None and new is not state[name]:
                    np.copyto(state[name], new)
        for buffer in step_graph.buffers:  # running statistics, after the optimizer state
            new = next(states)
            if new is not None and new is not buffer._data:  # None: kept on the device; itself: donated
                np.copyto(buffer._data, new)

    # --- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``{"model": {name: array}, "optimizer": {"state": {name: {state name: array}}, "param_groups": [...], "step": int}}``.

        The arrays are the live ones (as PyTorch's ``state_dict``): copy them to keep a snapshot in memory.
        """
        self.sync()
        return training_state(self.model, self.optimizer)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore parameters, optimizer state and step counter in place; all is checked before anything is written."""
        write = prepare_training_state_load(self.model, self.optimizer, state)
        self._resident.invalidate()
        write()

    def save(self, path: str) -> None:
        """Write ``state_dict()`` to ``path`` atomically (``kiln.save``); ``step.load(path)`` restores it.

        A model with tensor-parallel layers (``ColumnParallelLinear``...) is saved unsplit: every rank calls this, rank 0
        joins the shards and alone writes the file (the one the unsplit model's step writes), and every rank raises if
        that write failed.
        """
        comm = self._tensor_parallel_comm()
        if comm is None:
            checkpoint.save(path, self.state_dict())
            return
        from kiln.runtime.distributed.tensor_parallel import save_unsplit

        save_unsplit(self, path, comm)

    def load(self, path: str) -> None:
        """Restore what ``save`` wrote. With tensor-parallel layers every rank calls this: rank 0 reads the unsplit file
        and broadcasts it (the other ranks need not see it), and each rank keeps its shards."""
        comm = self._tensor_parallel_comm()
        if comm is None:
            self.load_state_dict(checkpoint.load_arrays(path))
            return
        from kiln.runtime.distributed.tensor_parallel import load_unsplit

        load_unsplit(self, path, comm)

    def _tensor_parallel_comm(self) -> Any:
        """The communicator the model's tensor-parallel layers are split over; None for an ordinary model."""
        from kiln.runtime.distributed.tensor_parallel import tensor_parallel_comm  # lazily: the distributed package imports this module

        return tensor_parallel_comm(self.model)


def parameter_names(model: Module) -> dict[int, str]:
    """``id(parameter) -> name``: optimizer state is saved under the model's parameter names."""
    return {id(p): name for name, p in model.named_parameters()}


def training_state(model: Module, optimizer: Optimizer) -> dict[str, Any]:
    """``{"model": ..., "optimizer": ...}``, the tree ``TrainStep.save`` writes (live arrays, not copies)."""
    return {"model": dict(model.state_dict()), "optimizer": optimizer.kiln_state_dict(parameter_names(model))}


def prepare_training_state_load(model: Module, optimizer: Optimizer, state: Mapping[str, Any]) -> Callable[[], None]:
    """Check a ``training_state`` tree against the model and optimizer; returns the function that writes it in place.

    The model's keys and shapes are checked inside the returned function, before it writes anything.
    """
    missing = sorted({"model", "optimizer"} - set(state))
    if missing:
        raise CheckpointError(f"a training-step state needs 'model' and 'optimizer' entries; it lacks {missing}")
    write_optimizer = optimizer.prepare_load(state["optimizer"], parameter_names(model))

    def write() -> None:
        model.load_state_dict(state["model"])
        write_optimizer()

    return write


@contextmanager
def collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while compiling: a compile allocates many small objects (ops, values),
    and each full collection walks them all, which made the compile time of a 24-layer GPT grow faster than its op count."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_train_step(
    model: Module, loss_fn: Callable[..., Tensor], optimizer: Optimizer | Sequence[Optimizer], backend: str = "numpy", **options: Any
) -> TrainStep:
    """A callable ``step(*inputs, target) -> loss`` that trains ``model`` in place; compiles on the first call.

    ``optimizer``: one optimizer, or several over disjoint parameters (``[muon, adamw]``: ``kiln.optim.Combined``).

    ``options``: ``clip_grad_norm``, ``clip_grad_value``, ``accumulate``, ``loss_scale``, ``batch_dim``, ``pipeline``,
    ``verify_each``, ``print_ir_after_all`` (see the module docstring).
    """
    get_backend(backend)  # fail now, not at the first batch, on an unknown backend
    known = {"pipeline", "verify_each", "print_ir_after_all", "clip_grad_norm", "clip_grad_value", "accumulate", "loss_scale", "seed",
             "batch_dim"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise KilnError(f"compile_train_step has no option {', '.join(unknown)}; the options are {sorted(known)}")
    if isinstance(optimizer, (list, tuple)):
        optimizer = Combined(*optimizer)
    return TrainStep(model, loss_fn, optimizer, backend, **options)


__all__ = [
    "CompiledStep", "TrainStep", "batch_specs", "build_step_graph", "compile_train_step", "parameter_names", "prepare_training_state_load",
    "split_micro_batches", "training_state",
]
