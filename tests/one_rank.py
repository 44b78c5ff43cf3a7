"""A communicator of one rank, without MPI: what the distributed wrappers need to be built in-process."""


class OneRank:
    rank, size, device_arrays = 0, 1, False

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

    def Barrier(self):
        pass
