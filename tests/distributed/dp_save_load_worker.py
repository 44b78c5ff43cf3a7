"""MPI worker: ``DataParallel.save`` / ``load`` where only rank 0 sees the checkpoint's folder.

``... save OUT``: 10 uninterrupted Adam steps (saved per rank), and a second run that saves after 5 steps into rank 0's
folder only. ``... load OUT``: a new model (another seed) loads that file on every rank (rank 1's path does not
exist), takes the last 5 steps, and saves each rank's parameters.
"""

import os
import sys

import numpy as np

import kiln
import kiln.distributed as dist
import kiln.nn.functional as F

from dist_models import BATCH, dataset, make_model, make_optimizer

mode, out = sys.argv[1], sys.argv[2]
comm = dist.init()
x, y = dataset()
half = BATCH // comm.size
path = f"{out}/rank{comm.rank}/step5.npz"  # rank 1's folder is never made


def data_parallel(seed: int):
    model = make_model(seed=seed)
    return model, dist.DataParallel(kiln.compile_train_step(model, F.cross_entropy, make_optimizer("adam", model)))


def train(step, first: int, last: int) -> None:
    for k in range(first, last):
        step(x[k * BATCH + comm.rank * half :][:half], y[k * BATCH + comm.rank * half :][:half])


if mode == "save":
    model, step = data_parallel(seed=0)
    train(step, 0, 10)
    np.savez(f"{out}/uninterrupted_rank{comm.rank}.npz", **model.state_dict())
    model, step = data_parallel(seed=0)
    train(step, 0, 5)
    if comm.rank == 0:
        os.makedirs(os.path.dirname(path))
    step.save(path)
else:
    model, step = data_parallel(seed=3)
    step.load(path)
    train(step, 5, 10)
    np.savez(f"{out}/resumed_rank{comm.rank}.npz", step=step.optimizer.step_count, **model.state_dict())
