"""``kiln.utils.data``'s samplers and the ``DataLoader``'s sampling options as ``torch.utils.data``'s: deterministic
orders (sequential, explicit samplers, batch samplers, drop_last, batch_size=None) equal torch's exactly; random
orders are checked by their properties (permutations, an empirical distribution, repetition under a seed), since
kiln draws from its own generator; invalid combinations raise torch's errors."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.utils.data import (
    BatchSampler, DataLoader, RandomSampler, Sampler, SequentialSampler, SubsetRandomSampler, TensorDataset, WeightedRandomSampler,
)
from oracles import require

X = np.arange(10 * 2, dtype=np.float32).reshape(10, 2)
Y = np.arange(10) * 3


def _pairs(torch):
    return TensorDataset(kiln.tensor(X), kiln.tensor(Y)), torch.utils.data.TensorDataset(torch.tensor(X), torch.tensor(Y))


def _flat(batches):
    return [np.asarray(part.numpy()).tolist() for batch in batches for part in batch]


class EvenFirst(Sampler):
    """A user sampler in the style torch's docs show: evens, then odds."""

    def __init__(self, n):
        self.n = n

    def __iter__(self):
        return iter(list(range(0, self.n, 2)) + list(range(1, self.n, 2)))

    def __len__(self):
        return self.n


@pytest.mark.parametrize("batch_size, drop_last", [(3, False), (3, True), (5, True), (1, False), (12, False), (12, True)])
def test_batch_sampler_over_a_list_is_torchs(batch_size, drop_last):
    torch = require("torch")
    source = [7, 3, 9, 1, 0, 4, 4, 8, 2, 6]
    ours = BatchSampler(source, batch_size, drop_last)
    theirs = torch.utils.data.BatchSampler(source, batch_size, drop_last)
    assert list(ours) == list(theirs) and len(ours) == len(theirs)
    assert list(SequentialSampler(range(4))) == list(torch.utils.data.SequentialSampler(range(4))) == [0, 1, 2, 3]


@pytest.mark.parametrize("options", [
    {"sampler": EvenFirst(10), "batch_size": 3},
    {"sampler": [9, 0, 8, 1], "batch_size": 3},
    {"sampler": EvenFirst(10), "batch_size": 4, "drop_last": True},
    {"batch_sampler": [[3, 1], [0], [9, 8, 7]]},
    {"batch_sampler": "batch-of-even-first"},
    {"batch_size": None},
    {"batch_size": None, "sampler": [5, 2]},
])
def test_explicit_samplers_read_torchs_batches(options):
    torch = require("torch")
    ours, theirs = _pairs(torch)
    if options.get("batch_sampler") == "batch-of-even-first":
        options = {"batch_sampler": BatchSampler(EvenFirst(10), 4, False)}
        their_options = {"batch_sampler": torch.utils.data.BatchSampler(EvenFirst(10), 4, False)}
    else:
        their_options = options
    ours_loader, theirs_loader = DataLoader(ours, **options), torch.utils.data.DataLoader(theirs, **their_options)
    our_batches, their_batches = list(ours_loader), list(theirs_loader)
    assert len(ours_loader) == len(theirs_loader) == len(our_batches) == len(their_batches)
    for batch, expected in zip(our_batches, their_batches):
        assert type(batch) is type(expected)
        for tensor, torch_tensor in zip(batch, expected):
            assert isinstance(tensor, kiln.Tensor) and tensor.numpy().dtype == torch_tensor.numpy().dtype
            np.testing.assert_array_equal(tensor.numpy(), torch_tensor.numpy())


def test_random_sampler_is_a_fresh_permutation_per_pass_that_manual_seed_repeats():
    sampler = RandomSampler(range(50))
    kiln.manual_seed(3)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(50)) and first != second
    kiln.manual_seed(3)
    assert list(sampler) == first
    seeded = [list(RandomSampler(range(50), generator=kiln.Generator().manual_seed(s))) for s in (1, 1, 2)]
    assert seeded[0] == seeded[1] != seeded[2]


def test_random_sampler_num_samples_and_replacement_follow_torchs_rules():
    longer = list(RandomSampler(range(7), num_samples=17))  # without replacement: whole permutations, then a part of one
    assert len(longer) == 17 and sorted(longer[:7]) == sorted(longer[7:14]) == list(range(7)) and len(set(longer[14:])) == 3
    drawn = list(RandomSampler(range(4), replacement=True, num_samples=4000))
    assert len(drawn) == len(RandomSampler(range(4), replacement=True, num_samples=4000)) == 4000
    counts = np.bincount(drawn, minlength=4)
    assert set(drawn) == {0, 1, 2, 3} and _chi_square(counts, np.full(4, 0.25)) < 16.3  # df 3, p = 0.001


def test_weighted_sampler_draws_in_proportion_to_the_weights():
    weights = [0.1, 0.9, 0.4, 0.0, 3.0, 0.6]
    kiln.manual_seed(0)
    drawn = list(WeightedRandomSampler(weights, num_samples=20000))
    counts = np.bincount(drawn, minlength=6)
    assert counts[3] == 0
    expected = np.delete(np.asarray(weights) / sum(weights), 3)
    assert _chi_square(np.delete(counts, 3), expected) < 20.5  # df 4, p = 0.0004
    distinct = list(WeightedRandomSampler(weights, num_samples=5, replacement=False))
    assert sorted(distinct) == [0, 1, 2, 4, 5]
    kiln.manual_seed(0)
    assert list(WeightedRandomSampler(weights, num_samples=20000)) == drawn


def test_subset_random_sampler_permutes_the_given_indices():
    indices = [11, 5, 40, 2]
    orders = [list(SubsetRandomSampler(indices, generator=kiln.Generator().manual_seed(s))) for s in range(6)]
    assert all(sorted(order) == sorted(indices) for order in orders) and len({tuple(o) for o in orders}) > 1
    assert len(SubsetRandomSampler(indices)) == 4


def test_a_shuffled_loader_reads_a_random_sampler_order():
    kiln.manual_seed(5)
    loader = DataLoader(TensorDataset(np.arange(23)), batch_size=5, shuffle=True)
    assert isinstance(loader.sampler, RandomSampler) and isinstance(loader.batch_sampler, BatchSampler)
    first = np.concatenate([b.numpy() for (b,) in loader])
    kiln.manual_seed(5)
    assert np.array_equal(first, np.concatenate([b.numpy() for (b,) in loader])) and sorted(first) == list(range(23))


@pytest.mark.parametrize("options", [
    {"sampler": [0, 1], "shuffle": True},
    {"batch_sampler": [[0]], "batch_size": 2},
    {"batch_sampler": [[0]], "shuffle": True},
    {"batch_sampler": [[0]], "sampler": [0]},
    {"batch_sampler": [[0]], "drop_last": True},
    {"batch_size": None, "drop_last": True},
    {"num_workers": -1},
    {"prefetch_factor": 2},
    {"persistent_workers": True},
])
def test_invalid_option_combinations_raise_torchs_errors(options):
    torch = require("torch")
    ours, theirs = _pairs(torch)
    with pytest.raises(ValueError) as expected:
        torch.utils.data.DataLoader(theirs, **options)
    with pytest.raises(ValueError) as raised:
        DataLoader(ours, **options)
    assert "".join(str(raised.value).split()) == "".join(str(expected.value).split())  # torch's text, up to spacing


@pytest.mark.parametrize("make", [
    lambda m: m.BatchSampler(range(3), 0, False),
    lambda m: m.BatchSampler(range(3), 2, 1),
    lambda m: m.RandomSampler(range(3), num_samples=0),
    lambda m: m.WeightedRandomSampler([1.0, 2.0], num_samples=-1),
    lambda m: m.WeightedRandomSampler([[1.0, 2.0]], num_samples=1),
    lambda m: m.RandomSampler(range(3), replacement=1),
])
def test_invalid_sampler_arguments_raise_torchs_errors(make):
    torch = require("torch")
    with pytest.raises((ValueError, TypeError)) as expected:
        make(torch.utils.data)
    with pytest.raises(expected.type) as raised:
        make(kiln.utils.data)
    assert str(raised.value) == str(expected.value)


def test_weights_that_cannot_be_drawn_are_refused_with_what_to_do():
    with pytest.raises(ValueError, match="without replacement from 2 nonzero weights; pass replacement=True"):
        WeightedRandomSampler([1.0, 0.0, 2.0], num_samples=3, replacement=False)
    with pytest.raises(ValueError, match="non-negative and not all zero"):
        WeightedRandomSampler([1.0, -1.0], num_samples=1)
    with pytest.raises(TypeError, match=r"kiln.Generator\(\).manual_seed"):
        list(SubsetRandomSampler([1, 2], generator="seed 0"))


def _chi_square(counts: np.ndarray, probabilities: np.ndarray) -> float:
    expected = counts.sum() * probabilities
    return float(((counts - expected) ** 2 / expected).sum())
