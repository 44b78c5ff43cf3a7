"""``torch.utils.data.distributed``: ``DistributedSampler`` where code imports it from (``from
torch.utils.data.distributed import DistributedSampler``)."""

from kiln.runtime.data.distributed_sampler import DistributedSampler

__all__ = ["DistributedSampler"]
