"""``BatchNorm*d(momentum=None)``: running statistics as the cumulative average of every batch seen, PyTorch's."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from oracles import require


def _models(torch):
    kiln.manual_seed(0)
    ours = kiln.nn.Sequential(kiln.nn.Linear(3, 4), kiln.nn.BatchNorm1d(4, momentum=None), kiln.nn.ReLU(), kiln.nn.Linear(4, 2))
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4, momentum=None), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    ours, theirs = ours.double(), theirs.double()
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    return ours, theirs


def _batches():
    rng = np.random.default_rng(1)
    return [(rng.standard_normal((6, 3)) * (k + 1), rng.integers(0, 2, 6)) for k in range(4)]


def _same_state(ours, theirs):
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(np.array(ours.state_dict()[name]), value.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("compiled", [False, True])
def test_cumulative_running_statistics_train_as_torchs(compiled):
    torch = require("torch")
    ours, theirs = _models(torch)
    optimizer, reference = kiln.optim.SGD(ours.parameters(), lr=0.1), torch.optim.SGD(theirs.parameters(), lr=0.1)
    step = kiln.compile_train_step(ours, F.cross_entropy, optimizer) if compiled else None
    for x, y in _batches():
        if compiled:
            step(x, y)
        else:
            optimizer.zero_grad()
            F.cross_entropy(ours(kiln.tensor(x)), kiln.tensor(y)).backward()
            optimizer.step()
        reference.zero_grad()
        torch.nn.functional.cross_entropy(theirs(torch.from_numpy(x)), torch.from_numpy(y)).backward()
        reference.step()
    assert int(np.array(ours[1].num_batches_tracked)) == 4
    _same_state(ours, theirs)
    ours.eval(), theirs.eval()
    x = _batches()[0][0]
    np.testing.assert_allclose(np.array(ours(kiln.tensor(x)).detach()), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-10)


def test_the_layer_reports_its_momentum_as_torchs():
    torch = require("torch")
    assert repr(kiln.nn.BatchNorm2d(3, momentum=None)) == repr(torch.nn.BatchNorm2d(3, momentum=None))
