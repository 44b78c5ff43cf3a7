"""MPI worker: data-parallel training of a conv + BatchNorm model in float64, each rank on its half of every batch.

Saves each rank's parameters, running statistics and losses; rank 0 prints the step's IR.
"""

import sys

import numpy as np

import kiln
import kiln.distributed as dist
import kiln.nn.functional as F
from kiln.runtime.data import ArrayDataset, DataLoader

from dist_models import BATCH, image_dataset, make_conv_bn, sgd

out, steps = sys.argv[1], int(sys.argv[2])
comm = dist.init()
x, y = image_dataset()
model = make_conv_bn(seed=comm.rank)  # different inits and buffers: the start-up broadcast must make them rank 0's
step = dist.DataParallel(kiln.compile_train_step(model, F.cross_entropy, sgd(model)))
loader = DataLoader(ArrayDataset(x[: steps * BATCH], y[: steps * BATCH]), batch_size=BATCH // comm.size, rank=comm.rank,
                    world_size=comm.size, prefetch=0)
losses = [step(xb, yb) for xb, yb in loader]
np.savez(f"{out}/bn_rank{comm.rank}.npz", losses=np.array(losses), **model.state_dict())
if comm.rank == 0:
    print(step.graph)
