"""``kiln.save`` of a checkpoint holding an object that is not an array, number, string or container (DiT's train.py
saves ``"args": args``, an ``argparse.Namespace``) pickles that leaf, as ``torch.save`` does; kiln refused the whole
checkpoint. ``kiln.load`` then refuses the leaf under ``weights_only`` (the default) with torch 2.13's
``UnpicklingError`` words unless its class is on torch's allow-list (``set``, ``complex``, bytes), and gives it back
with ``weights_only=False``, as ``torch.load`` does for the same tree. (A ``Counter``, a dict, still loads as a plain
dict from kiln's files.)"""

from __future__ import annotations

import argparse
import io
import pickle

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import CheckpointError
from oracles import require_torch


def _checkpoint(lib):
    model = lib.nn.Linear(3, 2)
    return {"model": model.state_dict(), "args": argparse.Namespace(model="DiT-S/2", global_batch_size=256),
            "step": 7}


def _saved(lib, tree):
    buffer = io.BytesIO()
    lib.save(tree, buffer)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize("leaf, name", [(argparse.Namespace(lr=1e-4), "argparse.Namespace"),
                                        (frozenset({1}), "builtins.frozenset")], ids=["Namespace", "frozenset"])
def test_a_leaf_off_the_allow_list_is_refused_under_weights_only_as_torch(leaf, name):
    torch = require_torch()
    for lib in (torch, kiln):
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed") as raised:
            lib.load(_saved(lib, {**_checkpoint(lib), "args": leaf}), map_location=lambda storage, loc: storage)
        assert f"Unsupported global: GLOBAL {name.replace('builtins.', '') if lib is torch else name}" in str(raised.value)


def test_a_namespace_leaf_loads_with_weights_only_false_as_torch():
    torch = require_torch()
    loaded = {lib.__name__: lib.load(_saved(lib, _checkpoint(lib)), weights_only=False) for lib in (torch, kiln)}
    ours, theirs = loaded["kiln"], loaded["torch"]
    assert ours["args"] == theirs["args"] == argparse.Namespace(model="DiT-S/2", global_batch_size=256)
    assert ours["step"] == theirs["step"] == 7
    assert set(ours["model"]) == set(theirs["model"]) and isinstance(ours["model"]["weight"], kiln.Tensor)


@pytest.mark.parametrize("leaf", [{1, 2}, 1 + 2j, b"\x00kiln"], ids=["set", "complex", "bytes"])
def test_allow_listed_leaves_load_under_weights_only_as_torch(leaf):
    torch = require_torch()
    ours, theirs = (lib.load(_saved(lib, {"leaf": leaf, "x": lib.ones(2)})) for lib in (kiln, torch))
    assert ours["leaf"] == theirs["leaf"] == leaf and type(ours["leaf"]) is type(theirs["leaf"])
    np.testing.assert_array_equal(np.array(ours["x"]), theirs["x"].numpy())


def test_an_unpicklable_leaf_says_what_and_what_to_do():
    with pytest.raises(CheckpointError, match=r"cannot save state\['hook'\]: a function .* pickling it failed .* "
                                              r"save its state \(a dict\) instead"):
        kiln.save({"hook": lambda x: x}, io.BytesIO())
