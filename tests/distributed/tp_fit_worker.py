"""MPI worker: ``kiln.fit`` of a plain ``TrainStep`` whose model holds a column- then a row-split Linear (tensor parallel).

``python -m mpi4py tp_fit_worker.py MODE OUT`` runs ``fit_checks``' job ``MODE`` (``first``, ``resume`` or
``failures``, described there) on that step; for the final state of a run (``full``, ``resumed``) each rank saves its
shards and their optimizer state to ``OUT/{run}_rank{r}.npz``. ``ckpt_tp_save_worker`` imports ``SplitMLP``,
``tensor_parallel_step`` and ``save_shards`` (the job runs only under ``__main__``).
"""

import sys

import numpy as np

import kiln
import kiln.distributed as dist
import kiln.nn as nn
import kiln.nn.functional as F

from dist_models import SIZES, make_optimizer
from fit_checks import run_worker


class SplitMLP(nn.Module):
    """``dist_models.MLP2`` split over the ranks: the same names, ``fc1`` column-split and ``fc2`` row-split."""

    def __init__(self):
        super().__init__()
        self.fc1 = dist.ColumnParallelLinear(SIZES[0], SIZES[1])
        self.fc2 = dist.RowParallelLinear(SIZES[1], SIZES[-1])

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def tensor_parallel_step(seed: int):
    kiln.manual_seed(seed)
    model = SplitMLP()
    return kiln.compile_train_step(model, F.cross_entropy, make_optimizer("adam", model))


def save_shards(step, path: str) -> None:
    """This rank's parameters and optimizer state (``{name}`` and ``{name}.{state name}``) and the update count."""
    state = step.state_dict()
    arrays = {**state["model"], **{f"{name}.{key}": a for name, arrays in state["optimizer"]["state"].items() for key, a in arrays.items()}}
    np.savez(path, step=state["optimizer"]["step"], **arrays)


def save_final(step, out: str, run: str, rank: int) -> None:
    save_shards(step, f"{out}/{run}_rank{rank}.npz")


if __name__ == "__main__":
    run_worker(sys.argv[1], sys.argv[2], tensor_parallel_step, save_final)
