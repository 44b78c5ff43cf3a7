"""``kiln.distributed``: MPI/NCCL data and pipeline parallelism (see ``kiln.runtime.distributed``)."""

from kiln.runtime.distributed import *  # noqa: F401,F403
from kiln.runtime.distributed import __all__  # noqa: F401
