"""``kiln.autograd.detect_anomaly``/``set_detect_anomaly``: an eager backward stops at the first op whose gradient holds
NaN and names the user's line, where torch's stops too (frontend/anomaly_mode.py)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

pytestmark = pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
VALUES = np.array([1.0, -1.0, 0.0, 4.0])


def _loss(lib, x):
    return (x.sqrt() * 0 + x).sum()  # sqrt's gradient at 0 (inf) times 0, and at -1 (NaN): NaN


def test_a_nan_gradient_stops_the_backward_at_its_line_as_torch_stops():
    torch = require_torch()
    with torch.autograd.detect_anomaly(), pytest.raises(RuntimeError, match="returned nan values in its 0th output"):
        _loss(torch, torch.tensor(VALUES, requires_grad=True)).backward()
    x = kiln.tensor(VALUES, requires_grad=True)
    with kiln.autograd.detect_anomaly():
        loss = _loss(kiln, x)
        with pytest.raises(RuntimeError, match=r"test_anomaly_mode\.py:\d+ in _loss.*returned nan values in its 0th output"):
            loss.backward()
    assert x.grad is None  # nothing accumulated


def test_without_anomaly_mode_the_nan_flows_as_torch():
    torch = require_torch()
    x, t = kiln.tensor(VALUES, requires_grad=True), torch.tensor(VALUES, requires_grad=True)
    _loss(kiln, x).backward()
    _loss(torch, t).backward()
    np.testing.assert_array_equal(np.isnan(np.array(x.grad)), np.isnan(t.grad.numpy()))


def test_finite_gradients_are_unchanged_in_anomaly_mode():
    torch = require_torch()
    kiln.manual_seed(0)
    model = kiln.nn.Sequential(kiln.nn.Linear(3, 4), kiln.nn.Tanh(), kiln.nn.Linear(4, 1)).double()
    twin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    twin.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((5, 3))
    for _ in range(3):  # past the second sight, when a backward is normally compiled
        with kiln.autograd.detect_anomaly():
            model(kiln.tensor(x)).square().sum().backward()
    for _ in range(3):
        twin(torch.tensor(x)).square().sum().backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.grad), q.grad.numpy(), rtol=1e-12)


def test_switches_and_queries_as_torch():
    assert not kiln.autograd.is_anomaly_enabled()
    with kiln.autograd.set_detect_anomaly(True):
        assert kiln.autograd.is_anomaly_enabled() and kiln.autograd.is_anomaly_check_nan_enabled()
    assert not kiln.autograd.is_anomaly_enabled()
    with kiln.autograd.detect_anomaly(check_nan=False):
        assert kiln.autograd.is_anomaly_enabled() and not kiln.autograd.is_anomaly_check_nan_enabled()
        _loss(kiln, kiln.tensor(VALUES, requires_grad=True)).backward()  # no check: the NaN flows
    kiln.autograd.set_detect_anomaly(True)
    try:
        assert kiln.autograd.is_anomaly_enabled()
    finally:
        kiln.autograd.set_detect_anomaly(False)

    @kiln.autograd.detect_anomaly()
    def step():
        _loss(kiln, kiln.tensor(VALUES, requires_grad=True)).backward()

    with pytest.raises(RuntimeError, match="returned nan values"):
        step()
    assert not kiln.autograd.is_anomaly_enabled()
