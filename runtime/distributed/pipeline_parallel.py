"""``PipelineParallel``: one training step split into stages across ranks, GPipe-style micro-batches.

```python
pipe = PipelineParallel(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1), stages=2, micro_batches=4)
loss = pipe(x, y)    # every rank passes the same batch; rank r runs stage r only
pipe.save("run.npz") # every rank calls it; rank 0 gathers the stages and writes one file; pipe.load("run.npz") resumes
```

The step graph is built with ``accumulate=micro_batches`` (so the update is
the single-process step with gradient accumulation), then
``pipeline-split{stages=S rank=r}`` keeps this rank's stage with sends and
receives at its borders (see ``compiler/passes/pipeline_split.py``). Each rank
feeds, updates and creates optimizer state for its stage's parameters only;
micro-batches are cut along each input's ``batch_dim`` (``1`` for sequence-first
inputs), as ``TrainStep``'s ``accumulate`` cuts them;
the last stage's loss is broadcast so every rank returns it. At construction
every rank takes rank 0's parameters and buffers, as under ``DataParallel``.

``pipe.save(path)`` gathers the stages on rank 0 and writes one file in
``TrainStep.save``'s format; ``pipe.load(path)`` resumes from such a file
exactly (see ``runtime/distributed/pipeline_checkpoint.py``).

``kiln.fit(pipe, loader, checkpoint_dir=...)`` runs on every rank with the
same, unsharded loader: rank 0 logs and writes the rolling checkpoints (the
gathered state), and every rank resumes its stage from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from kiln.backends import get_backend
from kiln.compiler.errors import KilnError
from kiln.compiler.ir.core import Graph
from kiln.compiler.passes.manager import PassManager
from kiln.frontend.module import Module, Parameter
from kiln.frontend.optim import Optimizer
from kiln.frontend.tensor import Tensor
from kiln.runtime.distributed import pipeline_checkpoint
from kiln.runtime.distributed.communicator import Communicator, broadcast_arrays, current, using
from kiln.runtime.batch_dims import BatchDim, batch_signature, batch_specs, split_micro_batches
from kiln.runtime.donation import step_donations
from kiln.runtime.executable import Executable
from kiln.runtime.step_graph import GradientOptions, StepGraph, build_step_graph, hyper_value
from kiln.runtime.train_step import DEFAULT_PIPELINE, prepare_training_state_load

Feed = Callable[[], np.ndarray]


@dataclass
class PipelineParallel:
    replicated = False
    """Each rank holds only its stage's newest state: ``state_dict()`` gathers it on rank 0, which alone writes checkpoints
    (``save``, ``kiln.fit``'s); every rank must take part."""

    model: Module
    loss_fn: Callable[..., Tensor]
    optimizer: Optimizer
    stages: int = 2
    micro_batches: int = 4
    cuts: tuple[str, ...] = ()
    """Layer names that begin stages 1.. (``("fc3",)``); empty: balanced by estimated FLOPs."""
    batch_dim: BatchDim = 0
    """Each input's batch dim, split into the micro-batches (``runtime/batch_dims.py``; ``1`` for sequence-first)."""
    comm: Communicator | None = None
    pipeline: str = DEFAULT_PIPELINE
    """Cleanup passes run after the split."""
    step_graph: StepGraph | None = None
    executable: Executable | None = None
    signature: Any = None
    local: list[Parameter] = field(default_factory=list)
    """The parameters this rank's stage trains."""
    local_buffers: list[Parameter] = field(default_factory=list)
    """The buffers (BatchNorm's running statistics) this rank's stage updates."""

    def __post_init__(self) -> None:
        self.comm = self.comm or current()
        if self.comm.size != self.stages:
            raise KilnError(f"PipelineParallel: stages={self.stages} needs as many ranks, but this job has {self.comm.size}; launch mpiexec -n {self.stages}")
        # every stage starts from rank 0's model (as DataParallel): the run is the single-process run of that model
        broadcast_arrays([array for _, array in self.model.state_dict().items()], root=0, comm=self.comm)

    @property
    def graph(self) -> Graph:
        if self.step_graph is None:
            raise KilnError("the pipeline step has not been compiled yet: call it on a batch first")
        return self.step_graph.graph

    def __call__(self, *batch: Any) -> float:
        with using(self.comm):  # the stage's sends and receives run on this pipeline's communicator
            return self._step(batch)

    def _step(self, batch: Sequence[Any]) -> float:
        arrays = [np.asarray(array) for array in batch]
        self._compile_for(arrays)
        feeds = self._feeds(split_micro_batches(arrays, self.micro_batches, self.batch_dim))
        outputs = self.executable(*(feeds[i]() for i in self.graph.stage_inputs))
        self._write_back(dict(zip(self.graph.stage_outputs, outputs)))
        self.optimizer.step_count += 1
        return self._loss(outputs)

    def _compile_for(self, arrays: Sequence[np.ndarray]) -> None:
        signature = (batch_signature(arrays, self.batch_dim), self.optimizer.signature())
        if signature == self.signature:
            return
        step_graph = build_step_graph(self.model, self.loss_fn, self.optimizer, batch_specs(arrays, self.batch_dim), GradientOptions(self.micro_batches))
        joint_donations = step_donations(step_graph, len(arrays) * self.micro_batches)
        cuts = f" cuts={','.join(self.cuts)}" if self.cuts else ""
        split = f"pipeline-split{{stages={self.stages} rank={self.comm.rank}{cuts}}}"
        PassManager(f"{split},{self.pipeline}").run(step_graph.graph)
        graph = step_graph.graph
        graph.donations = _stage_donations(joint_donations, graph.stage_inputs, graph.stage_outputs)
        kept = set(graph.stage_outputs)
        self.local = [p for i, p in enumerate(step_graph.parameters) if 1 + i in kept]
        first_buffer = 1 + len(step_graph.parameters) + sum(map(len, step_graph.state_names))  # outputs: loss, params, states, buffers
        self.local_buffers = [b for j, b in enumerate(step_graph.buffers) if first_buffer + j in kept]
        self.step_graph, self.signature = step_graph, signature
        self.executable = get_backend("numpy").compile(graph)
        self._keep_stage_optimizer_state()

    def _feeds(self, micro_batches: list[np.ndarray]) -> list[Feed]:
        """One thunk per input of the joint graph, in its order (as ``TrainStep._feeds``); only the stage's are called."""
        step_graph = self.step_graph
        assert step_graph is not None
        feeds: list[Feed] = [lambda a=a: a for a in micro_batches]
        feeds += [lambda p=p: p.data for p in step_graph.parameters + step_graph.frozen]
        if step_graph.reads_seed:
            feeds.append(lambda: np.asarray(self.optimizer.step_count, dtype=np.int64))
        for param, names in zip(step_graph.parameters, step_graph.state_names):
            feeds += [lambda p=param, n=name: self.optimizer.state_of(p)[n] for name in names]
        for group, name in step_graph.hyper_inputs:
            feeds.append(lambda g=group, n=name: self._hyper(g, n))
        if step_graph.reads_step:
            feeds.append(lambda: np.asarray(self.optimizer.step_count + 1, dtype=np.int64))
        return feeds

    def _hyper(self, group: int, name: str) -> np.ndarray:
        return hyper_value(self.optimizer, group, name)  # in the step graph's input dtype (float64 for half parameters)

    def _write_back(self, outputs: dict[int, Any]) -> None:
        """Joint output ``1 + i`` is parameter ``i``'s new value; the optimizer states follow, then the buffers."""
        step_graph = self.step_graph
        assert step_graph is not None
        targets: list[Callable[[], np.ndarray]] = [lambda p=p: p.data for p in step_graph.parameters]
        for param, names in zip(step_graph.parameters, step_graph.state_names):
            targets += [lambda p=param, n=name: self.optimizer.state_of(p)[n] for name in names]
        targets += [lambda b=b: b.data for b in step_graph.buffers]
        for index, value in outputs.items():
            if index > 0:
                np.copyto(targets[index - 1](), value)

    def _loss(self, outputs: Sequence[Any]) -> float:
        """The last stage computed the loss; every rank gets it."""
        last = self.stages - 1
        loss = np.asarray(outputs[0] if self.comm.rank == last else 0.0, dtype=np.float64)
        return float(self.comm.broadcast(loss, last))

    def _keep_stage_optimizer_state(self) -> None:
        """Drop optimizer state of other stages' parameters (a loaded checkpoint brings all of it)."""
        local = {id(p) for p in self.local}
        self.optimizer.state = {key: state for key, state in self.optimizer.state.items() if key in local}

    # --- state ---------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any] | None:
        """The whole model's ``TrainStep.state_dict()``, gathered from the stages, on rank 0; ``None`` on the others.

        Every rank must call it (the stages send their parameters and optimizer state to rank 0).
        """
        return pipeline_checkpoint.gather_state(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load a whole-model ``TrainStep.state_dict()`` tree (every rank passes the same); each rank keeps its stage's optimizer state.

        Everything is checked before anything is written, alike on every rank, so a mismatch raises on all of them.
        """
        prepare_training_state_load(self.model, self.optimizer, state)()
        if self.step_graph is not None:
            self._keep_stage_optimizer_state()

    def save(self, path: str) -> None:
        """Write the whole training state to ``path`` (``TrainStep.save``'s format), gathered and written by rank 0, atomically.

        Every rank calls it; a failed write raises on every rank and leaves an earlier file at ``path`` as it was. A
        single-process ``TrainStep`` (``accumulate=micro_batches`` for the same updates) or a pipeline with any number of
        stages loads the file.
        """
        pipeline_checkpoint.save(self, path)

    def load(self, path: str) -> None:
        """Resume from ``path`` (written by ``save`` or by ``TrainStep.save``): rank 0 reads it and broadcasts it; every rank calls it."""
        pipeline_checkpoint.load(self, path)

    def parameter_bytes(self) -> int:
        """Bytes of the parameters and optimizer state this rank holds for its stage."""
        state = [a for p in self.local for a in self.optimizer.state.get(id(p), {}).values()]
        return sum(p.data.nbytes for p in self.local) + sum(a.nbytes for a in state)


def _stage_donations(joint: dict[int, int], inputs: list[int], outputs: list[int]) -> dict[int, int]:
    """The joint graph's ``{input: output}`` donations, renumbered for the stage's graph."""
    input_at = {joint_index: i for i, joint_index in enumerate(inputs)}
    output_at = {joint_index: i for i, joint_index in enumerate(outputs)}
    return {input_at[i]: output_at[o] for i, o in joint.items() if i in input_at and o in output_at}
