"""``torch.optim``'s implementation flags (``foreach``, ``fused``, ``capturable``, ``differentiable``) against PyTorch
2.13 in float64: each kiln optimizer takes its PyTorch class's arguments in the same order with the same defaults,
keeps the flags in its param groups as PyTorch does, updates exactly as PyTorch with them, and its state_dict loads
into PyTorch and PyTorch's into it; the combinations PyTorch refuses are refused (``frontend/optim_flags.py``)."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import torch_twins
from test_more_optimizers import assert_constructor_matches_torch

pytestmark = pytest.mark.usefixtures("float64_default")  # PyTorch keeps NAdam's mu_product and the steps in it
NAMES = ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adamax", "NAdam", "RAdam", "Adadelta", "Rprop", "ASGD", "Adafactor"]
OPTIONS = {
    "SGD": dict(lr=0.05, momentum=0.9, weight_decay=1e-2), "Adam": dict(lr=0.02, weight_decay=1e-2, amsgrad=True),
    "AdamW": dict(lr=0.02), "RMSprop": dict(lr=0.01, momentum=0.5, centered=True), "Adagrad": dict(lr=0.1, lr_decay=1e-2),
    "Adamax": dict(lr=0.02), "NAdam": dict(lr=0.02), "RAdam": dict(lr=0.02, weight_decay=1e-2), "Adadelta": dict(lr=0.5),
    "Rprop": dict(lr=0.01), "ASGD": dict(lr=0.05, t0=2), "Adafactor": dict(lr=0.05, weight_decay=1e-2),
}
FLAGS = ("foreach", "fused", "capturable", "differentiable")
STEPS = 4


def _net(lib: Any) -> Any:
    return lib.nn.Sequential(lib.nn.Linear(3, 5), lib.nn.Tanh(), lib.nn.Linear(5, 2)).double()


def _batch(index: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(index)
    return rng.standard_normal((6, 3)), rng.standard_normal((6, 2))


def _train(lib: Any, model: Any, optimizer: Any, steps: range) -> None:
    for index in steps:
        x, y = _batch(index)
        optimizer.zero_grad()
        ((model(lib.tensor(x)) - lib.tensor(y)) ** 2).mean().backward()
        optimizer.step()


def _accepted(torch: Any, name: str) -> set[str]:
    return set(FLAGS) & set(inspect.signature(getattr(torch.optim, name).__init__).parameters)


def _flag_sets(torch: Any, name: str) -> list[dict[str, Any]]:
    """Every flag the class takes, on: with ``foreach``, and with ``fused`` where the class has a fused kernel."""
    accepted = _accepted(torch, name)
    capturable = {"capturable": True} if "capturable" in accepted else {}
    off = {"differentiable": False} if "differentiable" in accepted else {}
    sets = [{"foreach": True, **capturable}, {"foreach": False, **off}]
    return sets + ([{"fused": True, **capturable}] if "fused" in accepted else [])


def _torch_flags(flags: dict[str, Any]) -> dict[str, Any]:
    """PyTorch's CPU step refuses ``capturable`` (a CUDA-graph option) unless fused; the math is the same without it."""
    return flags if flags.get("fused") else {k: v for k, v in flags.items() if k != "capturable"}


def _options(group: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in group.items() if key != "params"}


def _assert_same_parameters(model: Any, twin: Any) -> None:
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.asarray(p.data), q.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_constructor_takes_torchs_arguments_in_order_with_its_defaults(torch, name: str):
    assert_constructor_matches_torch(torch, name, same_kinds=True)


@pytest.mark.parametrize("name", NAMES)
def test_param_groups_hold_torchs_options_in_its_order(torch, name: str):
    _, model, twin = torch_twins(_net)
    ours = getattr(kiln.optim, name)(model.parameters(), **OPTIONS[name])
    theirs = getattr(torch.optim, name)(twin.parameters(), **OPTIONS[name])
    assert list(_options(ours.param_groups[0]).items()) == list(_options(theirs.param_groups[0]).items())
    assert list(ours.state_dict()["param_groups"][0]) == list(theirs.state_dict()["param_groups"][0])


@pytest.mark.parametrize("name", NAMES)
def test_every_accepted_flag_updates_exactly_as_torch(torch, name: str):
    for flags in _flag_sets(torch, name):
        _, model, twin = torch_twins(_net)
        ours = getattr(kiln.optim, name)(model.parameters(), **OPTIONS[name], **flags)
        theirs = getattr(torch.optim, name)(twin.parameters(), **OPTIONS[name], **_torch_flags(flags))
        _train(kiln, model, ours, range(STEPS))
        _train(torch, twin, theirs, range(STEPS))
        _assert_same_parameters(model, twin)
        assert {k: ours.param_groups[0][k] for k in flags} == flags


def test_adam_with_decoupled_weight_decay_is_torchs(torch):
    _, model, twin = torch_twins(_net)
    ours = kiln.optim.Adam(model.parameters(), lr=0.02, weight_decay=0.1, decoupled_weight_decay=True)
    theirs = torch.optim.Adam(twin.parameters(), lr=0.02, weight_decay=0.1, decoupled_weight_decay=True)
    _train(kiln, model, ours, range(STEPS))
    _train(torch, twin, theirs, range(STEPS))
    _assert_same_parameters(model, twin)


@pytest.mark.parametrize("name", NAMES)
def test_a_torch_state_dict_with_flags_loads_and_the_run_continues_in_lockstep(torch, name: str):
    flags = _flag_sets(torch, name)[-1]
    _, model, twin = torch_twins(_net)
    theirs = getattr(torch.optim, name)(twin.parameters(), **OPTIONS[name], **_torch_flags(flags))
    _train(torch, twin, theirs, range(STEPS))
    saved = theirs.state_dict()
    model.load_state_dict({key: value.numpy() for key, value in twin.state_dict().items()})
    ours = getattr(kiln.optim, name)(model.parameters(), **OPTIONS[name])
    ours.load_state_dict({"state": {k: {n: v.numpy() for n, v in entry.items()} for k, entry in saved["state"].items()},
                          "param_groups": saved["param_groups"]})
    assert _options(ours.param_groups[0]) == _options(theirs.param_groups[0])
    _train(kiln, model, ours, range(STEPS, 2 * STEPS))
    _train(torch, twin, theirs, range(STEPS, 2 * STEPS))
    _assert_same_parameters(model, twin)


@pytest.mark.parametrize("name", NAMES)
def test_kilns_state_dict_with_flags_loads_into_torch_and_the_run_continues_in_lockstep(torch, name: str):
    flags = _flag_sets(torch, name)[-1]
    _, model, twin = torch_twins(_net)
    ours = getattr(kiln.optim, name)(model.parameters(), **OPTIONS[name], **flags)
    _train(kiln, model, ours, range(STEPS))
    twin.load_state_dict({key: torch.tensor(np.array(value)) for key, value in model.state_dict().items()})
    theirs = getattr(torch.optim, name)(twin.parameters(), **OPTIONS[name])
    saved = ours.torch_state_dict()
    theirs.load_state_dict({"state": {k: {n: torch.tensor(v) for n, v in entry.items()} for k, entry in saved["state"].items()},
                            "param_groups": [{**group, **_torch_flags(group)} for group in saved["param_groups"]]})
    assert set(theirs.param_groups[0]) == set(ours.param_groups[0])
    _train(kiln, model, ours, range(STEPS, 2 * STEPS))
    _train(torch, twin, theirs, range(STEPS, 2 * STEPS))
    _assert_same_parameters(model, twin)


def test_flags_never_recompile_the_update():
    optimizer = kiln.optim.Adam(_net(kiln).parameters())
    before = optimizer.signature()
    optimizer.param_groups[0].update(foreach=True, fused=False, capturable=True)
    assert optimizer.signature() == before


# --- what PyTorch refuses, kiln refuses ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad"])
@pytest.mark.parametrize(("flags", "message"), [
    (dict(fused=True, foreach=True), "`fused` and `foreach` cannot be `True` together"),
    (dict(fused=True, differentiable=True), "`fused` does not support `differentiable`"),
])
def test_the_fused_combinations_torch_refuses_are_refused(torch, name: str, flags: dict[str, Any], message: str):
    with pytest.raises(RuntimeError, match=message):
        getattr(torch.optim, name)(_net(torch).parameters(), **flags)
    with pytest.raises(KilnError, match=message):
        getattr(kiln.optim, name)(_net(kiln).parameters(), **flags)


@pytest.mark.parametrize("name", NAMES)
def test_a_flag_the_torch_class_lacks_is_a_type_error_as_in_torch(torch, name: str):
    for flag in sorted(set(FLAGS) - _accepted(torch, name)):
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{flag}'"):
            getattr(torch.optim, name)(_net(torch).parameters(), **{flag: False})
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{flag}'"):
            getattr(kiln.optim, name)(_net(kiln).parameters(), **{flag: False})


@pytest.mark.parametrize("name", [name for name in NAMES if name != "Adafactor"])
def test_differentiable_true_is_refused_with_what_to_do(name: str):
    with pytest.raises(KilnError, match=rf"{name}\(differentiable=True\): kiln cannot differentiate through .*kiln.autograd.grad"):
        getattr(kiln.optim, name)(_net(kiln).parameters(), differentiable=True)


def test_differentiable_true_in_a_param_group_is_refused():
    net = _net(kiln)
    first, second = list(net.parameters())[:2], list(net.parameters())[2:]
    with pytest.raises(KilnError, match="differentiable=True"):
        kiln.optim.Adam([{"params": first}, {"params": second, "differentiable": True}])


def test_a_torch_state_dict_of_a_differentiable_optimizer_is_refused_and_nothing_is_written(torch):
    _, model, twin = torch_twins(_net)
    saved = torch.optim.Adam(twin.parameters(), differentiable=True).state_dict()
    ours = kiln.optim.Adam(model.parameters())
    with pytest.raises(KilnError, match=r"Adam\(differentiable=True\)"):
        ours.load_state_dict(saved)
    assert ours.param_groups[0]["differentiable"] is False
