"""Communicators of one process, without MPI: what the distributed wrappers need to be built and run in-process."""

import numpy as np


class OneRank:
    """A kiln ``Communicator`` in one process; ``calls`` records the collectives the comm ops made on it. With
    ``size`` > 1 it answers as if every rank held this process's values (a sum is ``size`` times them)."""

    rank, device_arrays = 0, False

    def __init__(self, size: int = 1):
        self.size = size
        self.calls: list[str] = []

    def allreduce(self, x, op):
        self.calls.append(f"allreduce {op}")
        return np.asarray(x) * np.asarray(x).dtype.type(self.size) if op == "sum" else np.array(x, copy=True)

    def broadcast(self, x, root):
        self.calls.append("broadcast")
        return np.array(x, copy=True)

    def broadcast_into(self, x, root):
        pass


class OneRankMPI:
    """What ``MPICommunicator``/``NCCLCommunicator`` call on an mpi4py communicator, for one process without MPI."""

    def Get_rank(self):
        return 0

    def Get_size(self):
        return 1

    def Bcast(self, buffer, root=0):
        pass

    def Allreduce(self, send, receive, op=None):
        np.copyto(receive, send)

    def Barrier(self):
        pass
