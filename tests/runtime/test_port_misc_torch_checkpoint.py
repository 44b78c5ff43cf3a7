"""``kiln.load`` reads what ``torch.save`` wrote (vision_transformer's ``best-weights.pt``) without torch's unpickler:
a state_dict trained in PyTorch loads into the same kiln model and gives torch's outputs in float64; every storage
dtype kiln has, non-contiguous and storage-sharing tensors, nested dicts of numbers; a pickled model or a damaged file
is refused by name, and nothing in the file runs."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import CheckpointError
from oracles import require


def _model(library):
    return library.nn.Sequential(library.nn.Linear(4, 6), library.nn.LayerNorm(6), library.nn.GELU(), library.nn.Linear(6, 3)).double()


def test_a_torch_state_dict_loads_into_the_kiln_model_with_torchs_outputs(tmp_path):
    torch = require("torch")
    twin = _model(torch)
    path = tmp_path / "best-weights.pt"
    torch.save(twin.state_dict(), path)
    model = _model(kiln)
    model.load_state_dict(kiln.load(str(path)))
    x = np.random.default_rng(0).normal(size=(5, 4))
    with torch.no_grad():
        expected = twin(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-13, atol=1e-15)


def test_tensors_of_every_dtype_layout_and_nesting_come_back_as_torchs(tmp_path):
    torch = require("torch")
    base = torch.arange(24, dtype=torch.float64).reshape(4, 6)
    saved = {
        "model": {"transposed": base.t(), "slice": base[1:3, ::2], "row": base[2]},  # three views of one storage
        "dtypes": [torch.tensor([1.5, -2.0], dtype=dtype) for dtype in (torch.float32, torch.float16)]
        + [torch.tensor([3, -4], dtype=dtype) for dtype in (torch.int64, torch.int32, torch.int16, torch.int8)]
        + [torch.tensor([7, 200], dtype=torch.uint8), torch.tensor([True, False]), torch.tensor(2.5), torch.zeros(0, 3)],
        "parameter": torch.nn.Parameter(torch.ones(2, 2)),
        "epoch": 3, "lr": 0.1, "name": "vit", "betas": (0.9, 0.999), "none": None,
    }
    path = tmp_path / "checkpoint.pt"
    torch.save(saved, path)
    with open(path, "rb") as file:
        ours = kiln.load(file)
    for key, tensor in [*saved["model"].items(), *enumerate(saved["dtypes"]), ("parameter", saved["parameter"])]:
        array = ours["model"][key] if key in saved["model"] else ours["parameter"] if key == "parameter" else ours["dtypes"][key]
        expected = tensor.detach().numpy()
        kind = kiln.nn.Parameter if key == "parameter" else kiln.Tensor  # as torch.load gives them
        assert type(array) is kind and np.asarray(array).dtype == expected.dtype and array.shape == expected.shape, key
        np.testing.assert_array_equal(array, expected)
    assert (ours["epoch"], ours["lr"], ours["name"], ours["betas"], ours["none"]) == (3, 0.1, "vit", (0.9, 0.999), None)


def test_a_pickled_model_is_refused_by_name_and_not_run(tmp_path):
    torch = require("torch")
    path = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match=r"holds a pickled torch.nn.modules.linear.Linear, which weights_only=True refuses.*state_dict"):
        kiln.load(str(path))


def test_a_damaged_torch_file_is_a_checkpoint_error(tmp_path):
    torch = require("torch")
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.ones(300)}, path)
    content = bytearray(path.read_bytes())
    start = content.index(b"data.pkl") + 40  # inside the pickle's bytes (zip stores them uncompressed)
    content[start : start + 8] = b"\xff" * 8
    path.write_bytes(bytes(content))
    with pytest.raises(CheckpointError, match="weights.pt is not a readable"):
        kiln.load(str(path))


def test_kiln_checkpoints_still_load(tmp_path):
    model = nn.Linear(3, 2)
    kiln.save(model.state_dict(), str(tmp_path / "ours.npz"))
    np.testing.assert_array_equal(kiln.load(str(tmp_path / "ours.npz"))["weight"], model.weight.data)
