"""``kiln.utils.data``'s ``IterableDataset``, ``ChainDataset``, ``ConcatDataset``, ``StackDataset`` and ``TensorDataset``
read through a ``DataLoader`` exactly as torch's (same samples, batches, lengths) and refuse what torch refuses."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.utils.data as data
from oracles import require
from test_torch_collate import assert_same


def _stream_class(base):
    class Squares(base):
        """A stream of ``(i, i*i as float32 array)`` for ``start <= i < stop``, with a length."""

        def __init__(self, start, stop):
            self.start, self.stop = start, stop

        def __iter__(self):
            return ((i, np.full(2, i * i, np.float32)) for i in range(self.start, self.stop))

        def __len__(self):
            return self.stop - self.start

    return Squares


def _build(module, tensor):
    """The same datasets built with ``module`` (torch.utils.data or kiln.utils.data) and its ``tensor``."""
    squares = _stream_class(module.IterableDataset)
    x, y = tensor(np.arange(12.0).reshape(6, 2)), tensor(np.arange(6) % 2)
    pairs = module.TensorDataset(x, y)
    return {
        "stream": squares(0, 7),
        "chain": module.ChainDataset([squares(0, 3), squares(10, 15)]),
        "stream plus stream": squares(0, 2) + squares(5, 8),
        "concat": module.ConcatDataset([pairs, module.TensorDataset(x[:3] * 2, y[:3])]),
        "dataset plus dataset": pairs + pairs,
        "stack tuple": module.StackDataset(pairs, module.TensorDataset(y)),
        "stack dict": module.StackDataset(features=pairs, label=module.TensorDataset(y)),
        "subset of concat": module.Subset(module.ConcatDataset([pairs, pairs]), [11, 0, 7]),
    }


@pytest.mark.parametrize("name", list(_build(data, np.asarray)))
@pytest.mark.parametrize("options", [{"batch_size": 3}, {"batch_size": 3, "drop_last": True}, {"batch_size": None}])
def test_datasets_load_as_torchs(name, options):
    torch = require("torch")
    ours, theirs = _build(data, kiln.tensor)[name], _build(torch.utils.data, torch.tensor)[name]
    our_loader, their_loader = data.DataLoader(ours, **options), torch.utils.data.DataLoader(theirs, **options)
    assert len(our_loader) == len(their_loader) and len(ours) == len(theirs)
    assert_same(list(our_loader), list(their_loader), torch)


def test_negative_indices_and_cumulative_sizes_are_torchs():
    torch = require("torch")
    ours, theirs = _build(data, kiln.tensor)["concat"], _build(torch.utils.data, torch.tensor)["concat"]
    assert ours.cumulative_sizes == theirs.cumulative_sizes == [6, 9]
    for index in (-1, -9, 5, 6):
        assert_same(list(ours[index]), list(theirs[index]), torch)
    with pytest.raises(ValueError):
        ours[-10]


@pytest.mark.parametrize("make", [
    lambda m: m.ConcatDataset([]),
    lambda m: m.StackDataset(),
    lambda m: m.StackDataset([1, 2], [1, 2, 3]),
    lambda m: m.DataLoader(_stream_class(m.IterableDataset)(0, 3), shuffle=True),
    lambda m: m.DataLoader(_stream_class(m.IterableDataset)(0, 3), sampler=[0]),
    lambda m: m.DataLoader(_stream_class(m.IterableDataset)(0, 3), batch_sampler=[[0]]),
    lambda m: list(m.ChainDataset([_stream_class(m.IterableDataset)(0, 2), [1, 2]])),
    lambda m: m.ConcatDataset([_stream_class(m.IterableDataset)(0, 2)]),
])
def test_what_torch_refuses_is_refused(make):
    torch = require("torch")
    with pytest.raises((ValueError, AssertionError)):
        make(torch.utils.data)
    with pytest.raises(ValueError):
        make(data)


def test_a_tensor_dataset_keeps_uint8_images_and_exposes_its_tensors():
    images = np.arange(12, dtype=np.uint8).reshape(3, 4)
    dataset = data.TensorDataset(images, np.arange(3))
    (batch, labels), = data.DataLoader(dataset, batch_size=3)
    assert batch.dtype == kiln.uint8 and labels.dtype == kiln.int64
    np.testing.assert_array_equal(batch.numpy(), images)
    assert [t.dtype for t in dataset.tensors] == [kiln.uint8, kiln.int64] and dataset[1][0].dtype == kiln.uint8
