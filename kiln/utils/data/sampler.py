"""``torch.utils.data.sampler``: the samplers (``from torch.utils.data.sampler import BatchSampler,
SubsetRandomSampler``, as ikostrikov's ``storage.py`` imports them)."""

from kiln.runtime.data.samplers import (
    BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler, WeightedRandomSampler,
)

__all__ = ["BatchSampler", "RandomSampler", "Sampler", "SequentialSampler", "SubsetRandomSampler", "WeightedRandomSampler"]
