"""A ``kiln.fit`` callback that logs to TensorBoard (Keras's ``callbacks.TensorBoard``), through
``kiln.utils.tensorboard.SummaryWriter``.

```python
from kiln.runtime.tensorboard_callback import TensorBoard

kiln.fit(step, train, epochs=20, eval_loader=test, metrics=["accuracy"], callbacks=[TensorBoard("runs/digits")])
```

Each step's loss is the scalar ``loss`` at the optimizer's step count; each epoch's record (mean loss, validation
loss and metrics) is ``epoch/<key>`` at the epoch number. A step whose loss is still on a device (``LazyScalar``)
is written one step later, as ``LogWriter`` does, so logging never makes the device wait for the step it just queued.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import TYPE_CHECKING, Any

from kiln.runtime.callbacks import Callback
from kiln.runtime.lazy import LazyScalar

if TYPE_CHECKING:
    from kiln.runtime.trainer import FitRun
    from kiln.utils.tensorboard import SummaryWriter

_POSITION_KEYS = ("step", "epoch")
"""Record keys that say where a record is, not what was measured."""


@dataclass
class TensorBoard(Callback):
    """Log ``kiln.fit``'s step losses and epoch records to event files in ``log_dir``."""

    log_dir: str
    flush_secs: float = 120
    writer: "SummaryWriter | None" = field(default=None, repr=False)
    _held: dict[str, Any] | None = field(default=None, repr=False)

    def on_train_begin(self, run: "FitRun") -> None:
        from kiln.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(self.log_dir, flush_secs=self.flush_secs)

    def on_step_end(self, run: "FitRun", record: dict[str, Any]) -> None:
        self._write_held()
        loss = record.get("loss")
        if isinstance(loss, LazyScalar) and not loss.ready:
            self._held = record
        else:
            self._write_step(record)

    def on_epoch_end(self, run: "FitRun", record: dict[str, Any]) -> None:
        self._write_held()
        for key, value in record.items():
            if key not in _POSITION_KEYS and _is_number(value):
                self._writer().add_scalar(f"epoch/{key}", float(value), record["epoch"])
        self._writer().flush()

    def on_train_end(self, run: "FitRun") -> None:
        self._write_held()
        self._writer().close()

    def _write_held(self) -> None:
        if self._held is not None:
            record, self._held = self._held, None
            self._write_step(record)

    def _write_step(self, record: dict[str, Any]) -> None:
        self._writer().add_scalar("loss", float(record["loss"]), record["step"])

    def _writer(self) -> "SummaryWriter":
        if self.writer is None:
            raise RuntimeError(
                "TensorBoard callback: on_train_begin was not called; pass it to kiln.fit(callbacks=[...])"
            )
        return self.writer


def _is_number(value: Any) -> bool:
    return isinstance(value, (Real, LazyScalar)) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value)
    )
