"""torch.save's legacy format (``runtime/torch_legacy_format.py``): ``kiln.load`` reads the files PyTorch wrote before 1.6
and with ``_use_new_zipfile_serialization=False`` as ``torch.load`` reads them, and ``kiln.save(...,
_use_new_zipfile_serialization=False)`` writes the bytes torch.load reads as torch's own (``weights_only`` True and
False). torch.save's other options (``pickle_protocol``, ``pickle_module``, ``_disable_byteorder_record``) are taken."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import zipfile

import numpy as np
import pytest

import kiln
from checkpoint_trees import (TREES, assert_kiln_load_is_torchs, assert_same_load, random_tree, saved_by_each, sharing, torch_tensors,
                              views_tree)
from kiln.compiler.errors import CheckpointError

LEGACY = {"_use_new_zipfile_serialization": False}


@pytest.mark.parametrize("make", TREES, ids=lambda make: make.__name__)
def test_kiln_loads_torchs_legacy_file_as_torch_loads_it(make, tmp_path):
    torch, _, theirs = saved_by_each(make, tmp_path, **LEGACY)
    assert not zipfile.is_zipfile(theirs)
    assert_kiln_load_is_torchs(kiln.load(theirs), torch.load(theirs), torch)
    assert_kiln_load_is_torchs(kiln.load(io.BytesIO(theirs.read_bytes())), torch.load(theirs), torch)


@pytest.mark.parametrize("weights_only", [True, False], ids=["weights_only", "unpickled"])
@pytest.mark.parametrize("make", TREES, ids=lambda make: make.__name__)
def test_torch_loads_kilns_legacy_file_as_its_own(make, weights_only, tmp_path):
    torch, ours, theirs = saved_by_each(make, tmp_path, **LEGACY)
    assert ours.read_bytes()[:64] == theirs.read_bytes()[:64]  # magic number, protocol version, sys_info
    mine, other = (torch.load(path, weights_only=weights_only) for path in (ours, theirs))
    assert_same_load(mine, other, torch)
    assert sharing(torch_tensors(mine)) == sharing(torch_tensors(other))


def test_a_legacy_file_maps_through_map_location_and_refuses_mmap(tmp_path):
    torch, _, theirs = saved_by_each(views_tree, tmp_path, **LEGACY)
    seen = []
    loaded = kiln.load(theirs, map_location=lambda storage, location: seen.append(location))
    assert loaded["row"].tolist() == torch.load(theirs)["row"].tolist() and seen == ["cpu", "cpu"]
    with pytest.raises(RuntimeError, match="mmap can only be used with files saved with"):
        torch.load(theirs, mmap=True)
    with pytest.raises(CheckpointError, match=r"legacy format, and mmap can only be used with files saved with"):
        kiln.load(theirs, mmap=True)


def test_weights_only_refuses_a_namespace_in_a_legacy_file_as_torch(tmp_path):
    torch, ours, theirs = saved_by_each(lambda lib: {"args": argparse.Namespace(lr=0.1), "x": lib.ones(2)}, tmp_path, **LEGACY)
    for path in (ours, theirs):
        for lib in (kiln, torch):
            with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
                lib.load(path, weights_only=True)
            assert lib.load(path, weights_only=False)["args"] == argparse.Namespace(lr=0.1)


def test_a_truncated_legacy_file_says_so(tmp_path):
    torch, _, theirs = saved_by_each(views_tree, tmp_path, **LEGACY)
    theirs.write_bytes(theirs.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match=r"checkpoint.pt: storage \d+ ends early; the file is truncated"):
        kiln.load(theirs)


def test_a_failed_legacy_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "keep.pth"
    kiln.save({"x": kiln.ones(2)}, path, **LEGACY)
    with pytest.raises(CheckpointError, match=r"cannot save state\['hook'\]"):
        kiln.save({"hook": lambda: 0}, path, **LEGACY)
    assert kiln.load(path)["x"].tolist() == [1.0, 1.0] and os.listdir(tmp_path) == ["keep.pth"]


@pytest.mark.parametrize("options", [{"pickle_protocol": 4}, {"pickle_protocol": 5, **LEGACY}, {"pickle_module": pickle},
                                     {"_disable_byteorder_record": True}], ids=["protocol4", "legacy5", "pickle", "no_byteorder"])
def test_torch_saves_options_are_taken_as_torchs(options, tmp_path):
    """Each option gives what torch.save gives: torch's records in torch's order (``_disable_byteorder_record``: torch
    still writes ``byteorder``, after ``version``); pickle protocols 4 and 5, which torch's own weights_only loader
    refuses in torch's own files, then load with weights_only=False."""
    torch, ours, theirs = saved_by_each(views_tree, tmp_path, **options)
    weights_only = options.get("pickle_protocol", 2) == 2
    for path in (ours, theirs):
        if not weights_only:
            with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
                torch.load(path)
    assert_same_load(torch.load(ours, weights_only=weights_only), torch.load(theirs, weights_only=weights_only), torch)
    if zipfile.is_zipfile(theirs):
        names = [name.split("/", 1)[1] for name in zipfile.ZipFile(theirs).namelist()]
        assert [name.split("/", 1)[1] for name in zipfile.ZipFile(ours).namelist()] == names
    assert np.array_equal(np.asarray(kiln.load(ours)["t"]), torch.load(theirs, weights_only=weights_only)["t"].numpy())


def test_another_pickle_module_is_refused_by_name(tmp_path):
    import json

    with pytest.raises(CheckpointError, match=r"kiln.save: pickle_module=<module 'json'.*Python's pickle only"):
        kiln.save({"x": kiln.ones(1)}, tmp_path / "x.pt", pickle_module=json)
    assert not (tmp_path / "x.pt").exists()


@pytest.mark.parametrize("seed", range(6))
def test_random_trees_in_the_legacy_format_load_in_each_library_as_torchs(seed, tmp_path):
    torch, ours, theirs = saved_by_each(lambda lib: random_tree(lib, seed), tmp_path, **LEGACY)
    mine, other = torch.load(ours), torch.load(theirs)
    assert_same_load(mine, other, torch)
    assert sharing(torch_tensors(mine)) == sharing(torch_tensors(other))
    assert_kiln_load_is_torchs(kiln.load(theirs), other, torch)
