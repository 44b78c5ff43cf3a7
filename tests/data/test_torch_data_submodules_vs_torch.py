"""``kiln.utils.data``'s submodules as ``torch.utils.data``'s, for the imports PyTorch code writes:
``from torch.utils.data.sampler import BatchSampler, SubsetRandomSampler`` (ikostrikov/pytorch-a2c-ppo-acktr-gail's
``storage.py``), ``from torch.utils.data.dataset import Dataset``, ``from torch.utils.data.dataloader import
default_collate``. kiln's ``kiln.utils.data`` was one module, so these raised "'kiln.utils.data' is not a package"."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import kiln
from oracles import require_torch

SUBMODULES = {
    "sampler": ["BatchSampler", "RandomSampler", "Sampler", "SequentialSampler", "SubsetRandomSampler",
                "WeightedRandomSampler"],
    "dataset": ["ChainDataset", "ConcatDataset", "Dataset", "IterableDataset", "StackDataset", "Subset", "TensorDataset",
                "random_split"],
    "dataloader": ["DataLoader", "default_collate", "default_convert", "get_worker_info"],
}


@pytest.mark.parametrize("submodule", list(SUBMODULES))
def test_submodules_hold_torchs_names_and_the_packages_objects(submodule):
    torch = require_torch()
    ours = importlib.import_module(f"kiln.utils.data.{submodule}")
    theirs = importlib.import_module(f"torch.utils.data.{submodule}")
    for name in SUBMODULES[submodule]:
        assert hasattr(theirs, name), name
        assert getattr(ours, name) is getattr(kiln.utils.data, name), name
    assert torch.utils.data is not None


def test_storage_py_minibatches_from_the_submodule_imports_as_torch():
    """``feed_forward_generator``'s sampler: ``BatchSampler(SubsetRandomSampler(range(batch_size)), mini_batch_size,
    drop_last=True)``: each minibatch a list of ints, every index once; with a sequential order, torch's lists."""
    require_torch()
    from torch.utils.data.sampler import BatchSampler as TorchBatchSampler
    from torch.utils.data.sampler import SequentialSampler as TorchSequentialSampler

    from kiln.utils.data.sampler import BatchSampler, SequentialSampler, SubsetRandomSampler

    kiln.manual_seed(0)
    minibatches = list(BatchSampler(SubsetRandomSampler(range(10)), 3, drop_last=True))
    assert [len(indices) for indices in minibatches] == [3, 3, 3]
    assert all(isinstance(i, int) for indices in minibatches for i in indices)
    assert len(set(np.concatenate(minibatches).tolist())) == 9
    assert list(BatchSampler(SequentialSampler(range(10)), 4, drop_last=False)) == \
        list(TorchBatchSampler(TorchSequentialSampler(range(10)), 4, drop_last=False))
