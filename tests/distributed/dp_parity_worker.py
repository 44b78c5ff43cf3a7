"""MPI worker: data-parallel training, each rank on its half of every batch; saves each rank's parameters and losses."""

import sys

import numpy as np

import kiln
import kiln.distributed as dist
import kiln.nn.functional as F
from kiln.runtime.data import ArrayDataset, DataLoader

from dist_models import BATCH, dataset, make_model, make_optimizer

out = sys.argv[1]
comm = dist.init()
for dtype in ("float32", "float64"):
    x, y = dataset(dtype=dtype)
    for name in ("sgd", "adam"):
        model = make_model(seed=comm.rank, dtype=dtype)  # different inits: the start-up broadcast must make them rank 0's
        step = dist.DataParallel(kiln.compile_train_step(model, F.cross_entropy, make_optimizer(name, model)), bucket_bytes=16384)
        loader = DataLoader(ArrayDataset(x, y), batch_size=BATCH // comm.size, rank=comm.rank, world_size=comm.size, prefetch=0)
        losses = [step(xb, yb) for xb, yb in loader]
        np.savez(f"{out}/{name}_{dtype}_rank{comm.rank}.npz", losses=np.array(losses), **model.state_dict())
        step.save(f"{out}/{name}_{dtype}_checkpoint.npz")
if comm.rank == 0:
    print(step.graph)
