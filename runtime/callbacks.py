"""Callbacks for ``kiln.fit``: hooks at the start, after each step, after each epoch and at the end.

```python
kiln.fit(step, train, epochs=50, eval_loader=test,
         callbacks=[EarlyStopping("val_loss", patience=3), LogWriter("run/log.jsonl"), LossCurve("run/loss.png")])
```

A callback sees the run (``run.step``, ``run.epoch``, ``run.history``) and
may set ``run.should_stop = True`` to end training after the current epoch.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kiln.compiler.errors import KilnError
from kiln.runtime.lazy import LazyScalar

if TYPE_CHECKING:
    from kiln.runtime.trainer import FitRun, History


class Callback:
    """Override the hooks you need; each does nothing by default."""

    def on_train_begin(self, run: "FitRun") -> None:
        pass

    def on_step_end(self, run: "FitRun", record: dict[str, Any]) -> None:
        pass

    def on_epoch_end(self, run: "FitRun", record: dict[str, Any]) -> None:
        pass

    def on_train_end(self, run: "FitRun") -> None:
        pass


@dataclass
class EarlyStopping(Callback):
    """Stop when ``monitor`` (an epoch record key: ``val_loss``, ``val_accuracy``...) has not improved for ``patience`` epochs."""

    monitor: str = "val_loss"
    patience: int = 3
    mode: str = "auto"
    """``min``, ``max``, or ``auto``: max for accuracy-like names, min otherwise."""
    min_delta: float = 0.0
    best: float | None = None
    wait: int = 0

    def on_epoch_end(self, run: "FitRun", record: dict[str, Any]) -> None:
        if self.monitor not in record:
            raise KilnError(f"EarlyStopping monitors {self.monitor!r}, but the epoch record has only {sorted(record)}; pass eval_loader= for val_* keys")
        value = record[self.monitor]
        if self.best is None or self._improved(value):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            run.should_stop = True

    def _improved(self, value: float) -> bool:
        maximize = self.mode == "max" or (self.mode == "auto" and "acc" in self.monitor)
        return value > self.best + self.min_delta if maximize else value < self.best - self.min_delta


@dataclass
class LogWriter(Callback):
    """Append records to a JSONL file (every step and epoch) or a CSV file (one row per epoch), by extension.

    A step whose loss is still on a device (``LazyScalar``, the CuPy backend) is written one step later, when the
    next step is already queued: reading it then waits only for that step, and the device is never left idle. The
    held record is written at the epoch's end, at the end of training, and by ``fit`` when training stops on an error.
    """

    path: str
    _columns: list[str] | None = field(default=None, repr=False)
    _held: dict[str, Any] | None = field(default=None, repr=False)

    def on_train_begin(self, run: "FitRun") -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)

    def on_step_end(self, run: "FitRun", record: dict[str, Any]) -> None:
        if self._is_csv():
            return
        self.flush()
        loss = record.get("loss")
        if isinstance(loss, LazyScalar) and not loss.ready:
            self._held = record
        else:
            self._append_json({"kind": "step", **record})

    def on_epoch_end(self, run: "FitRun", record: dict[str, Any]) -> None:
        self.flush()
        if self._is_csv():
            self._append_csv(record)
        else:
            self._append_json({"kind": "epoch", **record})

    def on_train_end(self, run: "FitRun") -> None:
        self.flush()

    def flush(self) -> None:
        """Write the step record held back (if any)."""
        if self._held is not None:
            record, self._held = self._held, None
            self._append_json({"kind": "step", **record})

    def _is_csv(self) -> bool:
        return self.path.endswith(".csv")

    def _append_json(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record, default=float) + "\n")  # default: a loss still on a device is read here

    def _append_csv(self, record: dict[str, Any]) -> None:
        new_file = not os.path.exists(self.path) or os.path.getsize(self.path) == 0
        self._columns = self._columns or list(record)
        with open(self.path, "a", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=self._columns, extrasaction="ignore")
            if new_file:
                writer.writeheader()
            writer.writerow(record)


@dataclass
class LossCurve(Callback):
    """Draw the loss curve (training loss per step, validation loss per epoch) as a PNG: after an epoch once
    ``every_seconds`` have passed since the last drawing, and always at the end.

    Drawing takes matplotlib about a second, so redrawing after every epoch of a fast run costs more than the training
    (27 of the 38 s of the README's ``kiln.fit`` example); ``every_seconds=0`` redraws after every epoch."""

    path: str
    every_seconds: float = 10.0
    _drawn_at: float | None = field(default=None, repr=False)

    def on_epoch_end(self, run: "FitRun", record: dict[str, Any]) -> None:
        if self._drawn_at is None or time.monotonic() - self._drawn_at >= self.every_seconds:
            self._draw(run)

    def on_train_end(self, run: "FitRun") -> None:
        self._draw(run)

    def _draw(self, run: "FitRun") -> None:
        plot_loss_curve(run.history, self.path)
        self._drawn_at = time.monotonic()


def plot_loss_curve(history: "History", path: str) -> None:
    """Write the training (per step) and validation (per epoch) loss of ``history`` to ``path`` (PNG)."""
    figure = new_figure(figsize=(6, 4), dpi=100)
    axes = figure.subplots()
    axes.plot([r["step"] for r in history.steps], [r["loss"] for r in history.steps], lw=0.8, label="train loss")
    validation = [(r["step"], r["val_loss"]) for r in history.epochs if math.isfinite(r.get("val_loss", math.nan))]
    if validation:
        axes.plot(*zip(*validation), marker="o", label="validation loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.legend()
    figure.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    partial = f"{path}.partial.png"
    figure.savefig(partial)
    os.replace(partial, path)  # a reader never sees half a PNG, and a crash while drawing keeps the last curve


def new_figure(**options: Any) -> Any:
    """A matplotlib ``Figure`` drawn off-screen (no pyplot, so no global backend state changes)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise KilnError("drawing plots needs matplotlib: pip install 'kiln[data]'") from error
    return Figure(**options)
