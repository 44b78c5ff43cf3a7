"""MPI worker: Muon on the matrices and AdamW on the biases (one combined optimizer) under PipelineParallel (2 stages,
4 micro-batches) and DataParallel (half a batch per rank); saves each run's losses and rank 0's data-parallel model."""

import sys

import numpy as np

import kiln
import kiln.distributed as dist
import kiln.nn.functional as F

from dist_models import BATCH, dataset, make_model

out, steps = sys.argv[1], int(sys.argv[2])
comm = dist.init()
x, y = dataset()


def muon_and_adamw(model):
    parameters = list(model.parameters())
    return [kiln.optim.Muon([p for p in parameters if p.ndim == 2], lr=0.02),
            kiln.optim.AdamW([p for p in parameters if p.ndim != 2], lr=1e-2)]


model = make_model(7 * comm.rank)
pipe = dist.PipelineParallel(model, F.cross_entropy, kiln.optim.Combined(*muon_and_adamw(model)), stages=2, micro_batches=4)
pipeline_losses = [pipe(x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH]) for k in range(steps)]
model = make_model(7 * comm.rank)
step = dist.DataParallel(kiln.compile_train_step(model, F.cross_entropy, muon_and_adamw(model)))
half, start = BATCH // 2, comm.rank * (BATCH // 2)
parallel_losses = [step(x[k * BATCH + start : k * BATCH + start + half], y[k * BATCH + start : k * BATCH + start + half]) for k in range(steps)]
if comm.rank == 0:
    np.savez(f"{out}/combined.npz", pipeline=np.array(pipeline_losses), data_parallel=np.array(parallel_losses), **model.state_dict())
