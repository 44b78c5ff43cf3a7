"""``kiln.utils.data``: ``torch.utils.data``: datasets (``Dataset``, ``IterableDataset``, ``TensorDataset``,
``StackDataset``, ``ConcatDataset``, ``ChainDataset``, ``Subset``, ``random_split``), samplers, ``default_collate`` /
``default_convert``, ``get_worker_info`` and a ``DataLoader`` (worker processes included) whose batches are kiln
tensors (see ``kiln.runtime.data.torch_loader``). The submodules PyTorch code imports from are here too:
``from torch.utils.data.sampler import BatchSampler, SubsetRandomSampler`` (ikostrikov's ``storage.py``),
``torch.utils.data.dataset``, ``torch.utils.data.dataloader`` and ``torch.utils.data.distributed``
(``DistributedSampler``)."""

from kiln.runtime.data.collate import default_collate, default_convert
from kiln.runtime.data.distributed_sampler import DistributedSampler
from kiln.runtime.data.samplers import (
    BatchSampler, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler, WeightedRandomSampler,
)
from kiln.runtime.data.torch_datasets import (
    ChainDataset, ConcatDataset, Dataset, IterableDataset, StackDataset, Subset, TensorDataset, random_split,
)
from kiln.runtime.data.torch_loader import DataLoader
from kiln.runtime.data.workers import WorkerInfo, get_worker_info
from kiln.utils.data import dataloader, dataset, distributed, sampler

__all__ = [
    "BatchSampler", "ChainDataset", "ConcatDataset", "DataLoader", "Dataset", "DistributedSampler", "IterableDataset", "RandomSampler", "Sampler",
    "SequentialSampler", "StackDataset", "Subset", "SubsetRandomSampler", "TensorDataset", "WeightedRandomSampler", "WorkerInfo",
    "default_collate", "default_convert", "get_worker_info", "random_split", "dataloader", "dataset", "distributed", "sampler",
]
