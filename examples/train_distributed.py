"""Distributed training of the digits MLP: data parallel or pipeline parallel over MPI ranks.

    mpiexec -n 2 python -m mpi4py examples/train_distributed.py                   # data parallel
    mpiexec -n 2 python -m mpi4py examples/train_distributed.py --mode pipeline   # 2 stages, 4 micro-batches
    mpiexec -n 2 python -m mpi4py examples/train_distributed.py --print-ir        # the step's IR on rank 0

(``-m mpi4py`` makes one failing rank abort them all instead of leaving the
others waiting.) Data parallel: each rank trains on its shard of every batch
(``DataLoader(rank=, world_size=)``), the compiled step averages the gradients
in bucketed allreduces, rank 0 writes the checkpoint. Pipeline parallel: every
rank sees the whole batch, rank ``r`` runs and holds only stage ``r``; the
checkpoint gathers the stages on rank 0 into one file that a single-process
``TrainStep`` (or a pipeline) loads.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import kiln
import kiln.distributed as dist
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.runtime.data import ArrayDataset, DataLoader, load_digits, train_test_split


class MLP(nn.Module):
    def __init__(self, sizes: tuple[int, ...] = (64, 128, 64, 64, 10)):
        super().__init__()
        self.layers = [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]
        for index, layer in enumerate(self.layers):
            setattr(self, f"fc{index + 1}", layer)

    def forward(self, x):
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x)


def accuracy(model: MLP, x: np.ndarray, y: np.ndarray) -> float:
    return float((kiln.compile(model)(x).argmax(axis=1) == y).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["data", "pipeline"], default="data")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64, help="the global batch (data parallel: split over the ranks)")
    parser.add_argument("--checkpoint", default="train_distributed.npz")
    parser.add_argument("--print-ir", action="store_true")
    args = parser.parse_args()

    comm = dist.init()
    kiln.manual_seed(0)
    x, y = load_digits()
    x_train, y_train, x_test, y_test = train_test_split(x, y)
    model = MLP()
    optimizer = kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    start = time.perf_counter()
    if args.mode == "data":
        step = dist.DataParallel(kiln.compile_train_step(model, F.cross_entropy, optimizer))
        loader = DataLoader(ArrayDataset(x_train, y_train), args.batch // comm.size, shuffle=True, drop_last=True, rank=comm.rank,
                            world_size=comm.size)
    else:
        step = dist.PipelineParallel(model, F.cross_entropy, optimizer, stages=comm.size, micro_batches=4)
        loader = DataLoader(ArrayDataset(x_train, y_train), args.batch, shuffle=True, drop_last=True)
    for epoch in range(args.epochs):
        loader.set_epoch(epoch)
        losses = [step(xb, yb) for xb, yb in loader]
        if comm.rank == 0:
            print(f"epoch {epoch + 1:2d}  loss {np.mean(losses):.4f}", flush=True)
    if args.print_ir and comm.rank == 0:
        print(step.graph)
    step.save(args.checkpoint)  # every rank calls it; rank 0 writes (pipeline: after gathering every stage)
    if args.mode == "data":
        if comm.rank == 0:
            print(f"{comm.size} ranks, {time.perf_counter() - start:.2f} s; held-out accuracy {accuracy(model, x_test, y_test):.3f}; "
                  f"checkpoint {args.checkpoint}")
    else:
        print(f"rank {comm.rank}: stage {comm.rank} holds {', '.join(n for n, p in model.named_parameters() if any(p is q for q in step.local))} "
              f"({step.parameter_bytes()} bytes of parameters and optimizer state)", flush=True)


if __name__ == "__main__":
    main()
