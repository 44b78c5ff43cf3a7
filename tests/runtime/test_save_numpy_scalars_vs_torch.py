"""``kiln.save``/``kiln.load`` of NumPy scalars (DINO writes ``lr_schedule[it]``, an ``np.float64``, into
``param_groups``, so its checkpoint's optimizer state holds them): they load as the NumPy scalars they were, as
``torch.load(..., weights_only=False)`` gives them back; kiln gave 0-d tensors, so a resumed run's
``param_groups[0]['lr']`` was a tensor (``json.dumps`` of DINO's logged stats then fails). Arrays still load as tensors,
as before (kiln's format stores them natively)."""

from __future__ import annotations

import json

import numpy as np

import kiln
from oracles import require_torch


def _checkpoint():
    return {"lr": np.float64(0.05), "step": np.int64(3), "flag": np.bool_(True), "half": np.float16(0.5),
            "nested": [np.float32(1.5), {"wd": np.float64(0.04)}]}


def test_numpy_scalars_load_as_numpy_scalars_as_torch(tmp_path):
    torch = require_torch()
    kiln.save(_checkpoint(), tmp_path / "kiln.pth")
    torch.save(_checkpoint(), tmp_path / "torch.pth")
    ours = kiln.load(tmp_path / "kiln.pth", map_location="cpu", weights_only=False)
    theirs = torch.load(tmp_path / "torch.pth", map_location="cpu", weights_only=False)
    assert repr(ours) == repr(theirs)
    assert [type(v) for v in ours["nested"]] == [type(v) for v in theirs["nested"]]


def test_a_resumed_optimizers_lr_is_the_saved_number(tmp_path):
    weight = kiln.nn.Parameter(kiln.ones(2))
    optimizer = kiln.optim.AdamW([weight], lr=0.1)
    optimizer.param_groups[0]["lr"] = np.linspace(0.0, 0.05, 3)[1]
    kiln.save({"optimizer": optimizer.state_dict()}, tmp_path / "checkpoint.pth")
    resumed = kiln.optim.AdamW([weight], lr=0.1)
    resumed.load_state_dict(kiln.load(tmp_path / "checkpoint.pth", weights_only=False)["optimizer"])
    lr = resumed.param_groups[0]["lr"]
    assert type(lr) is np.float64 and lr == 0.025 and json.dumps({"lr": lr}) == '{"lr": 0.025}'
