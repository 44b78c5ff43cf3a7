"""MPI worker: DistributedDataParallel in a kiln.compile(fullgraph=True)'d training step, each rank on its half of
every batch: the step's graph averages the gradients (one comm.allreduce per bucket) and broadcasts rank 0's buffers.
Saves each rank's losses and parameters (SGD and Adam), its no_sync-accumulated gradients, and prints the bucket count
and whether a BatchNorm model's compiled steps match its eager ones on this rank."""

import sys

import numpy as np

import kiln
import kiln.distributed as dist
import kiln.nn as nn
import kiln.nn.functional as F

from dist_models import BATCH, dataset, make_model, make_optimizer

out = sys.argv[1]
dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
x, y = dataset(steps=6, dtype="float64")
half = BATCH // world


def rows(begin, count):
    return kiln.tensor(x[begin:begin + count]), kiln.tensor(y[begin:begin + count])


def shard(start):
    """This rank's half of the batch at ``start``."""
    return rows(start + rank * half, half)


for name in ("sgd", "adam"):
    model = dist.DistributedDataParallel(make_model(seed=rank, dtype="float64"), bucket_cap_mb=0.004)
    optimizer = make_optimizer(name, model.module)

    @kiln.compile(fullgraph=True)
    def step(xb, yb):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
        return loss

    losses = [step(*shard(start)).item() for start in range(0, len(x), BATCH)]
    np.savez(f"{out}/{name}_rank{rank}.npz", losses=np.array(losses), **model.module.state_dict())
print(f"rank {rank}: {str(step.graph).count('comm.allreduce')} allreduces in the step")

model = dist.DistributedDataParallel(make_model(seed=rank, dtype="float64"))


@kiln.compile(fullgraph=True)
def half_backward(xb, yb):
    (F.cross_entropy(model(xb), yb) / 2).backward()


quarter = BATCH // (2 * world)
with model.no_sync():
    half_backward(*rows(2 * rank * quarter, quarter))  # this rank's two quarters of the first batch: no allreduce
half_backward(*rows((2 * rank + 1) * quarter, quarter))  # averages the accumulated sum
np.savez(f"{out}/accumulated_rank{rank}.npz", **{n: p.grad.numpy() for n, p in model.module.named_parameters()})


def batch_norm_run(compiled):
    kiln.manual_seed(rank)
    net = dist.DistributedDataParallel(nn.Sequential(nn.Linear(20, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 5)).double())
    optimizer = kiln.optim.SGD(net.parameters(), lr=0.1)

    def step(xb, yb):
        optimizer.zero_grad()
        loss = F.cross_entropy(net(xb), yb)
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if compiled else step
    losses = [run(*shard(start)).item() for start in range(0, len(x), BATCH)]
    return losses, {k: v.numpy().copy() for k, v in net.state_dict().items()}


(eager_losses, eager_state), (compiled_losses, compiled_state) = batch_norm_run(False), batch_norm_run(True)
same = np.allclose(eager_losses, compiled_losses, rtol=1e-12) and all(
    np.allclose(eager_state[k], compiled_state[k], rtol=1e-10, atol=1e-13) for k in eager_state)
print(f"rank {rank}: BatchNorm compiled matches eager: {same}")
dist.destroy_process_group()
