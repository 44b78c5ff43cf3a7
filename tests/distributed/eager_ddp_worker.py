"""MPI worker: PyTorch's eager loop under DistributedDataParallel, each rank on its half of every batch (differently
initialised: the wrapper must start them from rank 0's); saves rank 0's parameters and the losses, and checks
no_sync accumulation and the torch.distributed-style collectives."""

import sys

import numpy as np

import kiln
import kiln.distributed as dist
import kiln.nn.functional as F

from dist_models import BATCH, dataset, make_model, make_optimizer

out = sys.argv[1]
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
x, y = dataset(steps=6, dtype="float64")
half = BATCH // world
for name in ("sgd", "adam"):
    model = dist.DistributedDataParallel(make_model(seed=rank, dtype="float64"), bucket_cap_mb=0.004)
    optimizer = make_optimizer(name, model.module)
    losses = []
    for start in range(0, len(x), BATCH):
        xb, yb = x[start + rank * half:start + (rank + 1) * half], y[start + rank * half:start + (rank + 1) * half]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(kiln.tensor(xb)), kiln.tensor(yb))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    np.savez(f"{out}/{name}_rank{rank}.npz", losses=np.array(losses), **model.module.state_dict())

model = dist.DistributedDataParallel(make_model(seed=rank, dtype="float64"))
xb, yb = x[:BATCH], y[:BATCH]
quarter = BATCH // (2 * world)
chunks = [(xb[i * quarter:(i + 1) * quarter], yb[i * quarter:(i + 1) * quarter]) for i in (2 * rank, 2 * rank + 1)]
with model.no_sync():
    (F.cross_entropy(model(kiln.tensor(chunks[0][0])), kiln.tensor(chunks[0][1])) / 2).backward()
(F.cross_entropy(model(kiln.tensor(chunks[1][0])), kiln.tensor(chunks[1][1])) / 2).backward()
np.savez(f"{out}/accumulated_rank{rank}.npz", **{n: p.grad for n, p in model.module.named_parameters()})
grad = model.module.fc1.bias.grad  # the averaged gradient, the same on both ranks: summing doubles it
before = np.array(grad)
dist.all_reduce(grad)
print(f"rank {rank}: all_reduce of p.grad doubled it: {np.allclose(grad, 2 * before)}")

t = kiln.tensor(np.array([rank + 1.0, 10.0 * rank]))
dist.all_reduce(t)
b = np.full(3, float(rank))
dist.broadcast(b, src=1)
dist.barrier()
print(f"rank {rank}: all_reduce {t.tolist()} broadcast {b.tolist()} state {list(model.state_dict())[0]}")
dist.destroy_process_group()
