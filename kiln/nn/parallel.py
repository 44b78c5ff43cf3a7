"""``kiln.nn.parallel`` (``torch.nn.parallel``): ``DataParallel`` and ``data_parallel`` in one process (see
``kiln.frontend.parallel``); several processes train with ``kiln.distributed.DataParallel``."""

from kiln.frontend.parallel import DataParallel, data_parallel

__all__ = ["DataParallel", "data_parallel"]
