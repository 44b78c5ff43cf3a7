"""``optimizer.state_dict()`` holds the optimizer's live state, as torch's: a state dict kept in memory without a
``copy.deepcopy`` (a "best so far" kept for later) follows the steps taken after it, so loading it back later changes
nothing in torch. kiln counts steps per optimizer; the ``step`` arrays it hands out are rewritten at each step
(``Optimizer.live_step``).
Found by the VQ-VAE/MoCo porting probe (``tests/e2e/test_porting_probes_vqvae_moco.py``)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import kiln
from oracles import torch_twins

X = np.random.default_rng(0).standard_normal((8, 3))


def _step(lib, model, optimizer):
    optimizer.zero_grad()
    model(lib.tensor(X, dtype=lib.float32)).pow(2).mean().backward()
    optimizer.step()


def _kept_then_reloaded(lib, model, optimizer):
    """One step, ``state_dict()`` kept (no copy), two more steps, the kept dict loaded back, one more step."""
    _step(lib, model, optimizer)
    kept = optimizer.state_dict()
    _step(lib, model, optimizer)
    _step(lib, model, optimizer)
    moments = float(np.asarray(kept["state"][0]["exp_avg"]).sum())
    optimizer.load_state_dict(kept)
    _step(lib, model, optimizer)
    return moments, float(np.asarray(optimizer.state_dict()["state"][0]["step"]))


def test_kept_moments_follow_the_steps_as_torchs():
    torch, ours, theirs = torch_twins(lambda lib: lib.nn.Linear(3, 2))
    optimizers = kiln.optim.Adam(ours.parameters(), lr=0.1), torch.optim.Adam(theirs.parameters(), lr=0.1)
    for lib, model, optimizer in zip((kiln, torch), (ours, theirs), optimizers):
        _step(lib, model, optimizer)
    kept = [optimizer.state_dict()["state"][0]["exp_avg"] for optimizer in optimizers]
    for lib, model, optimizer in zip((kiln, torch), (ours, theirs), optimizers):
        _step(lib, model, optimizer)
    np.testing.assert_allclose(np.asarray(kept[0]), kept[1].numpy(), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(kept[0]), np.asarray(optimizers[0].state[ours.weight]["exp_avg"]))


def test_a_kept_state_dict_loaded_back_changes_nothing_as_torchs():
    torch, ours, theirs = torch_twins(lambda lib: lib.nn.Linear(3, 2))
    ran = [_kept_then_reloaded(lib, model, lib.optim.Adam(model.parameters(), lr=0.1))
           for lib, model in ((kiln, ours), (torch, theirs))]
    assert ran[0][1] == ran[1][1] == 4.0
    np.testing.assert_allclose(np.asarray(ours.weight.data), theirs.weight.detach().numpy(), rtol=1e-5, atol=1e-7)


def _steps_read(lib, model, optimizer, compiled):
    """``state[p]['step']`` and a kept ``state_dict()``'s step read after one step, then again after two more (through
    a compiled step where ``compiled``), with a deep copy taken at the first read."""
    def train():
        optimizer.zero_grad()
        model(lib.tensor(X, dtype=lib.float32)).pow(2).mean().backward()
        optimizer.step()

    step = lib.compile(train) if compiled else train
    step()
    read, kept = optimizer.state[model.weight]["step"], optimizer.state_dict()
    copied = copy.deepcopy(kept)
    step()
    step()
    return [float(np.asarray(t)) for t in (read, kept["state"][0]["step"], copied["state"][0]["step"])]


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_read_step_follows_the_steps_and_a_deep_copy_does_not(compiled):
    torch, ours, theirs = torch_twins(lambda lib: lib.nn.Linear(3, 2))
    expected = _steps_read(torch, theirs, torch.optim.Adam(theirs.parameters(), lr=0.1), compiled=False)
    assert expected == [3.0, 3.0, 1.0]
    assert _steps_read(kiln, ours, kiln.optim.Adam(ours.parameters(), lr=0.1), compiled) == expected


def test_an_optimizer_pickled_with_a_plain_step_count_loads_it():
    """``step_count`` became a property (it rewrites the live step arrays): a pickle from before holds it as a plain
    attribute, which loading keeps."""
    model = kiln.nn.Linear(3, 2)
    optimizer = kiln.optim.Adam(model.parameters(), lr=0.1)
    _step(kiln, model, optimizer)
    state = optimizer.__getstate__()
    state["step_count"] = state.pop("_steps_counted")
    restored = kiln.optim.Adam.__new__(kiln.optim.Adam)
    restored.__setstate__(state)
    assert restored.step_count == 1 and "step_count" not in restored.__dict__
