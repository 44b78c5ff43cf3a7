"""``optimizer.state_dict()`` in torch 2.13's layout: ``{"state": {0: {...}, 1: {...}}, "param_groups": [{every option,
"params": [0, 1]}]}``, parameters keyed by int position, each optimizer's own state names (Adam's ``step`` a 0-d
float32, ``exp_avg``, ``exp_avg_sq``; SGD's ``momentum_buffer`` and no ``step``...), every option torch lists in a
group. A torch-saved state loads into kiln and the run continues as torch's; kiln's loads into torch and the run
continues as kiln's; kiln's through ``kiln.save``/``kiln.load`` resumes exactly (``frontend/optim_base.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import kiln
from oracles import require_torch

OPTIMIZERS = {
    "SGD": ("SGD", {"momentum": 0.9}), "SGD nesterov": ("SGD", {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    "Adam": ("Adam", {}), "Adam amsgrad": ("Adam", {"amsgrad": True}), "AdamW": ("AdamW", {"weight_decay": 0.1}),
    "RMSprop": ("RMSprop", {}), "RMSprop centered momentum": ("RMSprop", {"centered": True, "momentum": 0.5}),
    "Adagrad": ("Adagrad", {"lr_decay": 0.01}), "NAdam": ("NAdam", {}), "Adamax": ("Adamax", {}), "RAdam": ("RAdam", {}),
    "Adadelta": ("Adadelta", {}), "SGD plain": ("SGD", {}), "Rprop": ("Rprop", {}), "ASGD": ("ASGD", {"t0": 2}),
    "Adafactor": ("Adafactor", {}),
}
BATCHES = [(np.random.default_rng(i).standard_normal((4, 3)), np.random.default_rng(i + 50).standard_normal((4, 2))) for i in range(6)]


def _setup(lib: Any, name: str) -> tuple[Any, Any]:
    model = lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Linear(4, 2))
    with lib.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(lib.tensor(np.sin(np.arange(p.numel()) * 0.9 + i).reshape(tuple(p.shape))))
    algorithm, options = OPTIMIZERS[name]
    return model, getattr(lib.optim, algorithm)(model.parameters(), lr=0.05, **options)


def _train(lib: Any, model: Any, optimizer: Any, batches: list) -> list[float]:
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        dtype = lib.get_default_dtype()
        loss = ((model(lib.tensor(x, dtype=dtype)) - lib.tensor(y, dtype=dtype)) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def _parameters(model: Any) -> list[np.ndarray]:
    return [np.array(p.detach().numpy()) for p in model.parameters()]


def _as_torch(torch: Any, state: dict[str, Any]) -> dict[str, Any]:
    """kiln's ``state_dict()`` with each array a torch tensor (a copy), what ``torch_optimizer.load_state_dict`` takes."""
    tensors = {key: {name: torch.tensor(np.array(value)) for name, value in entry.items()} for key, entry in state["state"].items()}
    return {"state": tensors, "param_groups": state["param_groups"]}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_the_layout_names_dtypes_shapes_and_values_are_torchs(name):
    torch = require_torch()
    runs = {}
    for lib in (kiln, torch):
        model, optimizer = _setup(lib, name)
        _train(lib, model, optimizer, BATCHES[:3])
        runs[lib.__name__] = optimizer.state_dict()
    ours, theirs = runs["kiln"], runs["torch"]
    assert list(ours) == list(theirs) == ["state", "param_groups"]
    assert list(ours["state"]) == list(theirs["state"]) == ([] if name == "SGD plain" else [0, 1, 2, 3])
    assert ours["param_groups"] == theirs["param_groups"]
    assert [list(group) for group in ours["param_groups"]] == [list(group) for group in theirs["param_groups"]]
    for key, entry in theirs["state"].items():
        assert sorted(ours["state"][key]) == sorted(entry), key
        for state_name, value in entry.items():
            mine = np.asarray(ours["state"][key][state_name])
            assert (mine.dtype.name, mine.shape) == (str(value.dtype).removeprefix("torch."), tuple(value.shape)), (key, state_name)
            np.testing.assert_allclose(mine, value.numpy(), rtol=2e-5, atol=1e-6, err_msg=f"{key}.{state_name}")


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_torch_saved_state_resumes_in_kiln_as_in_torch(name, tmp_path, float64_default):
    torch = float64_default
    model, optimizer = _setup(torch, name)
    _train(torch, model, optimizer, BATCHES[:3])
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / "torch.pt")
    expected_losses, expected = _train(torch, model, optimizer, BATCHES[3:]), _parameters(model)

    ours, our_optimizer = _setup(kiln, name)
    checkpoint = kiln.load(tmp_path / "torch.pt")
    ours.load_state_dict(checkpoint["model"])
    our_optimizer.load_state_dict(checkpoint["optimizer"])
    np.testing.assert_allclose(_train(kiln, ours, our_optimizer, BATCHES[3:]), expected_losses, rtol=1e-12)
    for mine, theirs in zip(_parameters(ours), expected):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_kilns_state_loads_into_torch_and_continues_as_kiln(name, float64_default):
    torch = float64_default
    ours, our_optimizer = _setup(kiln, name)
    _train(kiln, ours, our_optimizer, BATCHES[:3])
    twin, their_optimizer = _setup(torch, name)
    twin.load_state_dict({key: torch.tensor(np.array(value)) for key, value in ours.state_dict().items()})
    their_optimizer.load_state_dict(_as_torch(torch, our_optimizer.state_dict()))
    np.testing.assert_allclose(_train(torch, twin, their_optimizer, BATCHES[3:]), _train(kiln, ours, our_optimizer, BATCHES[3:]), rtol=1e-12)
    for mine, theirs in zip(_parameters(ours), _parameters(twin)):
        np.testing.assert_allclose(mine, theirs, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("suffix", ["npz", "pt"])
def test_kiln_save_of_the_state_dict_resumes_exactly(suffix, tmp_path):
    model, optimizer = _setup(kiln, "Adam")
    _train(kiln, model, optimizer, BATCHES[:3])
    kiln.save({"model": model.state_dict(), "optimizer": optimizer.state_dict()}, tmp_path / f"run.{suffix}")
    expected_losses, expected = _train(kiln, model, optimizer, BATCHES[3:]), _parameters(model)
    resumed, resumed_optimizer = _setup(kiln, "Adam")
    checkpoint = kiln.load(tmp_path / f"run.{suffix}")
    assert list(checkpoint["optimizer"]["state"]) == [0, 1, 2, 3]
    resumed.load_state_dict(checkpoint["model"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    assert _train(kiln, resumed, resumed_optimizer, BATCHES[3:]) == expected_losses
    for mine, uninterrupted in zip(_parameters(resumed), expected):
        np.testing.assert_array_equal(mine, uninterrupted)


def test_a_parameter_never_stepped_has_no_entry_and_a_late_one_its_own_step():
    """A frozen first layer: no state, as torch's (which makes state only in ``step``); the rest count their steps."""
    torch = require_torch()
    runs = {}
    for lib in (kiln, torch):
        model, optimizer = _setup(lib, "Adam")
        model[0].weight.requires_grad_(False)
        _train(lib, model, optimizer, BATCHES[:2])
        runs[lib.__name__] = optimizer.state_dict()
    assert list(runs["kiln"]["state"]) == list(runs["torch"]["state"]) == [1, 2, 3]
    assert [float(entry["step"]) for entry in runs["kiln"]["state"].values()] == [2.0, 2.0, 2.0]


def test_lbfgs_state_dict_is_torchs_layout():
    """The one L-BFGS state under parameter 0: counters and ``t``, ``prev_loss`` numbers, the history lists of
    vectors; torch's scratch ``al`` aside, the same names and kinds; and it loads back into kiln."""
    torch = require_torch()
    x = np.random.default_rng(3).standard_normal((5, 3))
    twin = torch.nn.Linear(3, 2).double()
    theirs = torch.optim.LBFGS(twin.parameters(), history_size=3, max_iter=4)

    def closure():
        theirs.zero_grad()
        loss = (twin(torch.tensor(x)) ** 2).sum()
        loss.backward()
        return loss

    model = kiln.nn.Linear(3, 2).double()
    ours = kiln.optim.LBFGS(model.parameters(), history_size=3, max_iter=4)
    evaluate = kiln.optim.loss_and_grad(model, lambda out, target: (out ** 2).sum(), ours)
    for _ in range(2):
        theirs.step(closure)
        ours.step(lambda: evaluate(kiln.tensor(x), kiln.zeros(5, 2)))
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert list(mine["state"]) == list(reference["state"]) == [0]
    assert mine["param_groups"] == reference["param_groups"]
    kinds = {name: _kind(value) for name, value in reference["state"][0].items() if name != "al"}
    assert {name: _kind(value) for name, value in mine["state"][0].items()} == kinds
    assert [len(mine["state"][0][name]) for name in ("old_dirs", "old_stps", "ro")] == [3, 3, 3]
    kiln.optim.LBFGS(model.parameters(), history_size=3, max_iter=4).load_state_dict(mine)


def _kind(value: Any) -> str:
    """What a state value is: a tensor (an array in kiln), a number (torch's ``t`` is the ``lr`` given, an int here), a list."""
    return {"ndarray": "tensor", "Tensor": "tensor", "int": "number", "float": "number"}.get(type(value).__name__, type(value).__name__)


def test_a_combined_optimizer_lists_each_members_own_entries():
    torch = require_torch()
    model, _ = _setup(kiln, "Adam")
    weights, biases = [model[0].weight, model[2].weight], [model[0].bias, model[2].bias]
    combined = kiln.optim.Combined(kiln.optim.SGD(weights, lr=0.05, momentum=0.9), kiln.optim.Adam(biases, lr=0.05))
    _train(kiln, model, combined, BATCHES[:2])
    state = combined.state_dict()
    assert [sorted(entry) for entry in state["state"].values()] == [["momentum_buffer"]] * 2 + [["exp_avg", "exp_avg_sq", "step"]] * 2
    assert [group["params"] for group in state["param_groups"]] == [[0, 1], [2, 3]]
    twin = torch.optim.Adam([torch.zeros(4, requires_grad=True), torch.zeros(2, requires_grad=True)])
    assert sorted(state["param_groups"][1]) == sorted(twin.state_dict()["param_groups"][0])


@pytest.mark.parametrize("name", ["Adam", "SGD nesterov", "RMSprop centered momentum"])
def test_a_kiln_saved_checkpoint_loads_with_torch_load_and_resumes_in_torch(name, tmp_path, float64_default):
    """``kiln.save({"model": ..., "optimizer": optimizer.state_dict()}, "ckpt.pt")`` read by ``torch.load`` loads into
    torch's model and optimizer as they are, and the run continues as kiln's."""
    torch = float64_default
    ours, our_optimizer = _setup(kiln, name)
    _train(kiln, ours, our_optimizer, BATCHES[:3])
    kiln.save({"model": ours.state_dict(), "optimizer": our_optimizer.state_dict()}, tmp_path / "kiln.pt")
    checkpoint = torch.load(tmp_path / "kiln.pt")
    twin, their_optimizer = _setup(torch, name)
    twin.load_state_dict(checkpoint["model"])
    their_optimizer.load_state_dict(checkpoint["optimizer"])
    np.testing.assert_allclose(_train(torch, twin, their_optimizer, BATCHES[3:]), _train(kiln, ours, our_optimizer, BATCHES[3:]), rtol=1e-12)


def test_two_parameter_groups_list_their_positions_and_options_as_torchs():
    torch = require_torch()
    layouts = []
    for lib in (kiln, torch):
        model, _ = _setup(lib, "Adam")
        groups = [{"params": [model[0].weight, model[2].weight], "weight_decay": 0.1}, {"params": [model[0].bias, model[2].bias], "lr": 0.01}]
        optimizer = lib.optim.AdamW(groups, lr=0.05)
        _train(lib, model, optimizer, BATCHES[:2])
        layouts.append(optimizer.state_dict())
    assert layouts[0]["param_groups"] == layouts[1]["param_groups"]
    assert [group["params"] for group in layouts[0]["param_groups"]] == [[0, 1], [2, 3]]
    assert list(layouts[0]["state"]) == list(layouts[1]["state"])


def test_an_lbfgs_state_dict_loads_into_torch_and_continues_as_kiln(float64_default):
    """Its lists of vectors as lists of tensors, its numbers as they are: torch's LBFGS takes the next step kiln takes."""
    torch = float64_default
    x = np.random.default_rng(3).standard_normal((5, 3))
    model = kiln.nn.Linear(3, 2)
    ours = kiln.optim.LBFGS(model.parameters(), history_size=3, max_iter=4)
    evaluate = kiln.optim.loss_and_grad(model, lambda out, target: (out ** 2).sum(), ours)
    for _ in range(2):
        ours.step(lambda: evaluate(kiln.tensor(x), kiln.zeros(5, 2)))
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict({name: torch.tensor(np.array(value)) for name, value in model.state_dict().items()})
    theirs = torch.optim.LBFGS(twin.parameters(), history_size=3, max_iter=4)
    state = ours.state_dict()
    as_torch = lambda v: [torch.tensor(np.array(a)) for a in v] if isinstance(v, list) else torch.tensor(v) if isinstance(v, np.ndarray) else v  # noqa: E731
    theirs.load_state_dict({"state": {k: {n: as_torch(v) for n, v in e.items()} for k, e in state["state"].items()},
                            "param_groups": state["param_groups"]})

    def closure():
        theirs.zero_grad()
        loss = (twin(torch.tensor(x)) ** 2).sum()
        loss.backward()
        return loss

    theirs.step(closure)
    ours.step(lambda: evaluate(kiln.tensor(x), kiln.zeros(5, 2)))
    np.testing.assert_allclose(np.asarray(model.weight.data), twin.weight.detach().numpy(), rtol=1e-10, atol=1e-13)
