"""``kiln.load`` gives what ``torch.load`` gives: tensors (eager kiln Tensors; a pickled ``nn.Parameter`` a
``Parameter``), ints that stay ints, dicts (``OrderedDict`` too), lists and tuples, tensors sharing storage where torch
restores the sharing; for files ``torch.save`` wrote and for kiln's own (the same tree saved by each library, loaded by
each, compared). ``map_location``, ``weights_only`` and ``mmap`` take torch 2.13's values and refuse what it refuses."""

from __future__ import annotations

import argparse
import collections
import io
import mmap as mmap_module
import pickle
import zipfile

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import CheckpointError
from oracles import require


def assert_same_tree(ours, theirs, torch, where="tree"):
    """``ours`` (kiln.load's) has ``theirs``'s (torch.load's) kinds, structure and values: tensor for tensor (Parameter
    for Parameter, same dtype name, shape and values), int for int, OrderedDict for OrderedDict."""
    if isinstance(theirs, torch.Tensor):
        kind = kiln.nn.Parameter if isinstance(theirs, torch.nn.Parameter) else kiln.Tensor
        assert isinstance(ours, kind) and isinstance(ours, kiln.nn.Parameter) == (kind is kiln.nn.Parameter), (where, type(ours))
        assert str(ours.dtype).removeprefix("kiln.") == str(theirs.dtype).removeprefix("torch."), where
        assert tuple(ours.shape) == tuple(theirs.shape) and ours.numel() == theirs.numel(), where
        np.testing.assert_array_equal(np.asarray(ours.float()), theirs.float().detach().numpy(), err_msg=where)
        if isinstance(theirs, torch.nn.Parameter):
            assert ours.requires_grad == theirs.requires_grad, where
        return
    assert type(ours).__name__ == type(theirs).__name__, (where, type(ours), type(theirs))
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs), where
        for key in theirs:
            assert_same_tree(ours[key], theirs[key], torch, f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), where
        for index, (mine, other) in enumerate(zip(ours, theirs)):
            assert_same_tree(mine, other, torch, f"{where}[{index}]")
    else:
        assert ours == theirs, where


def _torch_checkpoint(torch):
    """A training checkpoint as PyTorch scripts write one: the model's state_dict, an Adam state after two steps (its
    per-parameter 'step' a 0-d tensor), ints, floats, strings, a tuple, nested lists and None."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(5, 3)).square().mean().backward()
        optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 7, "best_acc": 0.875,
            "arch": "mlp", "betas": (0.9, 0.999), "history": [[1, 2.5], None], "ids": torch.arange(4)}


def test_a_torch_checkpoint_loads_as_torch_loads_it(tmp_path):
    torch = require("torch")
    path = tmp_path / "checkpoint.pth"
    torch.save(_torch_checkpoint(torch), path)
    ours, theirs = kiln.load(path, map_location="cpu", weights_only=True), torch.load(path, map_location="cpu", weights_only=True)
    assert_same_tree(ours, theirs, torch)
    assert type(ours["epoch"]) is int and ours["model"]["1.num_batches_tracked"].dtype == kiln.int64
    weight = ours["model"]["0.weight"]
    assert weight.float().dtype == kiln.float32 and weight.to("cpu").shape == (4, 3) and weight.numel() == 12
    assert not weight.requires_grad  # eager, no grad, as torch.load's


def test_the_loaded_checkpoint_resumes_model_and_optimizer_in_kiln(tmp_path):
    torch = require("torch")
    saved = _torch_checkpoint(torch)
    torch.save(saved, tmp_path / "checkpoint.pth")
    checkpoint = kiln.load(tmp_path / "checkpoint.pth")
    model = kiln.nn.Sequential(kiln.nn.Linear(3, 4), kiln.nn.BatchNorm1d(4), kiln.nn.Linear(4, 2))
    optimizer = kiln.optim.Adam(model.parameters(), lr=0.01)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])  # torch.optim's layout, its tensors as kiln tensors
    for name, value in saved["model"].items():
        np.testing.assert_array_equal(model.state_dict()[name], value.numpy(), err_msg=name)
    ours = optimizer.state_dict()
    for index, state in saved["optimizer"]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(np.asarray(ours["state"][index][name]), state[name].numpy())
    assert [int(state["step"]) for state in ours["state"].values()] == [2] * len(ours["state"])


def test_tied_weights_and_views_share_their_storage_as_torchs(tmp_path):
    torch = require("torch")

    class Tied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.head = torch.nn.Embedding(5, 3), torch.nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight

    base = torch.arange(12.0).reshape(3, 4)
    saved = {"model": Tied().state_dict(), "row": base[1], "columns": base[:, 1:3], "same": [base, base]}
    torch.save(saved, tmp_path / "tied.pt")
    ours, theirs = kiln.load(tmp_path / "tied.pt"), torch.load(tmp_path / "tied.pt")
    assert_same_tree(ours, theirs, torch)
    shares = lambda a, b: np.shares_memory(np.asarray(a), np.asarray(b))  # noqa: E731
    assert theirs["model"]["embed.weight"].data_ptr() == theirs["model"]["head.weight"].data_ptr()
    assert shares(ours["model"]["embed.weight"], ours["model"]["head.weight"])
    assert shares(ours["row"], ours["same"][0]) and shares(ours["columns"], ours["same"][0])
    assert (ours["same"][0] is ours["same"][1]) == (theirs["same"][0] is theirs["same"][1]) is True
    assert not shares(ours["row"], ours["model"]["embed.weight"])


def test_kilns_own_files_load_as_torch_loads_the_same_tree(tmp_path):
    """One tree built by each library (a state_dict with tied weights, a Parameter, a bfloat16 and an int tensor,
    numbers, strings, nested containers), saved by each, loaded by each."""
    torch = require("torch")

    def tree(library):
        library.manual_seed(0)
        model = library.nn.Linear(3, 2)
        state = model.state_dict()
        state["tied"] = state["weight"]
        return {"model": state, "parameter": library.nn.Parameter(library.ones(2, 2), requires_grad=False),
                "half": library.tensor([1.5, -2.25], dtype=library.bfloat16), "count": library.tensor([3, 4]),
                "epoch": 3, "lr": 0.1, "name": "run", "pair": (1, [2.5, None]), 4: {"nested": library.zeros(0, 3)}}

    torch.save(tree(torch), tmp_path / "torch.pt")
    kiln.save(tree(kiln), tmp_path / "kiln.pt")
    ours, theirs = kiln.load(tmp_path / "kiln.pt"), torch.load(tmp_path / "torch.pt")
    for name in ("weight", "bias"):  # kiln's and torch's initialisations differ: compare kinds, copy the values
        theirs["model"][name] = torch.from_numpy(np.asarray(ours["model"][name]).copy())
    theirs["model"]["tied"] = theirs["model"]["weight"]
    assert_same_tree(ours, theirs, torch)
    assert np.shares_memory(np.asarray(ours["model"]["tied"]), np.asarray(ours["model"]["weight"]))


def test_what_kiln_load_gives_saves_and_loads_again(tmp_path):
    torch = require("torch")
    torch.save(_torch_checkpoint(torch), tmp_path / "checkpoint.pth")
    first = kiln.load(tmp_path / "checkpoint.pth")
    kiln.save(first, tmp_path / "again.pt")
    assert_same_tree(kiln.load(tmp_path / "again.pt"), torch.load(tmp_path / "checkpoint.pth"), torch)
    torch.save({"weight": torch.nn.Parameter(torch.ones(2)), "frozen": torch.nn.Parameter(torch.ones(1), requires_grad=False)},
               tmp_path / "parameters.pt")
    kiln.save(kiln.load(tmp_path / "parameters.pt"), tmp_path / "parameters.npz")
    assert_same_tree(kiln.load(tmp_path / "parameters.npz"), torch.load(tmp_path / "parameters.pt"), torch)


def test_a_training_step_file_loads_as_tensors_and_resumes_the_step(tmp_path):
    import kiln.nn.functional as F

    def make_step():
        kiln.manual_seed(0)
        model = kiln.nn.Sequential(kiln.nn.Linear(4, 6), kiln.nn.ReLU(), kiln.nn.Linear(6, 3))
        return kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))

    batch = (np.random.default_rng(1).random((5, 4), dtype=np.float32), np.array([0, 1, 2, 1, 0]))
    step = make_step()
    step(*batch)
    step.save(tmp_path / "step.npz")
    expected = step(*batch)
    loaded = kiln.load(tmp_path / "step.npz")
    assert isinstance(loaded["model"]["0.weight"], kiln.Tensor) and type(loaded["optimizer"]["step"]) is int
    fresh = make_step()
    fresh.load_state_dict(loaded)
    assert fresh(*batch) == expected


def test_a_trainer_checkpoint_loads_as_tensors(tmp_path):
    from kiln.runtime.checkpoint_manager import CheckpointManager, load_training_checkpoint

    step = kiln.compile_train_step(kiln.nn.Linear(3, 2), kiln.nn.functional.mse_loss, kiln.optim.Adam(kiln.nn.Linear(3, 2).parameters()))
    path = CheckpointManager(str(tmp_path), keep=2).save(step, {"epoch": 1})
    loaded = kiln.load(path)
    assert loaded["progress"] == {"epoch": 1} and type(loaded["manifest"]["step"]) is int
    assert isinstance(loaded["train"]["model"]["weight"], kiln.Tensor)
    internal = load_training_checkpoint(path)  # kiln's own resume still reads arrays, and checks the checksum
    assert isinstance(internal["train"]["model"]["weight"], np.ndarray)
    np.testing.assert_array_equal(internal["train"]["model"]["weight"], loaded["train"]["model"]["weight"])


@pytest.mark.parametrize("value", [{1, 2}, 1 + 2j, b"bytes", bytearray(b"ab"), collections.Counter("aab")], ids=repr)
def test_the_plain_values_torchs_allow_list_takes(tmp_path, value):
    torch = require("torch")
    torch.save({"value": value}, tmp_path / "value.pt")
    assert_same_tree(kiln.load(tmp_path / "value.pt"), torch.load(tmp_path / "value.pt"), torch)


def test_torch_size_dtype_and_device_load_as_kilns(tmp_path):
    torch = require("torch")
    torch.save({"size": torch.Size([2, 3]), "dtype": torch.bfloat16, "device": torch.device("cpu")}, tmp_path / "v.pt")
    loaded = kiln.load(tmp_path / "v.pt")
    assert loaded == {"size": kiln.Size([2, 3]), "dtype": kiln.bfloat16, "device": kiln.device("cpu")}
    assert isinstance(loaded["size"], kiln.Size)


@pytest.mark.parametrize("value", [argparse.Namespace(lr=0.1), np.ones(2), slice(1, 2)], ids=lambda v: type(v).__name__)
def test_weights_only_refuses_what_torch_refuses_and_false_loads_it(tmp_path, value):
    torch = require("torch")
    torch.save({"value": value}, tmp_path / "args.pt")
    with pytest.raises(pickle.UnpicklingError):
        torch.load(tmp_path / "args.pt")
    with pytest.raises(pickle.UnpicklingError, match=r"weights_only=True refuses.*weights_only=False"):
        kiln.load(tmp_path / "args.pt")
    ours, theirs = kiln.load(tmp_path / "args.pt", weights_only=False), torch.load(tmp_path / "args.pt", weights_only=False)
    assert type(ours["value"]) is type(theirs["value"])
    assert np.array_equal(ours["value"], theirs["value"]) if isinstance(value, np.ndarray) else ours == theirs


def test_a_pickled_torch_module_is_refused_even_with_weights_only_false(tmp_path):
    torch = require("torch")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pt")
    assert isinstance(torch.load(tmp_path / "model.pt", weights_only=False), torch.nn.Linear)
    with pytest.raises(CheckpointError, match=r"torch.nn.modules.linear.Linear, a PyTorch object kiln cannot rebuild.*state_dict"):
        kiln.load(tmp_path / "model.pt", weights_only=False)


def test_a_whole_kiln_module_needs_weights_only_false_as_torchs(tmp_path):
    kiln.save(kiln.nn.Linear(2, 2), tmp_path / "model.pt")
    with pytest.raises(pickle.UnpicklingError, match="weights_only=False"):
        kiln.load(tmp_path / "model.pt")
    assert isinstance(kiln.load(tmp_path / "model.pt", weights_only=False), kiln.nn.Linear)


def _map_locations(torch):
    """Each as torch takes it, and what kiln.load takes in its place (a kiln.device for a torch.device too)."""
    identity = lambda storage, location: storage  # noqa: E731
    return [("cpu", "cpu"), (torch.device("cpu"), torch.device("cpu")), (torch.device("cpu"), kiln.device("cpu")),
            ({"cpu": "cpu"},) * 2, ({"cuda:0": "cpu"},) * 2, (identity, identity)]


def test_map_location_takes_torchs_values_for_both_formats(tmp_path):
    torch = require("torch")
    torch.save({"w": torch.arange(6.0).reshape(2, 3), "n": 2}, tmp_path / "torch.pt")
    kiln.save({"w": kiln.arange(6.0).reshape(2, 3), "n": 2}, tmp_path / "kiln.pt")
    for theirs, ours in _map_locations(torch):
        expected = torch.load(tmp_path / "torch.pt", map_location=theirs)
        assert_same_tree(kiln.load(tmp_path / "torch.pt", map_location=ours), expected, torch)
        assert_same_tree(kiln.load(tmp_path / "kiln.pt", map_location=ours), expected, torch)


def test_a_map_location_callable_sees_each_storage_and_its_location(tmp_path):
    """torch passes an UntypedStorage (bytes); kiln, which has no storages, the storage's elements as a 1-d tensor."""
    torch = require("torch")
    base = torch.arange(4.0)
    torch.save({"a": base[:2], "b": base[2:], "c": torch.ones(3)}, tmp_path / "w.pt")
    seen = {"torch": [], "kiln": []}

    def recorder(library):
        nbytes = (lambda s: s.nbytes()) if library == "torch" else (lambda s: s.numel() * s.element_size())  # noqa: E731
        return lambda storage, location: seen[library].append((nbytes(storage), location))

    theirs = torch.load(tmp_path / "w.pt", map_location=recorder("torch"))  # None: the storage as it was
    ours = kiln.load(tmp_path / "w.pt", map_location=recorder("kiln"))
    assert seen["kiln"] == seen["torch"] == [(16, "cpu"), (12, "cpu")]
    assert_same_tree(ours, theirs, torch)
    doubled = kiln.load(tmp_path / "w.pt", map_location=lambda storage, location: storage * 2)
    np.testing.assert_array_equal(np.asarray(doubled["b"]), [4.0, 6.0])


def test_a_bad_map_location_is_refused(tmp_path):
    torch = require("torch")
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    with pytest.raises(TypeError):
        torch.load(tmp_path / "w.pt", map_location=3)
    with pytest.raises(CheckpointError, match=r"map_location=3 is a int; pass a device name"):
        kiln.load(tmp_path / "w.pt", map_location=3)
    with pytest.raises(CheckpointError, match=r"map_location is not a device: .*unknown device type 'gpu'"):
        kiln.load(tmp_path / "w.pt", map_location="gpu")
    with pytest.raises(CheckpointError, match=r"returned a float32 storage of shape \(1,\) for a float32 one of \(2,\)"):
        kiln.load(tmp_path / "w.pt", map_location=lambda storage, location: storage[:1])


def _mapped(tensor) -> bool:
    """Whether ``tensor``'s array lies in a memory map of the file (its chain of bases ends in an ``mmap``)."""
    base = np.asarray(tensor)
    while getattr(base, "base", None) is not None:  # views, as_strided's DummyArray, np.memmap
        base = base.base
    return isinstance(base, mmap_module.mmap)


@pytest.mark.parametrize("writer", ["torch", "kiln"])
def test_mmap_maps_the_arrays_from_the_file_and_writes_stay_private(tmp_path, writer):
    torch = require("torch")
    library = torch if writer == "torch" else kiln
    path = tmp_path / "w.pt"
    library.save({"w": library.arange(12.0).reshape(3, 4)[:, 1:], "h": library.ones(3, dtype=library.bfloat16), "n": 1}, path)
    mapped, read = kiln.load(path, mmap=True), kiln.load(path)
    assert _mapped(mapped["w"]) and _mapped(mapped["h"]) and not _mapped(read["w"])
    if writer == "torch":
        assert_same_tree(mapped, torch.load(path, mmap=True), torch)
    np.testing.assert_array_equal(np.asarray(mapped["w"]), np.asarray(read["w"]))
    np.asarray(mapped["w"])[...] = -1.0  # copy-on-write, as torch's MAP_PRIVATE: the file keeps its values
    np.testing.assert_array_equal(np.asarray(kiln.load(path, mmap=True)["w"]), np.asarray(read["w"]))


def test_mmap_needs_a_path_as_torchs(tmp_path):
    torch = require("torch")
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    with open(tmp_path / "w.pt", "rb") as file:
        with pytest.raises(ValueError, match="f must be a file path"):
            torch.load(file, mmap=True)
        with pytest.raises(CheckpointError, match="mmap=True needs a file path"):
            kiln.load(file, mmap=True)


def test_a_damaged_tensor_header_is_refused_not_read_past_its_storage(tmp_path):
    torch = require("torch")
    buffer, damaged = io.BytesIO(), io.BytesIO()
    torch.save({"w": torch.ones(4)}, buffer)
    size, too_big = b"K\x04\x85", b"K\x09\x85"  # the tensor's size tuple (4,) in data.pkl's protocol 2, and (9,)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(damaged, "w") as target:
        for info in source.infolist():  # rewritten whole, so each member's CRC matches: only the header is wrong
            content = source.read(info)
            assert not info.filename.endswith("data.pkl") or content.count(size) == 1
            target.writestr(info, content.replace(size, too_big) if info.filename.endswith("data.pkl") else content)
    damaged.seek(0)
    with pytest.raises(CheckpointError, match=r"size \(9,\), stride \(1,\) at offset 0 reaches past its storage of 4 elements"):
        kiln.load(damaged)
