"""MPI worker: data-parallel training of the half MLP, each rank on its half of every batch (SGD with momentum);
saves each rank's losses and parameters (as 16-bit patterns: np.savez has no bfloat16)."""

import sys

import numpy as np

import kiln
import kiln.distributed as dist
import kiln.nn.functional as F
from kiln.runtime.data import ArrayDataset, DataLoader

from dist_models import BATCH, dataset, make_model, make_optimizer

out = sys.argv[1]
comm = dist.init()
for dtype in ("float16", "bfloat16"):
    x, y = dataset(dtype=dtype)
    model = make_model(seed=comm.rank, dtype=dtype)  # different inits: the start-up broadcast must make them rank 0's
    step = dist.DataParallel(kiln.compile_train_step(model, F.cross_entropy, make_optimizer("sgd", model)), bucket_bytes=4096)
    loader = DataLoader(ArrayDataset(x, y), batch_size=BATCH // comm.size, rank=comm.rank, world_size=comm.size, prefetch=0)
    losses = [step(xb, yb) for xb, yb in loader]
    parameters = {name: value.view(np.uint16) for name, value in model.state_dict().items()}
    np.savez(f"{out}/{dtype}_rank{comm.rank}.npz", losses=np.array(losses), **parameters)
