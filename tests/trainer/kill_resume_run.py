"""A small training run for the kill-and-resume test: ``python kill_resume_run.py CHECKPOINT_DIR fresh|kill|resume OUT.json``.

``kill`` SIGKILLs its own process right after update 13 (the last checkpoint is
at update 10); ``resume`` continues from the newest checkpoint. OUT.json gets
the history and the final parameters.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.runtime.callbacks import Callback
from kiln.runtime.data import ArrayDataset, DataLoader

KILL_AT = 13


class KillAt(Callback):
    def __init__(self, update: int):
        self.update = update

    def on_step_end(self, run, record):
        if record["step"] == self.update:
            os.kill(os.getpid(), signal.SIGKILL)


def train(checkpoint_dir: str | None, resume: bool = False, kill_at: int | None = None, epochs: int = 3):
    kiln.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 12)).astype(np.float32)
    y = x[:, :4].argmax(axis=1)
    model = nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.Adam(model.parameters(), lr=0.01))
    history = kiln.fit(
        step, DataLoader(ArrayDataset(x[:64], y[:64]), batch_size=8, shuffle=True, seed=1), epochs=epochs,
        eval_loader=DataLoader(ArrayDataset(x[64:], y[64:]), batch_size=32), metrics=["accuracy"],
        callbacks=[KillAt(kill_at)] if kill_at else [], checkpoint_dir=checkpoint_dir, checkpoint_every=5, resume=resume, progress=False,
    )
    return history, model


def main() -> None:
    checkpoint_dir, mode, out = sys.argv[1:4]
    history, model = train(checkpoint_dir, resume=mode == "resume", kill_at=KILL_AT if mode == "kill" else None)
    with open(out, "w") as file:
        json.dump({"steps": history.steps, "epochs": history.epochs, "params": {k: v.tolist() for k, v in model.state_dict().items()}}, file)


if __name__ == "__main__":
    main()
