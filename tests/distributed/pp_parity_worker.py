"""MPI worker: the 4-layer MLP split over 2 ranks with 4 micro-batches; saves each rank's stage and its IR. Then the
same on sequence-first inputs (``batch_dim=1``), whose micro-batches are cut along dim 1."""

import sys

import numpy as np

import kiln.distributed as dist
import kiln.nn.functional as F

from dist_models import BATCH, dataset, make_model, make_optimizer, sequence_first, sequence_first_loss

out, dtype, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
comm = dist.init()
x, y = dataset(dtype=dtype)
for name in ("sgd", "adam"):
    model = make_model(7 * comm.rank, dtype)  # ranks differ: the pipeline starts every stage from rank 0's model
    pipe = dist.PipelineParallel(model, F.cross_entropy, make_optimizer(name, model), stages=2, micro_batches=4)
    losses = [pipe(x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH]) for k in range(steps)]
    local = {n: p.data for n, p in model.named_parameters() if any(p is q for q in pipe.local)}
    np.savez(f"{out}/{name}_rank{comm.rank}.npz", losses=np.array(losses), parameter_bytes=pipe.parameter_bytes(),
             state_params=np.array(len(pipe.optimizer.state)), **local)
    with open(f"{out}/{name}_rank{comm.rank}.ir", "w") as file:
        file.write(str(pipe.graph))

model = make_model(7 * comm.rank, dtype)
pipe = dist.PipelineParallel(model, sequence_first_loss, make_optimizer("sgd", model), stages=2, micro_batches=4, batch_dim=1)
xs, ys = sequence_first(x, y)
losses = [pipe(xs[:, k : k + BATCH], ys[:, k : k + BATCH]) for k in range(0, xs.shape[1], BATCH)]
local = {n: p.data for n, p in model.named_parameters() if any(p is q for q in pipe.local)}
np.savez(f"{out}/sequence_first_rank{comm.rank}.npz", losses=np.array(losses), **local)
