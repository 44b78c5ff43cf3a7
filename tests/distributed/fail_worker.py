"""MPI worker: rank 1 raises while rank 0 waits for it in a receive; the job must end with rank 1's error, not hang."""

import numpy as np

import kiln.distributed as dist

comm = dist.init()
if comm.rank == 1:
    raise ValueError("rank 1 hit a bad batch on purpose")
comm.recv((4,), np.float32, peer=1, tag=0)  # never satisfied: only the abort ends this rank
