"""``kiln.utils.data.DistributedSampler`` against torch's: the same shares without shuffling (padding, drop_last,
lengths, errors); with shuffling, shares that are disjoint, cover the dataset, agree across ranks for one epoch and
change with ``set_epoch``; and a ``DataLoader`` reading each rank's share."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.utils.data import DataLoader, DistributedSampler, TensorDataset
from oracles import require


@pytest.mark.parametrize("size", [3, 8, 10, 13])
@pytest.mark.parametrize("drop_last", [False, True])
def test_unshuffled_shares_and_lengths_are_torchs(size, drop_last):
    TorchSampler = require("torch.utils.data.distributed").DistributedSampler  # noqa: N806
    for rank in range(4):
        ours = DistributedSampler(range(size), num_replicas=4, rank=rank, shuffle=False, drop_last=drop_last)
        theirs = TorchSampler(range(size), num_replicas=4, rank=rank, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs) and len(ours) == len(theirs) and ours.total_size == theirs.total_size


def test_shuffled_shares_partition_the_dataset_per_epoch():
    shares = [list(DistributedSampler(range(12), num_replicas=3, rank=rank, seed=5)) for rank in range(3)]
    again = [list(DistributedSampler(range(12), num_replicas=3, rank=rank, seed=5)) for rank in range(3)]
    assert shares == again and sorted(sum(shares, [])) == list(range(12)) and shares[0] != [0, 3, 6, 9]
    sampler = DistributedSampler(range(12), num_replicas=3, rank=0, seed=5)
    sampler.set_epoch(1)
    assert list(sampler) != shares[0] and sampler.epoch == 1


def test_bad_rank_and_missing_process_group_say_what():
    for sampler in (DistributedSampler, require("torch.utils.data.distributed").DistributedSampler):
        with pytest.raises(ValueError, match=r"Invalid rank 2, rank should be in the interval \[0, 1\]"):
            sampler(range(3), num_replicas=2, rank=2)
    with pytest.raises(RuntimeError, match="pass num_replicas= and rank="):
        DistributedSampler(range(3))


def test_a_loader_reads_one_ranks_share():
    data = TensorDataset(kiln.tensor(np.arange(10.0)))
    loader = DataLoader(data, batch_size=2, sampler=DistributedSampler(data, num_replicas=2, rank=1, shuffle=False))
    assert [batch[0].numpy().tolist() for batch in loader] == [[1.0, 3.0], [5.0, 7.0], [9.0]]
