"""``kiln.utils.data.default_collate`` / ``default_convert`` against torch's on the same samples: the same structure
(dicts, namedtuples, nested tuples and lists, strings), the same dtypes and values, kiln tensors where torch gives
torch tensors, and the same errors; a user ``collate_fn`` gets the samples as they are."""

from __future__ import annotations

import collections
from typing import Any, Callable, NamedTuple

import numpy as np
import pytest

import kiln
from kiln.utils.data import DataLoader, Dataset, default_collate, default_convert
from oracles import require


class Point(NamedTuple):
    x: Any
    y: Any


class FrozenMap(collections.abc.Mapping):
    """A read-only mapping type: collation rebuilds it from a dict."""

    def __init__(self, items):
        self._items = dict(items)

    def __getitem__(self, key):
        return self._items[key]

    def __iter__(self):
        return iter(self._items)

    def __len__(self):
        return len(self._items)


def _samples(tensor: Callable[[np.ndarray], Any]) -> dict[str, list[Any]]:
    """Lists of samples of every kind collation distinguishes; ``tensor`` makes the library's tensor from an array."""
    arrays = [np.random.default_rng(i).normal(size=(2, 3)).astype(np.float32) for i in range(3)]
    return {
        "tensors": [tensor(a) for a in arrays],
        "int tensors": [tensor(np.arange(4, dtype=np.int32) + i) for i in range(3)],
        "arrays": arrays,
        "float16 arrays": [a.astype(np.float16) for a in arrays],
        "uint8 arrays": [np.full(2, i, np.uint8) for i in range(3)],
        "bool arrays": [np.array([i % 2 == 0, True]) for i in range(3)],
        "floats": [0.5, 1.5, -2.0],
        "ints": [1, 2, 3],
        "bools": [True, False, True],
        "ints then a float": [1, 2, 3.5],
        "ints and bools": [1, True, 3],
        "numpy float32 scalars": [np.float32(1.5), np.float32(2.0)],
        "numpy int8 scalars": [np.int8(1), np.int8(-3)],
        "numpy bool scalars": [np.bool_(True), np.bool_(False)],
        "numpy float64 scalars": [np.float64(0.25), np.float64(2)],
        "strings": ["a", "bc", "d"],
        "bytes": [b"a", b"b"],
        "dicts": [{"image": tensor(arrays[i]), "label": i, "name": f"n{i}"} for i in range(3)],
        "ordered dicts": [collections.OrderedDict(b=i, a=float(i)) for i in range(3)],
        "read-only mappings": [FrozenMap({"k": i}) for i in range(3)],
        "namedtuples": [Point(arrays[i], float(i)) for i in range(3)],
        "nested tuples": [(tensor(arrays[i]), (i, [0.5 * i, np.int16(i)]), "s") for i in range(3)],
        "lists": [[i, 2.0 * i] for i in range(3)],
        "dict of lists": [{"xs": [i, i + 1], "pair": (np.float32(i), str(i))} for i in range(3)],
    }


KILN_INTEGERS = {np.dtype(np.uint16): np.dtype(np.int32)}
"""Integer dtypes kiln tensors lack, and what collation widens them to (every value kept); uint8, int8, int16 stay."""


def assert_same(ours: Any, theirs: Any, torch: Any, where: str = "batch") -> None:
    """``ours`` has ``theirs``' structure and types, with kiln tensors of the same dtype and values for torch's."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, kiln.Tensor), f"{where}: {type(ours).__name__} instead of a tensor"
        expected_dtype = KILN_INTEGERS.get(theirs.numpy().dtype, theirs.numpy().dtype)
        assert ours.shape == tuple(theirs.shape) and ours.numpy().dtype == expected_dtype, where
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=where)
        return
    assert type(ours) is type(theirs), f"{where}: {type(ours).__name__} instead of {type(theirs).__name__}"
    if isinstance(theirs, collections.abc.Mapping):
        assert list(ours) == list(theirs), where
        for key in theirs:
            assert_same(ours[key], theirs[key], torch, f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), where
        for i, (mine, their) in enumerate(zip(ours, theirs)):
            assert_same(mine, their, torch, f"{where}[{i}]")
    elif isinstance(theirs, np.ndarray):
        np.testing.assert_array_equal(ours, theirs)
    else:
        assert ours == theirs, where


@pytest.mark.parametrize("kind", list(_samples(np.asarray)))
def test_default_collate_gives_torchs_structure_dtypes_and_values(kind):
    torch = require("torch")
    ours = default_collate(_samples(kiln.tensor)[kind])
    theirs = torch.utils.data.default_collate(_samples(torch.from_numpy)[kind])
    assert_same(ours, theirs, torch)


@pytest.mark.parametrize("kind", list(_samples(np.asarray)))
def test_default_convert_gives_torchs_structure_dtypes_and_values(kind):
    torch = require("torch")
    for mine, their in zip(_samples(kiln.tensor)[kind], _samples(torch.from_numpy)[kind]):
        assert_same(default_convert(mine), torch.utils.data.default_convert(their), torch)


@pytest.mark.parametrize("samples", [
    [np.array(["a", "b"]), np.array(["c", "d"])],
    [object(), object()],
    [[1, 2], [3]],
])
def test_what_cannot_collate_raises_torchs_error(samples):
    torch = require("torch")
    with pytest.raises((TypeError, RuntimeError)) as expected:
        torch.utils.data.default_collate(samples)
    with pytest.raises(expected.type) as raised:
        default_collate(samples)
    assert str(raised.value).split(" <class")[0] == str(expected.value).split(" <class")[0]


def test_samples_of_different_shapes_say_what_to_do():
    with pytest.raises(RuntimeError, match=r"shapes \[\(2,\), \(3,\)\]; pad the samples to one shape or pass a collate_fn"):
        default_collate([np.zeros(2), np.zeros(3)])


def test_tensors_that_require_grad_collate_through_autograd():
    leaf = kiln.tensor([1.0, 2.0], requires_grad=True)
    batch = default_collate([leaf, leaf * 3])
    batch.sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), [4.0, 4.0])


class _Mixed(Dataset):
    def __init__(self, tensor):
        self.tensor = tensor

    def __len__(self):
        return 5

    def __getitem__(self, i):
        return {"x": self.tensor(np.full(3, i, np.float64)), "meta": Point(i, f"id{i}"), "pair": (np.int32(i), [0.5 * i])}


@pytest.mark.parametrize("batch_size", [2, None])
def test_a_loader_collates_or_converts_as_torchs(batch_size):
    torch = require("torch")
    ours = list(DataLoader(_Mixed(kiln.tensor), batch_size=batch_size))
    theirs = list(torch.utils.data.DataLoader(_Mixed(torch.from_numpy), batch_size=batch_size))
    assert_same(ours, theirs, torch)


def test_a_user_collate_fn_gets_the_samples_as_they_are():
    seen = []

    def pad(samples):
        seen.append(samples)
        longest = max(len(s) for s in samples)
        return kiln.tensor(np.stack([np.pad(s, (0, longest - len(s))) for s in samples]))

    class Ragged(Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return np.arange(i + 1, dtype=np.int64)

    batches = list(DataLoader(Ragged(), batch_size=2, collate_fn=pad))
    assert [b.shape for b in batches] == [(2, 2), (1, 3)] and [len(s) for s in seen] == [2, 1]
    np.testing.assert_array_equal(batches[0].numpy(), [[0, 0], [0, 1]])
