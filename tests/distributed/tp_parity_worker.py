"""MPI worker: a column-split then row-split MLP on 2 ranks, every rank on the full batch; saves each rank's shards."""

import sys

import numpy as np

import kiln
import kiln.distributed as dist
import kiln.nn as nn
import kiln.nn.functional as F

from dist_models import BATCH, SIZES, dataset


class SplitMLP(nn.Module):
    def __init__(self, dtype: str):
        super().__init__()
        self.fc1 = dist.ColumnParallelLinear(SIZES[0], SIZES[1], dtype=dtype)
        self.fc2 = dist.RowParallelLinear(SIZES[1], SIZES[-1], dtype=dtype)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


out, dtype = sys.argv[1], sys.argv[2]
comm = dist.init()
kiln.manual_seed(0)
model = SplitMLP(dtype)
step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
x, y = dataset(dtype=dtype)
losses = [step(x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH]) for k in range(10)]
np.savez(f"{out}/tp_rank{comm.rank}.npz", losses=np.array(losses), **model.state_dict())
if comm.rank == 0:
    print(step.graph)
