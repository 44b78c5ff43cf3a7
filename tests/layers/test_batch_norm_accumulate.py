"""BatchNorm under gradient accumulation: each micro-batch's forward sees the running statistics the previous one
left (PyTorch runs k forwards in sequence), so after steps with ``accumulate=k`` the running mean, variance and
``num_batches_tracked`` are PyTorch's after k forwards each, and so are the parameters."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from oracles import require_torch


def _models(torch):
    kiln.manual_seed(0)
    ours = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3, padding=1), torch.nn.BatchNorm2d(3), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(3 * 4 * 4, 5))
    theirs.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in ours.state_dict().items()})
    return ours, theirs


@pytest.mark.parametrize("accumulate", [1, 3])
def test_running_statistics_follow_torchs_sequential_micro_batches(accumulate):
    torch = require_torch()
    ours, theirs = _models(torch)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6 * accumulate, 2, 4, 4)).astype(np.float32) * 2 + 1
    y = rng.integers(0, 5, 6 * accumulate)
    step = kiln.compile_train_step(ours, F.cross_entropy, kiln.optim.SGD(ours.parameters(), lr=0.1), accumulate=accumulate)
    optimizer = torch.optim.SGD(theirs.parameters(), lr=0.1)
    for _ in range(2):
        step(x, y)
        optimizer.zero_grad()
        for xs, ys in zip(np.split(x, accumulate), np.split(y, accumulate)):
            loss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(xs)), torch.from_numpy(ys))
            (loss / accumulate).backward()
        optimizer.step()
    want = theirs.state_dict()
    assert int(np.asarray(ours.state_dict()["1.num_batches_tracked"])) == 2 * accumulate
    for name, value in ours.state_dict().items():
        np.testing.assert_allclose(np.asarray(value), want[name].numpy(), rtol=2e-5, atol=2e-6, err_msg=name)
