"""``kiln.nn.parallel`` (``torch.nn.parallel``): ``DataParallel`` and ``data_parallel`` in one process (see
``kiln.frontend.parallel``); several processes train with ``kiln.distributed.DataParallel``."""

from kiln.frontend.parallel import DataParallel, data_parallel

__all__ = ["DataParallel", "data_parallel"]


def __getattr__(name: str) -> object:
    """``DistributedDataParallel`` from ``kiln.distributed`` (imported on first use: it needs the MPI runtime)."""
    if name == "DistributedDataParallel":
        from kiln.runtime.distributed.eager_ddp import DistributedDataParallel

        return DistributedDataParallel
    raise AttributeError(f"module 'kiln.nn.parallel' has no attribute {name!r}")
