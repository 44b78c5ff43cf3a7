"""Per-parameter step counts in the optimizer's state_dict, against PyTorch 2.13 in float64: a head first trained
late (no ``.grad`` for its first steps) has its own count, PyTorch's ``state[p]["step"]``, which Adam's bias correction
follows. kiln keeps it (``state_dict()["state"][i]["step"]`` as PyTorch; ``skipped_steps`` in ``kiln_state_dict``), so a round trip through ``kiln.save``/``kiln.load`` gives
the same next updates as no round trip, and it crosses to PyTorch and back (``frontend/optim_base.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import CheckpointError
from oracles import torch_twins

pytestmark = pytest.mark.usefixtures("float64_default")

EARLY_STEPS, LATE_FROM, TOTAL = 4, 3, 7  # the late head gets gradients from step index 3: 3 steps without
LATE_KEYS = {"2": 3, "3": 3}  # late.weight, late.bias by position: each missed 3 steps


def _two_heads(lib: Any) -> Any:
    class TwoHeads(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.late, self.early = lib.nn.Linear(3, 4), lib.nn.Linear(4, 2), lib.nn.Linear(4, 2)

        def forward(self, x, use_late: bool):
            hidden = lib.tanh(self.body(x))
            return self.early(hidden) + self.late(hidden) if use_late else self.early(hidden)

    return TwoHeads().double()


def _train(lib: Any, model: Any, optimizer: Any, steps: range) -> None:
    for index in steps:
        rng = np.random.default_rng(index)
        x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
        optimizer.zero_grad()
        ((model(lib.tensor(x), index >= LATE_FROM) - lib.tensor(y)) ** 2).mean().backward()
        optimizer.step()


def _fresh(model_state: dict[str, Any]) -> tuple[Any, Any]:
    model = _two_heads(kiln)
    model.load_state_dict({name: np.array(value) for name, value in model_state.items()})
    return model, kiln.optim.Adam(model.parameters(), lr=0.05)


def _parameters(model: Any) -> list[np.ndarray]:
    return [np.array(p.data) for p in model.parameters()]


def _assert_same_as_torch(model: Any, twin: Any) -> None:
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_a_late_heads_own_step_count_is_torchs():
    torch, model, twin = torch_twins(_two_heads)
    ours, theirs = kiln.optim.Adam(model.parameters(), lr=0.05), torch.optim.Adam(twin.parameters(), lr=0.05)
    _train(kiln, model, ours, range(TOTAL))
    _train(torch, twin, theirs, range(TOTAL))
    _assert_same_as_torch(model, twin)
    own = {key: int(TOTAL) - ours.kiln_state_dict()["skipped_steps"].get(key, 0) for key in map(str, range(6))}
    assert own == {str(i): int(theirs.state_dict()["state"][i]["step"]) for i in range(6)}


def test_the_round_trip_through_kiln_save_keeps_the_step_counts_and_the_next_updates(tmp_path):
    torch, model, _ = torch_twins(_two_heads)
    optimizer = kiln.optim.Adam(model.parameters(), lr=0.05)
    _train(kiln, model, optimizer, range(EARLY_STEPS))
    kiln.save(tmp_path / "run.npz", {"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    _train(kiln, model, optimizer, range(EARLY_STEPS, TOTAL))

    saved = kiln.load(tmp_path / "run.npz")
    assert {key: int(entry["step"]) for key, entry in saved["optimizer"]["state"].items()} == {0: 4, 1: 4, 2: 1, 3: 1, 4: 4, 5: 4}
    resumed, resumed_optimizer = _fresh(saved["model"])
    resumed_optimizer.load_state_dict(saved["optimizer"])
    _train(kiln, resumed, resumed_optimizer, range(EARLY_STEPS, TOTAL))
    for ours, uninterrupted in zip(_parameters(resumed), _parameters(model)):
        np.testing.assert_array_equal(ours, uninterrupted)


def test_a_state_saved_without_step_counts_loads_as_one_where_no_parameter_missed_a_step(tmp_path):
    """The layout before ``skipped_steps`` still loads; without the counts the late head's bias correction differs."""
    torch, model, _ = torch_twins(_two_heads)
    optimizer = kiln.optim.Adam(model.parameters(), lr=0.05)
    _train(kiln, model, optimizer, range(EARLY_STEPS))
    old_layout = {key: value for key, value in optimizer.kiln_state_dict().items() if key != "skipped_steps"}
    resumed, resumed_optimizer = _fresh(model.state_dict())
    resumed_optimizer.load_state_dict(old_layout)
    assert resumed_optimizer.kiln_state_dict()["skipped_steps"] == {}
    _train(kiln, model, optimizer, range(EARLY_STEPS, EARLY_STEPS + 1))
    _train(kiln, resumed, resumed_optimizer, range(EARLY_STEPS, EARLY_STEPS + 1))
    ours, uninterrupted = _parameters(resumed), _parameters(model)
    np.testing.assert_array_equal(ours[0], uninterrupted[0])  # the body never missed a step
    assert not np.allclose(ours[2], uninterrupted[2], rtol=1e-6, atol=0)  # the late head: its step 5 instead of 2


def test_kilns_step_counts_resume_in_torch():
    torch, model, twin = torch_twins(_two_heads)
    optimizer = kiln.optim.Adam(model.parameters(), lr=0.05)
    _train(kiln, model, optimizer, range(EARLY_STEPS))
    twin.load_state_dict({name: torch.tensor(np.array(value)) for name, value in model.state_dict().items()})
    theirs = torch.optim.Adam(twin.parameters(), lr=0.05)
    saved = optimizer.torch_state_dict()
    theirs.load_state_dict({"state": {k: {n: torch.tensor(v) for n, v in entry.items()} for k, entry in saved["state"].items()},
                            "param_groups": saved["param_groups"]})
    assert [int(theirs.state[p]["step"]) for p in twin.parameters()] == [4, 4, 1, 1, 4, 4]
    _train(kiln, model, optimizer, range(EARLY_STEPS, TOTAL))
    _train(torch, twin, theirs, range(EARLY_STEPS, TOTAL))
    _assert_same_as_torch(model, twin)


def test_torchs_step_counts_resume_in_kiln_and_are_saved_again():
    torch, model, twin = torch_twins(_two_heads)
    theirs = torch.optim.Adam(twin.parameters(), lr=0.05)
    _train(torch, twin, theirs, range(EARLY_STEPS))
    saved = theirs.state_dict()
    resumed, optimizer = _fresh({name: value.numpy() for name, value in twin.state_dict().items()})
    optimizer.load_state_dict({"state": {k: {n: v.numpy() for n, v in entry.items()} for k, entry in saved["state"].items()},
                               "param_groups": saved["param_groups"]})
    assert optimizer.kiln_state_dict()["skipped_steps"] == LATE_KEYS
    _train(kiln, resumed, optimizer, range(EARLY_STEPS, TOTAL))
    _train(torch, twin, theirs, range(EARLY_STEPS, TOTAL))
    _assert_same_as_torch(resumed, twin)


def test_step_counts_are_keyed_by_the_names_a_train_step_checkpoint_uses():
    torch, model, _ = torch_twins(_two_heads)
    optimizer = kiln.optim.Adam(model.parameters(), lr=0.05)
    _train(kiln, model, optimizer, range(EARLY_STEPS))
    names = {id(p): name for name, p in model.named_parameters()}
    saved = optimizer.kiln_state_dict(names)
    assert saved["skipped_steps"] == {"late.weight": 3, "late.bias": 3}
    resumed, resumed_optimizer = _fresh(model.state_dict())
    resumed_optimizer.load_state_dict(saved, {id(p): name for name, p in resumed.named_parameters()})
    assert resumed_optimizer.kiln_state_dict()["skipped_steps"] == LATE_KEYS


@pytest.mark.parametrize(("skipped", "message"), [
    ({"9": 1}, r"counts skipped steps of \['9'\], which this optimizer does not hold"),
    ({"2": 5}, r"says \['2'\] skipped more steps than the 4 it counts"),
])
def test_damaged_step_counts_are_refused_and_nothing_is_written(skipped: dict[str, int], message: str):
    torch, model, _ = torch_twins(_two_heads)
    optimizer = kiln.optim.Adam(model.parameters(), lr=0.05)
    _train(kiln, model, optimizer, range(EARLY_STEPS))
    saved = {**optimizer.kiln_state_dict(), "skipped_steps": skipped}
    resumed, resumed_optimizer = _fresh(model.state_dict())
    with pytest.raises(CheckpointError, match=message):
        resumed_optimizer.load_state_dict(saved)
    assert resumed_optimizer.step_count == 0 and not resumed_optimizer.state
