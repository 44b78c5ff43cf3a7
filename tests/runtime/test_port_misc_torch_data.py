"""``kiln.utils.data`` as ``torch.utils.data``: ``DataLoader`` batches of kiln tensors with torch's values, dtypes and
list structure, over a ``TensorDataset`` and a subclassed ``Dataset``; shuffled passes are fresh permutations that
``kiln.manual_seed`` repeats; what is not supported is refused with what to do instead."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.runtime.data import DataError
from kiln.utils.data import DataLoader, Dataset, TensorDataset
from oracles import require

X = np.random.default_rng(0).normal(size=(7, 3))
Y = np.arange(7) % 3


def _samples(base):
    class Samples(base):
        """A sample is an array, a Python int and a Python float, as a hand-written dataset returns them."""

        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full(2, i, np.float32), i, 0.5 * i

    return Samples()


def _assert_same_batches(ours, theirs):
    assert len(ours) == len(theirs)
    for batch, expected in zip(ours, theirs, strict=True):
        assert type(batch) is type(expected) is list and len(batch) == len(expected)
        for tensor, torch_tensor in zip(batch, expected):
            assert isinstance(tensor, kiln.Tensor) and tensor.shape == tuple(torch_tensor.shape)
            assert tensor.numpy().dtype == torch_tensor.numpy().dtype
            np.testing.assert_array_equal(tensor.numpy(), torch_tensor.numpy())


@pytest.mark.parametrize("drop_last", [False, True])
def test_batches_of_a_tensor_dataset_are_torchs(drop_last):
    torch = require("torch")
    ours = DataLoader(TensorDataset(kiln.tensor(X), kiln.tensor(Y)), batch_size=3, drop_last=drop_last)
    theirs = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(X), torch.tensor(Y)), batch_size=3, drop_last=drop_last)
    _assert_same_batches(ours, theirs)


def test_samples_of_a_subclassed_dataset_collate_as_torchs():
    torch = require("torch")
    _assert_same_batches(DataLoader(_samples(Dataset), batch_size=2), torch.utils.data.DataLoader(_samples(torch.utils.data.Dataset), batch_size=2))


def test_a_tensor_dataset_indexes_rows_as_tensors():
    first = TensorDataset(kiln.tensor(X), kiln.tensor(Y))[1]
    assert len(first) == 2 and all(isinstance(t, kiln.Tensor) for t in first)
    np.testing.assert_array_equal(first[0].numpy(), X[1])


def test_each_shuffled_pass_is_a_new_permutation_that_manual_seed_repeats():
    loader = DataLoader(TensorDataset(np.arange(10)), batch_size=4, shuffle=True)

    def one_pass():
        return np.concatenate([batch.numpy() for (batch,) in loader])

    kiln.manual_seed(0)
    first, second = one_pass(), one_pass()
    kiln.manual_seed(0)
    assert sorted(first) == sorted(second) == list(range(10))
    assert not np.array_equal(first, second) and np.array_equal(one_pass(), first)


def test_batches_are_tensors_a_pytorch_loop_uses():
    device = kiln.device("cpu")
    for images, labels in DataLoader(TensorDataset(X, Y), batch_size=4):
        images, labels = images.to(device), labels.to(device)
        assert images.size(0) == labels.size(0) and labels.dtype == kiln.int64


def test_a_collate_fn_result_is_given_as_it_is():
    loader = DataLoader(TensorDataset(X), batch_size=2, collate_fn=lambda samples: len(samples))
    assert list(loader) == [2, 2, 2, 1]


def test_what_is_not_supported_is_refused_with_what_to_do():
    with pytest.raises(DataError, match="sampler option is mutually exclusive with shuffle"):  # samplers: tests/data
        DataLoader(TensorDataset(X), sampler=[0, 1], shuffle=True)
    with pytest.raises(DataError, match=r"size mismatch between tensors \(first dims \[7, 6\]\)"):
        TensorDataset(X, Y[:6])


@pytest.mark.parametrize("lengths", [[3, 4], [0.33, 0.33, 0.34], [0.5, 0.5], [7, 0]])
def test_random_split_has_torchs_lengths_and_covers_the_dataset_once(lengths):
    torch = require("torch")
    ours = kiln.utils.data.random_split(TensorDataset(X, Y), lengths)
    theirs = torch.utils.data.random_split(torch.utils.data.TensorDataset(torch.tensor(X), torch.tensor(Y)), lengths)
    assert [len(split) for split in ours] == [len(split) for split in theirs]
    assert sorted(i for split in ours for i in split.indices) == list(range(7))
    for split in ours:
        for position, index in enumerate(split.indices):
            np.testing.assert_array_equal(split[position][0].numpy(), X[index])


def test_subsets_load_by_one_gather_or_by_samples_and_repeat_with_manual_seed():
    kiln.manual_seed(1)
    first, _ = kiln.utils.data.random_split(TensorDataset(X, Y), [4, 3])
    kiln.manual_seed(1)
    assert kiln.utils.data.random_split(TensorDataset(X, Y), [4, 3])[0].indices == first.indices
    (images, labels), = DataLoader(first, batch_size=4)
    np.testing.assert_array_equal(images.numpy(), X[first.indices])
    samples = kiln.utils.data.Subset(_samples(Dataset), [4, 1])  # a dataset without a batch gather: collated samples
    arrays, ints, floats = next(iter(DataLoader(samples, batch_size=2)))
    assert ints.tolist() == [4, 1] and floats.tolist() == [2.0, 0.5]


def test_random_split_refuses_lengths_that_do_not_add_up():
    with pytest.raises(DataError, match=r"lengths \[3, 3\] neither sum to the dataset's length 7"):
        kiln.utils.data.random_split(TensorDataset(X), [3, 3])
