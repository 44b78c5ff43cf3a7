"""``kiln.fit``: the training loop around a compiled step, with evaluation, progress, logs and checkpoints.

```python
step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
history = kiln.fit(step, DataLoader(ArrayDataset(x, y), batch_size=32, shuffle=True), epochs=20,
                   eval_loader=DataLoader(ArrayDataset(x_test, y_test), batch_size=256), metrics=["accuracy"],
                   callbacks=[EarlyStopping("val_accuracy", patience=3)],
                   checkpoint_dir="runs/digits", checkpoint_every=100, resume=True,
                   log_path="runs/digits/log.jsonl", plot_path="runs/digits/loss.png")
```

Each batch from the loader is a tuple ``(*inputs, target)`` passed to
``step(*batch)``. With ``checkpoint_dir`` a checkpoint is written every
``checkpoint_every`` updates and at the end of every epoch; ``resume=True``
continues from the newest valid one there: the parameters, optimizer state,
RNG state and the loader position are restored, so the losses after a resume
equal those of a run that was never interrupted.

Distributed steps: every rank calls ``fit``; rank 0 alone writes the log,
plot and checkpoints and shows progress, and every rank resumes from rank 0's
checkpoint, which rank 0 chooses, reads and broadcasts (only rank 0 needs to
see ``checkpoint_dir``). A
``DataParallel`` step takes each rank's shard (``DataLoader(..., rank=,
world_size=)``). A ``PipelineParallel`` step takes the whole batch on every
rank, so every rank iterates the same unsharded loader; the last stage
computes the loss and the pipeline broadcasts it, so every rank's ``History``
holds it and rank 0 reports it. Its checkpoints hold the whole model's state,
gathered from the stages on rank 0 (the file a single-process ``TrainStep``
with ``accumulate=micro_batches`` resumes from too); with ``eval_loader``,
rank 0 evaluates the gathered model and broadcasts the numbers, so callbacks
such as ``EarlyStopping`` decide alike on every rank. A plain step whose model
holds tensor-parallel layers (``ColumnParallelLinear``, ``RowParallelLinear``)
also takes the whole batch on every rank; its checkpoints hold the unsplit
model (the shards joined on rank 0: the file the model with ``nn.Linear`` in
place of the split layers loads), every rank resuming its shard from them,
and every rank evaluates, its split forward running with the others'.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from kiln.compiler.errors import KilnError
from kiln.frontend.module import Module
from kiln.runtime.callbacks import Callback, LogWriter, LossCurve
from kiln.runtime.checkpoint_manager import (
    CheckpointManager, distributed_comm, load_training_checkpoint, parallelism, restore_training_checkpoint,
)
from kiln.runtime.compiled_function import CompiledFunction
from kiln.runtime.data.loader import DataLoader, check_loader_state, loader_state
from kiln.runtime.lazy import LazyScalar, read
from kiln.runtime.metrics import Metric, make_metrics


_WHOLE_BATCH = {"pipeline": "PipelineParallel step", "tensor": "step with tensor-parallel layers"}
"""The parallelisms whose ranks all take the whole batch (``checkpoint_manager.parallelism``)."""


@dataclass
class History:
    """What a run did: one record per step (``step``, ``epoch``, ``loss``) and per epoch (means, validation, metrics)."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def losses(self) -> list[float]:
        return [float(record["loss"]) for record in self.steps]


@dataclass
class FitRun:
    """The state callbacks see: the step, where the run is, what it recorded, and the stop flag."""

    step: Any
    loader: DataLoader
    epoch: int = 0
    batch: int = 0
    """Batches of ``epoch`` done (the loader resumes from this one)."""
    history: History = field(default_factory=History)
    should_stop: bool = False
    epoch_losses: list[float] = field(default_factory=list)


def fit(
    step: Any, train_loader: DataLoader, epochs: int = 1, eval_loader: DataLoader | None = None, metrics: Sequence[Any] = (),
    callbacks: Sequence[Callback] = (), checkpoint_dir: str | None = None, checkpoint_every: int | None = None,
    keep_checkpoints: int = 3, resume: bool = False, log_path: str | None = None, plot_path: str | None = None,
    progress: bool | None = None,
) -> History:
    """Train ``step`` over ``train_loader`` for ``epochs``; returns the ``History`` (see the module docstring)."""
    if resume and checkpoint_dir is None:
        raise KilnError("fit(resume=True) needs checkpoint_dir= naming the folder of the run's checkpoints")
    comm = distributed_comm(step)
    kind = parallelism(step)
    if kind in _WHOLE_BATCH and train_loader.world_size > 1:
        raise KilnError(f"fit: a {_WHOLE_BATCH[kind]} takes the whole batch on every rank, but the loader serves each rank a shard "
                        f"(rank={train_loader.rank}, world_size={train_loader.world_size}); build it without rank= and world_size=")
    run = FitRun(step, train_loader)
    manager = CheckpointManager(checkpoint_dir, keep_checkpoints) if checkpoint_dir else None
    if resume:
        _resume(run, manager)
    if comm is not None and comm.rank != 0:  # distributed: rank 0 logs, plots and shows progress
        log_path, plot_path, progress = None, None, False
    callbacks = list(callbacks) + ([LogWriter(log_path)] if log_path else []) + ([LossCurve(plot_path)] if plot_path else [])
    evaluator = Evaluator(step, make_metrics(metrics)) if eval_loader is not None else None
    for callback in callbacks:
        callback.on_train_begin(run)
    bar = _progress_bar(progress, len(train_loader) * epochs, len(train_loader) * run.epoch + run.batch)
    try:
        while run.epoch < epochs and not run.should_stop:
            _train_epoch(run, callbacks, manager, checkpoint_every, bar)
            if run.should_stop and run.batch < len(train_loader):
                break  # a callback stopped mid-epoch: no epoch record for a partial epoch
            _finish_epoch(run, evaluator, eval_loader, callbacks, manager)
    finally:
        if bar is not None:
            bar.close()
        for callback in callbacks:
            if isinstance(callback, LogWriter):
                callback.flush()  # a step record held back for a device's loss, even when training stopped on an error
    run.history.stopped_early = run.should_stop
    for callback in callbacks:
        callback.on_train_end(run)
    return run.history


def _train_epoch(run: FitRun, callbacks: list[Callback], manager: CheckpointManager | None, every: int | None, bar: Any) -> None:
    for batch in run.loader.iterate(run.epoch, start=run.batch):
        started = time.perf_counter()
        loss = run.step(*batch)
        elapsed = time.perf_counter() - started
        run.batch += 1
        run.epoch_losses.append(loss)
        record = {"step": int(run.step.optimizer.step_count), "epoch": run.epoch, "loss": loss}
        run.history.steps.append(record)
        _advance(bar, loss, len(batch[0]) / max(elapsed, 1e-9))
        for callback in callbacks:
            callback.on_step_end(run, record)
        if manager is not None and every and record["step"] % every == 0 and run.batch < len(run.loader):
            _save(run, manager)
        if run.should_stop:
            return


def _finish_epoch(run: FitRun, evaluator: "Evaluator | None", eval_loader: DataLoader | None, callbacks: list[Callback],
                  manager: CheckpointManager | None) -> None:
    record = {"epoch": run.epoch, "step": int(run.step.optimizer.step_count), "loss": float(np.mean(run.epoch_losses)) if run.epoch_losses else math.nan}
    if evaluator is not None:
        record.update(evaluator.evaluate(eval_loader))
    run.history.epochs.append(record)
    run.epoch, run.batch, run.epoch_losses = run.epoch + 1, 0, []
    for callback in callbacks:
        callback.on_epoch_end(run, record)
    if manager is not None:
        _save(run, manager)


def _save(run: FitRun, manager: CheckpointManager) -> None:
    steps = [{**record, "loss": read(record["loss"])} for record in run.history.steps]  # a device's losses, read now
    progress = {"loader": loader_state(run.loader, run.epoch, run.batch), "epoch_losses": [read(loss) for loss in run.epoch_losses],
                "history": {"steps": steps, "epochs": run.history.epochs}}
    manager.save(run.step, progress)


def _resume(run: FitRun, manager: CheckpointManager) -> None:
    path = manager.resume_point(run.step)  # distributed: rank 0's choice on every rank
    if path is None:
        return  # nothing saved yet: a fresh start
    tree = load_training_checkpoint(path, distributed_comm(run.step))  # distributed: rank 0 reads it for every rank
    progress = tree["progress"]
    check_loader_state(run.loader, progress["loader"], path)  # before anything is restored
    restore_training_checkpoint(path, run.step, tree)
    run.epoch, run.batch = progress["loader"]["epoch"], progress["loader"]["batch"]
    run.epoch_losses = list(progress["epoch_losses"])
    run.history = History(list(progress["history"]["steps"]), list(progress["history"]["epochs"]))


# --- evaluation -----------------------------------------------------------------------------------


class _WithLoss(Module):
    """``(*inputs, target) -> (model outputs, loss)``: one compiled graph gives metrics their outputs and the loss."""

    def __init__(self, model: Any, loss_fn: Any):
        super().__init__()
        self.model = model
        object.__setattr__(self, "loss_fn", loss_fn)

    def forward(self, *inputs: Any) -> Any:
        outputs = self.model(*inputs[:-1])
        return outputs, self.loss_fn(outputs, inputs[-1])


class Evaluator:
    """Mean loss and metrics of a step's model over a loader, in eval mode, through a compiled forward.

    A pipeline's model is whole on no rank: rank 0 gathers the stages into its copy, evaluates, and broadcasts the numbers.
    A tensor-parallel model's forward is split: every rank evaluates, each running its shards, and gets the same numbers.
    """

    def __init__(self, step: Any, metrics: list[Metric]):
        self.step, self.metrics = step, metrics
        self.function = CompiledFunction(_WithLoss(step.model, step.loss_fn), backend=getattr(step, "backend", "numpy"))

    def evaluate(self, loader: DataLoader) -> dict[str, float]:
        kind = parallelism(self.step)
        if kind == "pipeline":
            return self._evaluate_on_rank0(distributed_comm(self.step), loader)
        if kind == "tensor":
            from kiln.runtime.distributed.communicator import using

            with using(distributed_comm(self.step)):  # the split layers' collectives run on their communicator
                return self._evaluate_in_eval_mode(loader)
        return self._evaluate_in_eval_mode(loader)

    def _evaluate_on_rank0(self, comm: Any, loader: DataLoader) -> dict[str, float]:
        from kiln.runtime.distributed.communicator import broadcast_arrays, on_rank0

        state = self.step.state_dict()  # every rank sends its stage; the whole state on rank 0
        names = ["val_loss", *(f"val_{metric.name}" for metric in self.metrics)]
        values = np.zeros(len(names), dtype=np.float64)

        def evaluate() -> None:
            self.step.model.load_state_dict(state["model"])  # rank 0 runs stage 0 only: the other stages' copies are spare
            result = self._evaluate_in_eval_mode(loader)
            values[:] = [result[name] for name in names]

        on_rank0(comm, evaluate, "evaluate the gathered model")
        broadcast_arrays([values], root=0, comm=comm)
        return {name: float(value) for name, value in zip(names, values)}

    def _evaluate_in_eval_mode(self, loader: DataLoader) -> dict[str, float]:
        model = self.step.model
        was_training = getattr(model, "training", True)
        model.eval()
        try:
            return self._evaluate(loader)
        finally:
            model.train(was_training)

    def _evaluate(self, loader: DataLoader) -> dict[str, float]:
        for metric in self.metrics:
            metric.reset()
        total, count = 0.0, 0
        for batch in loader.iterate(0):
            outputs, loss = self.function(*batch)
            total, count = total + float(loss) * len(batch[0]), count + len(batch[0])
            for metric in self.metrics:
                metric.update(outputs, batch[-1])
        return {"val_loss": total / max(count, 1), **{f"val_{m.name}": m.compute() for m in self.metrics}}


# --- progress --------------------------------------------------------------------------------------


def _progress_bar(progress: bool | None, total: int, done: int) -> Any:
    """A tqdm bar when asked for (``progress=True``) or, by default, when tqdm is installed; None otherwise."""
    if progress is False:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError as error:
        if progress:
            raise KilnError("fit(progress=True) needs tqdm: pip install 'kiln[data]'") from error
        return None
    return tqdm(total=total, initial=done, unit="step", dynamic_ncols=True, leave=True)


POSTFIX_EVERY = 10
"""A loss still on a device (``LazyScalar``) is shown every this many steps: reading it makes the host wait."""


def _advance(bar: Any, loss: Any, samples_per_second: float) -> None:
    if bar is None:
        return
    if not isinstance(loss, LazyScalar) or loss.ready or bar.n % POSTFIX_EVERY == 0:
        bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{samples_per_second:,.0f}", refresh=False)
    bar.update(1)
