"""``kiln.save`` writes PyTorch's format (``runtime/torch_checkpoint_writer.py``) for any path not ending in ``.npz`` and
for a file object: ``torch.load`` (``weights_only`` True and False) reads it as it reads the file ``torch.save`` writes
for the same tree built in torch (values, dtypes, shapes, strides, storage offsets, storage sizes and sharing, Parameter
or Tensor, ``requires_grad``, the tree's other values and container types), and ``kiln.load`` reads it back. The
archive's records, their order and their 64-byte alignment are torch's. ``.npz`` paths and whole modules keep kiln's
format; a failed save leaves the previous file."""

from __future__ import annotations

import argparse
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import CheckpointError
from checkpoint_trees import (RNG, TREES, assert_kiln_load_is_torchs, assert_same_load, dtypes_tree, optimizer_tree, random_tree,
                              saved_by_each, sharing, tied_model, torch_tensors, views_tree)
from oracles import libraries, require_torch

@pytest.mark.parametrize("weights_only", [True, False], ids=["weights_only", "unpickled"])
@pytest.mark.parametrize("make", TREES, ids=lambda make: make.__name__)
def test_torch_loads_kilns_file_as_the_one_torch_saves(make, weights_only, tmp_path):
    torch, ours, theirs = saved_by_each(make, tmp_path)
    mine, other = (torch.load(path, weights_only=weights_only) for path in (ours, theirs))
    assert_same_load(mine, other, torch)
    assert sharing(torch_tensors(mine)) == sharing(torch_tensors(other))


@pytest.mark.parametrize("make", TREES, ids=lambda make: make.__name__)
def test_kiln_loads_its_torch_format_file_as_torch_loads_it(make, tmp_path):
    torch, ours, theirs = saved_by_each(make, tmp_path)
    assert_kiln_load_is_torchs(kiln.load(ours), torch.load(theirs), torch)


def _records(path):
    """``(name, stored uncompressed, offset of its bytes in the file)`` of each zip record, in order."""
    content = open(path, "rb").read()
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
    start = lambda info: info.header_offset + 30 + sum(struct.unpack("<HH", content[info.header_offset + 26:][:4]))  # noqa: E731
    return [(info.filename, info.compress_type == zipfile.ZIP_STORED, start(info)) for info in infos]


def test_the_archive_holds_torchs_records_in_torchs_order_each_64_byte_aligned(tmp_path):
    torch, ours, theirs = saved_by_each(optimizer_tree, tmp_path)
    records = _records(ours)
    assert [name for name, _, _ in records] == [name for name, _, _ in _records(theirs)]
    assert records[0][0] == "checkpoint/data.pkl" and records[-1][0] == "checkpoint/.data/serialization_id"
    assert all(stored and start % 64 == 0 for _, stored, start in records)
    with zipfile.ZipFile(ours) as mine, zipfile.ZipFile(theirs) as other:
        for name in ("version", ".format_version", ".storage_alignment", "byteorder"):
            assert mine.read(f"checkpoint/{name}") == other.read(f"checkpoint/{name}"), name
        assert mine.read("checkpoint/.data/serialization_id").isdigit()
    mapped = torch.load(ours, mmap=True, weights_only=True)  # mmap needs the alignment
    assert_same_load(mapped, torch.load(theirs), torch)
    assert kiln.load(ours, mmap=True)["nested"]["a"]["b"]["c"][0].tolist() == [1.0]


def test_a_file_object_gets_torchs_format_under_archive(tmp_path):
    torch = require_torch()
    buffer = io.BytesIO()
    kiln.save(views_tree(kiln), buffer)
    assert zipfile.ZipFile(io.BytesIO(buffer.getvalue())).namelist()[0] == "archive/data.pkl"
    reference = io.BytesIO()
    torch.save(views_tree(torch), reference)
    assert_same_load(torch.load(io.BytesIO(buffer.getvalue())), torch.load(io.BytesIO(reference.getvalue())), torch)


class _Stream:
    """A write-only stream (a pipe, a socket): no seek, no tell."""

    def __init__(self):
        self.chunks = []

    def write(self, data):
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self):
        pass


def test_a_stream_that_cannot_seek_gets_an_aligned_archive_too(tmp_path):
    torch = require_torch()
    stream = _Stream()
    kiln.save(dtypes_tree(kiln), stream)
    (tmp_path / "streamed.pt").write_bytes(b"".join(stream.chunks))
    assert all(start % 64 == 0 for _, _, start in _records(tmp_path / "streamed.pt"))
    torch.save(dtypes_tree(torch), tmp_path / "reference.pt")
    assert_same_load(torch.load(tmp_path / "streamed.pt"), torch.load(tmp_path / "reference.pt"), torch)


@pytest.mark.parametrize("name, torch_format", [("model.pt", True), ("model.pth", True), ("model.tar", True),
                                                ("model", True), ("run.npz", False), ("RUN.NPZ", False)])
def test_the_path_chooses_the_format(name, torch_format, tmp_path):
    kiln.save({"x": kiln.ones(2)}, tmp_path / name)
    with zipfile.ZipFile(tmp_path / name) as archive:
        assert any(member.endswith("/data.pkl") for member in archive.namelist()) == torch_format
        assert ("__kiln__.npy" in archive.namelist()) != torch_format
    assert kiln.load(tmp_path / name)["x"].tolist() == [1.0, 1.0]


def test_a_whole_module_keeps_kilns_format_whatever_the_path(tmp_path):
    model = kiln.nn.Linear(2, 3)
    kiln.save(model, tmp_path / "model.pt")
    assert "__kiln__.npy" in zipfile.ZipFile(tmp_path / "model.pt").namelist()
    loaded = kiln.load(tmp_path / "model.pt", weights_only=False)
    np.testing.assert_array_equal(loaded.weight.data, model.weight.data)


class Net(kiln.nn.Module):
    """A user's module (defined outside kiln) holding a parameter and a buffer of its own."""

    def __init__(self):
        super().__init__()
        self.fc, self.norm = kiln.nn.Linear(3, 4), kiln.nn.BatchNorm1d(4)
        self.gain = kiln.nn.Parameter(kiln.full((4,), 2.0))
        self.register_buffer("shift", kiln.full((4,), 0.5))
        self.table = np.arange(4.0)  # a plain attribute: a NumPy array, not a tensor

    def forward(self, x):
        return self.norm(self.fc(x)) * self.gain + self.shift


def test_a_users_module_inside_the_tree_is_pickled_as_kilns_too(tmp_path):
    """A subclass of kiln's Module defined in the user's code keeps kiln's pickling as kiln's own modules do: a NumPy
    array it keeps as an attribute came back a tensor."""
    net = Net()
    x = kiln.tensor(RNG.standard_normal((5, 3)).astype(np.float32))
    kiln.save({"model": net}, tmp_path / "run.pt")
    copy = kiln.load(tmp_path / "run.pt", weights_only=False)["model"]
    assert type(copy.shift) is type(net.shift) and type(copy.norm.running_mean) is type(net.norm.running_mean)
    assert [name for name, _ in copy.named_buffers()] == [name for name, _ in net.named_buffers()]
    assert type(copy.table) is np.ndarray and copy.table.tolist() == [0.0, 1.0, 2.0, 3.0]
    np.testing.assert_array_equal(copy(x).detach().numpy(), net(x).detach().numpy())


def test_a_module_inside_the_tree_is_pickled_as_kilns_and_loads_whole(tmp_path):
    """``kiln.save({"model": model, "epoch": 3}, "run.pt")``: the module keeps kiln's own pickling inside the torch
    archive (its buffers stay buffers), so kiln.load(weights_only=False) rebuilds a module that computes and trains."""
    model = kiln.nn.Sequential(kiln.nn.Linear(3, 4), kiln.nn.BatchNorm1d(4))
    x = kiln.tensor(RNG.standard_normal((5, 3)).astype(np.float32))
    expected = model(x).detach().numpy()
    kiln.save({"model": model, "epoch": 3}, tmp_path / "run.pt")
    loaded = kiln.load(tmp_path / "run.pt", weights_only=False)
    copy = loaded["model"]
    assert loaded["epoch"] == 3 and type(copy[1].running_mean) is type(model[1].running_mean)
    np.testing.assert_array_equal(copy(x).detach().numpy(), expected)
    copy(x).sum().backward()
    assert copy[0].weight.grad is not None and int(copy[1].num_batches_tracked) == 3  # one call before saving


def test_a_torch_state_dict_resaved_by_kiln_keeps_its_metadata_andsharing(tmp_path):
    """A checkpoint round trip through kiln (torch.save -> kiln.load -> kiln.save -> torch.load): ``_metadata``
    (BatchNorm's version) and the tied storages of the loaded windows survive."""
    torch = require_torch()
    model = tied_model(torch)
    torch.save({"model": model.state_dict(), "row": model.fc.weight.data[1]}, tmp_path / "torch.pt")
    kiln.save(kiln.load(tmp_path / "torch.pt"), tmp_path / "kiln.pt")
    again, original = torch.load(tmp_path / "kiln.pt"), torch.load(tmp_path / "torch.pt")
    assert again["model"]._metadata == original["model"]._metadata and "norm" in again["model"]._metadata
    assert_same_load(again, original, torch)
    assert sharing(torch_tensors(again)) == sharing(torch_tensors(original)) == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    tied_model(torch).load_state_dict(again["model"])


def test_arrays_torch_cannot_view_get_their_own_storage(tmp_path):
    """A reversed array (negative strides), a big-endian one and a second dtype over one memory are copies; values stay."""
    torch = require_torch()
    base = np.arange(6, dtype=np.float32)
    tree = {"base": base, "reversed": base[::-1], "big_endian": np.arange(3, dtype=">i4"), "bits": base.view(np.int32),
            "kiln_reversed": kiln.arange(4.0).flip(0)}
    kiln.save(tree, tmp_path / "odd.pt")
    loaded = torch.load(tmp_path / "odd.pt")
    for name in ("base", "reversed", "big_endian", "bits"):
        np.testing.assert_array_equal(loaded[name].numpy(), tree[name], err_msg=name)
    assert loaded["reversed"].untyped_storage().data_ptr() != loaded["base"].untyped_storage().data_ptr()
    assert loaded["bits"].untyped_storage().data_ptr() != loaded["base"].untyped_storage().data_ptr()
    assert loaded["kiln_reversed"].tolist() == [3.0, 2.0, 1.0, 0.0]


def test_arrays_a_parameters_data_makes_load_under_weights_only(tmp_path):
    """``np.zeros_like(p.data)`` and ``p.data.copy()`` (an optimizer's state written in NumPy, Rprop's ``prev``) are
    kiln's ``TorchArray``, whose ``size`` is an int subclass: the archive holds plain ints, which weights_only takes."""
    torch = require_torch()
    weight = kiln.nn.Parameter(kiln.tensor([1.0, -2.0]))
    kiln.save({"prev": np.zeros_like(weight.data), "copy": weight.data.copy()}, tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)
    assert loaded["prev"].tolist() == [0.0, 0.0] and loaded["copy"].tolist() == [1.0, -2.0]


def test_torch_resumes_training_from_kilns_checkpoint(tmp_path):
    """kiln trains a model with Adam for 3 steps and saves model, optimizer and epoch; PyTorch loads them into its
    twin model and optimizer (weights_only=True), and the next 2 steps in each give the same parameters."""
    torch = require_torch()
    data = [(RNG.standard_normal((8, 3)).astype(np.float32), RNG.integers(0, 4, 8)) for _ in range(5)]

    def train(lib, model, optimizer, batches):
        F = libraries(lib.__name__)[2]
        for x, y in batches:
            optimizer.zero_grad()
            F.cross_entropy(model.fc(lib.tensor(x)), lib.tensor(y)).backward()
            optimizer.step()

    model = tied_model(kiln)
    optimizer = kiln.optim.Adam(model.parameters(), lr=0.01)
    train(kiln, model, optimizer, data[:3])
    kiln.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}, tmp_path / "kiln.pt")
    checkpoint = torch.load(tmp_path / "kiln.pt", weights_only=True)
    twin = tied_model(torch)
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=0.5)
    twin.load_state_dict(checkpoint["model"])
    twin_optimizer.load_state_dict(checkpoint["optimizer"])
    assert twin_optimizer.param_groups[0]["lr"] == 0.01 and checkpoint["epoch"] == 3
    train(kiln, model, optimizer, data[3:])
    train(torch, twin, twin_optimizer, data[3:])
    for name, value in twin.state_dict().items():
        np.testing.assert_allclose(np.asarray(model.state_dict()[name]), value.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_a_failed_save_names_the_place_and_keeps_the_previous_file(tmp_path):
    path = tmp_path / "keep.pt"
    kiln.save({"weights": kiln.arange(3.0)}, path)
    with pytest.raises(CheckpointError, match=r"cannot save state\['run'\]\['hook'\]: a function .* pickling it failed"):
        kiln.save({"weights": kiln.zeros(3), "run": {"hook": lambda: 0}}, path)
    with pytest.raises(CheckpointError, match=r"cannot save state\['ids'\]\[1\]: a uint16 array.*\.npz"):
        kiln.save({"ids": [np.zeros(2, np.int64), np.zeros(2, np.uint16)]}, path)
    with pytest.raises(CheckpointError, match=r"cannot save state\['objects'\]: object arrays would need pickle"):
        kiln.save({"objects": np.array([None, 1], dtype=object)}, path)
    assert kiln.load(path)["weights"].tolist() == [0.0, 1.0, 2.0]
    assert os.listdir(tmp_path) == ["keep.pt"]  # no temporary file left behind
    buffer = io.BytesIO()
    with pytest.raises(CheckpointError, match=r"cannot save state\['hook'\]"):
        kiln.save({"hook": lambda: 0}, buffer)
    assert buffer.getvalue() == b""  # nothing written to a file object either


def test_a_traced_tensor_is_refused_by_name():
    """Saved inside ``kiln.compile``: refused naming its place, so the call runs eagerly (kiln.compile's fallback
    quotes the error), where the save succeeds."""
    buffer = io.BytesIO()

    @kiln.compile
    def save_inside(x):
        buffer.seek(0)
        kiln.save({"inside": {"x": x}}, buffer)
        return x * 2

    with pytest.warns(UserWarning, match=r"cannot save state\['inside'\]\['x'\]: a traced tensor \(tensor<2xf32>\) has no values"):
        assert save_inside(kiln.ones(2)).tolist() == [2.0, 2.0]
    assert kiln.load(io.BytesIO(buffer.getvalue()))["inside"]["x"].tolist() == [1.0, 1.0]


@pytest.mark.parametrize("leaf", [np.float64(0.5), argparse.Namespace(lr=0.1)], ids=["numpy", "namespace"])
def test_weights_only_refuses_what_it_refuses_in_torchs_own_file(leaf, tmp_path):
    """A NumPy scalar (DINO's lr in param_groups) or an ``argparse.Namespace`` (DiT's args) is pickled as torch.save
    pickles it: weights_only=True refuses it in torch and in kiln, as for the file torch.save writes; weights_only=False
    loads it."""
    torch = require_torch()
    for lib in (kiln, torch):
        lib.save({"leaf": leaf, "x": lib.ones(1)}, tmp_path / f"{lib.__name__}.pt")
    for path in (tmp_path / "kiln.pt", tmp_path / "torch.pt"):
        for lib in (kiln, torch):
            with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
                lib.load(path, weights_only=True)
            loaded = lib.load(path, weights_only=False)["leaf"]
            assert loaded == leaf and type(loaded) is type(leaf)


def test_records_written_as_zip64_stay_aligned_and_load(tmp_path, monkeypatch):
    """A record past zipfile's zip64 limit (2 GiB; lowered here to 100 bytes) carries zipfile's zip64 extra in its local
    header, which the padding accounts for: every record still starts at a multiple of 64 and torch maps the file."""
    torch = require_torch()
    monkeypatch.setattr(zipfile, "ZIP64_LIMIT", 100)
    kiln.save(views_tree(kiln), tmp_path / "large.pt")
    monkeypatch.undo()
    assert all(start % 64 == 0 for _, _, start in _records(tmp_path / "large.pt"))
    torch.save(views_tree(torch), tmp_path / "reference.pt")
    assert_same_load(torch.load(tmp_path / "large.pt", mmap=True), torch.load(tmp_path / "reference.pt"), torch)


def test_a_leaf_saved_with_requires_grad_loads_as_one_as_torchs(tmp_path):
    torch = require_torch()
    torch.save({"leaf": torch.ones(3, requires_grad=True), "ids": torch.arange(2)}, tmp_path / "torch.pt")
    loaded = kiln.load(tmp_path / "torch.pt")
    assert loaded["leaf"].requires_grad and loaded["leaf"].is_leaf and not loaded["ids"].requires_grad
    (loaded["leaf"] * 2).sum().backward()
    assert np.asarray(loaded["leaf"].grad).tolist() == [2.0, 2.0, 2.0]
    kiln.save(loaded, tmp_path / "kiln.pt")
    again = torch.load(tmp_path / "kiln.pt")
    assert again["leaf"].requires_grad and type(again["leaf"]) is torch.Tensor


def test_a_path_whose_folder_is_missing_or_a_file_is_named_before_anything_is_written(tmp_path):
    """torch.save's check ('Parent directory ... does not exist.'), with the temporary file's name out of the message."""
    (tmp_path / "a_file").write_text("x")
    cases = [(tmp_path / "missing" / "model.pt", FileNotFoundError, r"Parent directory .*missing does not exist; create it"),
             (tmp_path / "a_file" / "model.pt", NotADirectoryError, r"a_file is a file, not a folder"),
             (tmp_path, IsADirectoryError, r"the path is a folder; give the file's name in it")]
    for path, kind, message in cases:
        with pytest.raises(kind, match=message) as raised:
            kiln.save({"x": kiln.ones(1)}, path)
        assert ".tmp" not in str(raised.value)
    assert sorted(os.listdir(tmp_path)) == ["a_file"]


@pytest.mark.parametrize("seed", range(12))
def test_random_trees_load_in_torch_as_torchs_own_and_in_kiln_as_in_torch(seed, tmp_path):
    torch, ours, theirs = saved_by_each(lambda lib: random_tree(lib, seed), tmp_path)
    for weights_only in (True, False):
        mine, other = (torch.load(path, weights_only=weights_only) for path in (ours, theirs))
        assert_same_load(mine, other, torch)
        assert sharing(torch_tensors(mine)) == sharing(torch_tensors(other))
    assert_kiln_load_is_torchs(kiln.load(ours), torch.load(theirs), torch)


def test_a_buffer_loads_as_a_plain_tensor_from_either_format(tmp_path):
    """``bn.running_var`` is a kiln ``Parameter`` subclass; saved alone it loads as torch's buffer does, a tensor."""
    torch = require_torch()
    torch.save({"var": torch.nn.BatchNorm1d(2).running_var}, tmp_path / "torch.pt")
    for name in ("kiln.pt", "kiln.npz"):
        kiln.save({"var": kiln.nn.BatchNorm1d(2).running_var}, tmp_path / name)
        loaded = kiln.load(tmp_path / name)["var"]
        assert not isinstance(loaded, kiln.nn.Parameter) and loaded.tolist() == [1.0, 1.0], name
    assert type(torch.load(tmp_path / "kiln.pt")["var"]) is type(torch.load(tmp_path / "torch.pt")["var"])


def test_a_parameter_torch_saved_with_attributes_loads_with_them(tmp_path):
    """``p.lr_mult = 0.5`` on a torch Parameter makes torch.save write ``_rebuild_parameter_with_state`` (on torch's
    allow-list); kiln.load refused it."""
    torch = require_torch()
    weight = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    weight.lr_mult, weight.tag = 0.5, "decoder"
    torch.save({"weight": weight}, tmp_path / "torch.pt")
    loaded = kiln.load(tmp_path / "torch.pt")["weight"]
    assert isinstance(loaded, kiln.nn.Parameter) and loaded.requires_grad and loaded.tolist() == [1.0, 2.0]
    assert (loaded.lr_mult, loaded.tag) == (0.5, "decoder")
    assert kiln.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "torch.pt") == \
        torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "torch.pt") == []
