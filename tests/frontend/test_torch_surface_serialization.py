"""``kiln.serialization`` against ``torch.serialization`` (torch 2.13): ``add_safe_globals`` lets ``weights_only=True``
load an ``argparse.Namespace`` (DiT's args) or NumPy scalars (DINO's lr) in each library's files, ``safe_globals``
only inside its block, ``get_unsafe_globals_in_checkpoint`` names the same globals torch names, ``clear_safe_globals``
forgets them; ``save``/``load``/``DEFAULT_PROTOCOL`` are there. Both registries are restored after each test."""

from __future__ import annotations

import argparse
import io
import pickle

import numpy as np
import pytest

import kiln
from oracles import require_torch

SCALARS = [np._core.multiarray.scalar, np.dtype, type(np.dtype(np.float64))]


@pytest.fixture
def torch():
    torch = require_torch()
    before = (kiln.serialization.get_safe_globals(), torch.serialization.get_safe_globals())
    yield torch
    kiln.serialization.clear_safe_globals()
    kiln.serialization.add_safe_globals(before[0])
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(before[1])


def _files(torch, tree):
    """``tree(lib)`` saved by kiln (torch's zip format, its legacy one, kiln's NPZ) and by torch, as bytes."""
    files = {}
    for name, lib, options in (("kiln.pt", kiln, {}), ("kiln legacy", kiln, {"_use_new_zipfile_serialization": False}),
                               ("torch.pt", torch, {})):
        buffer = io.BytesIO()
        lib.save(tree(lib), buffer, **options)
        files[name] = buffer.getvalue()
    return files


@pytest.mark.parametrize("leaf, allowed", [(argparse.Namespace(lr=0.1), [argparse.Namespace]), (np.float64(0.5), SCALARS)],
                         ids=["namespace", "numpy_scalar"])
def test_add_safe_globals_lets_weights_only_load_what_it_names(torch, leaf, allowed):
    files = _files(torch, lambda lib: {"leaf": leaf, "x": lib.ones(2)})
    for lib in (kiln, torch):
        for name, content in files.items():
            with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
                lib.load(io.BytesIO(content), weights_only=True)
    for lib in (kiln, torch):
        lib.serialization.add_safe_globals(allowed)
        for name, content in files.items():
            loaded = lib.load(io.BytesIO(content), weights_only=True)["leaf"]
            assert loaded == leaf and type(loaded) is type(leaf), (lib.__name__, name)


def test_safe_globals_allows_inside_its_block_only(torch):
    files = _files(torch, lambda lib: {"args": argparse.Namespace(depth=12)})
    for lib in (kiln, torch):
        with lib.serialization.safe_globals([argparse.Namespace]):
            assert argparse.Namespace in lib.serialization.get_safe_globals()
            assert lib.load(io.BytesIO(files["kiln.pt"]))["args"].depth == 12
        assert argparse.Namespace not in lib.serialization.get_safe_globals()
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
            lib.load(io.BytesIO(files["torch.pt"]))


def test_a_namespace_leaf_in_kilns_npz_format_is_allowed_too(torch, tmp_path):
    kiln.save({"args": argparse.Namespace(depth=12)}, tmp_path / "run.npz")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        kiln.load(tmp_path / "run.npz")
    kiln.serialization.add_safe_globals([argparse.Namespace])
    assert kiln.load(tmp_path / "run.npz")["args"].depth == 12
    kiln.serialization.clear_safe_globals()
    assert kiln.serialization.get_safe_globals() == []


def test_unsafe_globals_in_a_checkpoint_are_the_ones_torch_names(torch, tmp_path):
    files = _files(torch, lambda lib: {"args": argparse.Namespace(lr=1), "lr": np.float64(0.5), "ids": {1, 2}, "x": lib.ones(1)})
    kiln.save({"args": argparse.Namespace(lr=1), "lr": np.float64(0.5)}, tmp_path / "run.npz")
    expected = set(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(files["torch.pt"])))
    assert expected == {"argparse.Namespace", "numpy._core.multiarray.scalar", "numpy.dtype"}
    for name, content in files.items():
        if name == "kiln legacy":  # torch's reads the zip format only; kiln's the legacy one too
            with pytest.raises(ValueError, match="Expected input to be a checkpoint returned by torch.save"):
                torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(content))
        else:
            assert set(torch.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(content))) == expected, name
        assert set(kiln.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(content))) == expected, name
    assert kiln.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "run.npz") == ["argparse.Namespace"]
    kiln.save({"args": argparse.Namespace(lr=1), "lr": np.float64(0.5)}, tmp_path / "protocol4.pt", pickle_protocol=4)
    assert set(kiln.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "protocol4.pt")) == expected  # STACK_GLOBAL
    for lib in (kiln, torch):
        lib.serialization.add_safe_globals([argparse.Namespace])
        assert set(lib.serialization.get_unsafe_globals_in_checkpoint(io.BytesIO(files["kiln.pt"]))) == expected - {"argparse.Namespace"}


def test_the_rest_of_the_namespace_is_torchs(torch):
    assert kiln.serialization.DEFAULT_PROTOCOL == torch.serialization.DEFAULT_PROTOCOL == 2
    assert kiln.serialization.save is kiln.save and kiln.serialization.load is kiln.load
    with pytest.raises(TypeError, match="not a class or function"):
        kiln.serialization.add_safe_globals([3])
    kiln.serialization.add_safe_globals([(argparse.Namespace, "my_module.Args")])
    assert kiln.serialization.get_safe_globals() == [(argparse.Namespace, "my_module.Args")]
