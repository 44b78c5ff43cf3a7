"""Checkpoint trees built once for kiln and once for torch (``make(lib)``), and comparisons of what each library
loads, shared by the tests of PyTorch's zip and legacy formats (``test_checkpoint_torch_format*.py``)."""

from __future__ import annotations

import collections
import math

import numpy as np

import kiln
from kiln.frontend.module import GradLeaf
from oracles import libraries, require_torch

RNG = np.random.default_rng(0)
WEIGHTS = {"embed.weight": RNG.standard_normal((5, 3)), "fc.weight": RNG.standard_normal((4, 3)),
           "fc.bias": RNG.standard_normal(4), "norm.weight": RNG.standard_normal(4), "norm.bias": RNG.standard_normal(4)}


def tied_model(lib):
    """Embedding, Linear and BatchNorm1d with fixed weights, the head tied to the embedding (GPT's weight tying)."""
    nn = libraries(lib.__name__)[1]

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.fc, self.norm = nn.Embedding(5, 3), nn.Linear(3, 4), nn.BatchNorm1d(4)
            self.head = nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight

    model = Tied()
    model.load_state_dict({name: lib.tensor(value.astype(np.float32)) for name, value in WEIGHTS.items()}
                          | {"head.weight": lib.tensor(WEIGHTS["embed.weight"].astype(np.float32)),
                             "norm.running_mean": lib.zeros(4), "norm.running_var": lib.ones(4),
                             "norm.num_batches_tracked": lib.tensor(3)})
    return model


def state_dict_tree(lib):
    return {"model": tied_model(lib).state_dict(), "epoch": 3}


def views_tree(lib):
    base = lib.arange(24.0).reshape(4, 6)
    flat = base.view(-1)
    return {"base": base, "row": base[1], "columns": base[:, 1:3], "t": base.t(), "strided": base[::2, 1::2],
            "flat": flat, "tail": flat[5:], "same": [base, base], "expanded": base[0].expand(3, 6),
            "unsqueezed": base.unsqueeze(1), "narrow": base.narrow(1, 2, 3), "column": base[:, 2:3],
            "other": lib.arange(3.0)[1:]}


def dtypes_tree(lib):
    values = np.array([0.0, 1.5, -2.25, 3.0])
    tree = {name: lib.tensor(values, dtype=getattr(lib, name)) for name in
            ("float16", "bfloat16", "float32", "float64", "uint8", "int8", "int16", "int32", "int64", "bool")}
    tree |= {f"{name}_0d": lib.tensor(2.5 if name.startswith("float") else 7, dtype=getattr(lib, name))
             for name in ("float16", "float32", "float64", "int64", "uint8")}
    tree |= {"bool_0d": lib.tensor(True), "empty": lib.zeros(0, 3), "empty_int": lib.zeros(2, 0, dtype=lib.int64),
             "complex64": lib.tensor(np.array([1 + 2j, -0.5j], dtype=np.complex64)),
             "complex128": lib.tensor(np.array([3 - 1j], dtype=np.complex128)),
             "dtype": lib.float16, "size": lib.Size([2, 3]), "device": lib.device("cpu")}
    return tree


def parameters_tree(lib):
    """Parameters (trained, frozen, complex), a leaf that requires grad, a module's buffers (a plain tensor in torch,
    a ``Parameter`` subclass in kiln) and ``p.data`` arithmetic (kiln: an array of its own)."""
    nn = libraries(lib.__name__)[1]
    weight = nn.Parameter(lib.tensor([1.0, -2.0]))
    norm = nn.BatchNorm1d(2)
    return {"weight": weight, "frozen": nn.Parameter(lib.ones(2), requires_grad=False), "leaf": lib.ones(3, requires_grad=True),
            "plain": lib.zeros(2), "ema": weight.data * 0.5, "data": weight.data,
            "complex": nn.Parameter(lib.tensor(np.array([1 + 2j, -3j], dtype=np.complex64))),
            "buffers": [norm.running_var, norm.num_batches_tracked]}


def optimizer_tree(lib):
    """An optimizer state_dict as torch.optim writes one (int keys, 0-d 'step' tensors) and a trainer's loose values."""
    state = {index: {"step": lib.tensor(2.0), "exp_avg": lib.tensor(WEIGHTS["fc.bias"][index:index + 3].astype(np.float32)),
                     "exp_avg_sq": lib.tensor(np.full(3, 0.25, dtype=np.float32))} for index in range(2)}
    groups = [{"lr": 0.001, "betas": (0.9, 0.999), "eps": 1e-08, "weight_decay": 0.0, "amsgrad": False,
               "foreach": None, "maximize": False, "params": [0, 1]}]
    return {"optimizer": {"state": state, "param_groups": groups}, "epoch": 12, "best_acc": 0.8125, "arch": "resnet",
            "history": [[1, 2.5], None, (True, "x")], "nested": {"a": {"b": {"c": [lib.ones(1)]}}}, "big": 2**70,
            "negative": -5, "inf": math.inf, "tiny": 5e-324, "unicode": "héllo ✓", "bytes": b"\x00kiln", "set": {1, 2},
            "complex": 1 + 2j, "empty": ({}, [], ()), 7: "int key", "counter": collections.Counter("aab"),
            "ordered": collections.OrderedDict(b=1, a=2)}


TREES = [state_dict_tree, views_tree, dtypes_tree, parameters_tree, optimizer_tree]


def saved_by_each(make, tmp_path, **options):
    """``make(kiln)`` saved by kiln and ``make(torch)`` by torch (each given torch.save's ``options``), under the same
    file name in two folders."""
    torch = require_torch()
    for lib in (kiln, torch):
        (tmp_path / lib.__name__).mkdir(exist_ok=True)
        lib.save(make(lib), tmp_path / lib.__name__ / "checkpoint.pt", **options)
    return torch, tmp_path / "kiln" / "checkpoint.pt", tmp_path / "torch" / "checkpoint.pt"


def torch_tensors(node, found=None):
    found = [] if found is None else found
    if isinstance(node, dict):
        for value in node.values():
            torch_tensors(value, found)
    elif isinstance(node, (list, tuple)):
        for value in node:
            torch_tensors(value, found)
    elif hasattr(node, "untyped_storage"):
        found.append(node)
    return found


def sharing(tensors):
    """Which tensors share a storage: each tensor's index of the first one holding its storage (empty ones alone)."""
    first = {}
    return [first.setdefault(t.untyped_storage().data_ptr(), i) if t.numel() else i for i, t in enumerate(tensors)]


def assert_same_load(ours, theirs, torch, where="tree"):
    """Both loaded by torch: the same types, values and tensor layouts (strides, offsets, storage sizes; an empty
    tensor's strides are whatever made it, torch.tensor of an empty array gives (0,), and are not compared)."""
    assert type(ours) is type(theirs), (where, type(ours), type(theirs))
    if isinstance(theirs, torch.Tensor):
        layout = lambda t: (t.dtype, t.shape, t.stride() if t.numel() else None, t.storage_offset())  # noqa: E731
        assert layout(ours) == layout(theirs), (where, layout(ours), layout(theirs))
        assert ours.untyped_storage().nbytes() == theirs.untyped_storage().nbytes(), where
        assert ours.requires_grad == theirs.requires_grad and torch.equal(ours.detach(), theirs.detach()), where
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs), where
        for key in theirs:
            assert_same_load(ours[key], theirs[key], torch, f"{where}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), where
        for index, (mine, other) in enumerate(zip(ours, theirs)):
            assert_same_load(mine, other, torch, f"{where}[{index}]")
    else:
        assert ours == theirs, where


def kiln_tensors(node, found=None):
    found = [] if found is None else found
    if isinstance(node, dict):
        for value in node.values():
            kiln_tensors(value, found)
    elif isinstance(node, (list, tuple)):
        for value in node:
            kiln_tensors(value, found)
    elif isinstance(node, kiln.Tensor):
        found.append(node)
    return found


def assert_kiln_load_is_torchs(mine, other, torch):
    """``mine`` (kiln.load's) holds ``other``'s (torch.load's) tensors in order: Parameter or not, requires_grad,
    dtype, shape, values, and which of them share a storage."""
    pairs = list(zip(kiln_tensors(mine), torch_tensors(other)))
    assert len(pairs) == len(torch_tensors(other))
    for mine_tensor, other_tensor in pairs:
        parameter = isinstance(mine_tensor, kiln.nn.Parameter) and not isinstance(mine_tensor, GradLeaf)  # kiln's leaf kind
        assert parameter == isinstance(other_tensor, torch.nn.Parameter)
        assert mine_tensor.requires_grad == other_tensor.requires_grad
        if isinstance(mine_tensor, kiln.nn.Parameter) and mine_tensor.is_complex():  # kiln keeps its real pairs
            np.testing.assert_array_equal(np.asarray(mine_tensor.complex_view()), other_tensor.detach().numpy())
            continue
        assert str(mine_tensor.dtype).removeprefix("kiln.") == str(other_tensor.dtype).removeprefix("torch.")
        assert tuple(mine_tensor.shape) == tuple(other_tensor.shape)
        bits = other_tensor.dtype == torch.bfloat16  # NumPy has no bfloat16 of torch's: compare the bits
        np.testing.assert_array_equal(np.asarray(mine_tensor.detach()).view(np.int16) if bits else np.asarray(mine_tensor.detach()),
                                      other_tensor.detach().view(torch.int16).numpy() if bits else other_tensor.detach().numpy())
    owners = [memory_owner(np.asarray(mine_tensor)) for mine_tensor, _ in pairs]
    shares = [[i != j and a is b for j, b in enumerate(owners)] for i, a in enumerate(owners)]
    same = lambda a, b: a is b or a.numel() > 0 and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()  # noqa: E731
    assert shares == [[i != j and same(a, b) for j, (_, b) in enumerate(pairs)] for i, (_, a) in enumerate(pairs)]




def memory_owner(array):
    """The array whose memory ``array`` views: its bases followed to the end (through as_strided's window objects)."""
    while getattr(array, "base", None) is not None:
        array = array.base
    return array


DTYPES = ["float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"]


def random_tree(lib, seed):
    """A random nest of dicts, lists and tuples around numbers, strings and tensors of every dtype and shape (empty
    and 0-d ones too), a third of them views of an earlier tensor (slices, steps, transposes, flattening), so storages
    are shared: the same ``seed`` builds the same tree in kiln and in torch."""
    rng = np.random.default_rng(seed)
    bases = []

    def tensor():
        if bases and rng.random() < 0.35:
            return _view(bases[rng.integers(len(bases))], rng)
        shape = tuple(int(n) for n in rng.integers(0, 4, rng.integers(0, 4)))
        dtype = DTYPES[rng.integers(len(DTYPES))]
        values = rng.integers(-3, 4, shape)
        base = lib.tensor(values if dtype != "bool" else values > 0, dtype=getattr(lib, dtype))
        bases.append(base)
        return base

    def node(depth):
        kind = rng.random()
        if depth >= 3 or kind < 0.45:
            return tensor() if rng.random() < 0.6 else [1, -2.5, "s", True, None, 2**40][rng.integers(6)]
        items = [node(depth + 1) for _ in range(rng.integers(0, 4))]
        if kind < 0.65:
            return {f"k{index}": item for index, item in enumerate(items)}
        return items if kind < 0.85 else tuple(items)

    return {"root": node(0), "tensors": [tensor() for _ in range(3)]}


def _view(base, rng):
    """One of the views torch and kiln both take on ``base``."""
    if base.dim() == 0 or base.numel() == 0:
        return base
    choice = rng.integers(5)
    if choice == 0:
        return base[1:]
    if choice == 1:
        return base.view(-1)[::2]
    if choice == 2 and base.dim() >= 2:
        return base.transpose(0, 1)
    if choice == 3:
        return base.unsqueeze(0)
    return base[0]
