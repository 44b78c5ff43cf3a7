"""A module changed between ``kiln.compile``d calls (a new ``Parameter``, a replaced or appended submodule, a forward
hook added or removed) runs as the same Python runs eagerly, as ``torch.compile``'s guards on a module's parameters,
submodules and hooks make it (``runtime/module_structure.py``). Before, the variant fed the old parameters and ran the
old layers, silently. Checked against torch 2.13 eagerly, call by call."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries


def _twins():
    torch, _, _ = libraries("torch")
    kiln.manual_seed(0)
    ours = kiln.nn.Sequential(kiln.nn.Linear(3, 4), kiln.nn.ReLU(), kiln.nn.Linear(4, 2)).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).double()
    theirs.load_state_dict({name: torch.tensor(np.asarray(value)) for name, value in ours.state_dict().items()})
    return torch, ours, theirs


def _new_weight(lib, seed):
    return lib.nn.Parameter(lib.tensor(np.random.default_rng(seed).standard_normal((4, 3))))


CHANGES = {
    "a new Parameter": lambda lib, model: setattr(model[0], "weight", _new_weight(lib, 1)),
    "a replaced submodule": lambda lib, model: model.__setitem__(1, lib.nn.Tanh()),
    "an appended submodule": lambda lib, model: model.append(lib.nn.Sigmoid()),
    "a forward hook": lambda lib, model: model[1].register_forward_hook(lambda module, args, output: output * 3),
    "a deleted submodule": lambda lib, model: model.__delitem__(1),
    "an instance forward": lambda lib, model: setattr(model, "forward", lambda x: model[2](model[0](x)).tanh()),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_module_changed_between_compiled_inference_calls_runs_as_torch(change):
    torch, ours, theirs = _twins()
    compiled = kiln.compile(ours, fullgraph=True)
    x = np.random.default_rng(0).standard_normal((5, 3))
    for call in range(3):
        if call == 1:
            handles = [CHANGES[change](kiln, ours), CHANGES[change](torch, theirs)]
        if call == 2 and change == "a forward hook":
            for handle in handles:
                handle.remove()
        with kiln.no_grad(), torch.no_grad():
            np.testing.assert_allclose(np.asarray(compiled(kiln.tensor(x))), theirs(torch.tensor(x)).numpy(), rtol=1e-12)


def test_a_new_head_trains_in_a_compiled_step_and_a_compiled_forward_as_torch():
    """Fine-tuning's ``model[2] = nn.Linear(4, 2)`` with a new optimizer after some compiled steps: the step traces
    again and trains the new head (the whole step), and a compiled forward's ``backward()`` reaches it."""
    torch, ours, theirs = _twins()

    def step(lib, model, optimizer, x):
        optimizer.zero_grad()
        loss = (model(x) ** 2).sum()
        loss.backward()
        optimizer.step()
        return loss

    state = {"kiln": kiln.optim.SGD(ours.parameters(), lr=0.1), "torch": torch.optim.SGD(theirs.parameters(), lr=0.1)}
    whole = kiln.compile(lambda x: step(kiln, ours, state["kiln"], x), fullgraph=True)
    forward = kiln.compile(ours, fullgraph=True)
    for call in range(6):
        if call == 3:
            head = kiln.nn.Linear(4, 2).double()
            ours[2] = head
            theirs[2] = torch.nn.Linear(4, 2).double()
            theirs[2].load_state_dict({name: torch.tensor(np.asarray(v)) for name, v in head.state_dict().items()})
            state["kiln"] = kiln.optim.SGD(ours[2].parameters(), lr=0.1)
            state["torch"] = torch.optim.SGD(theirs[2].parameters(), lr=0.1)
        x = np.random.default_rng(call).standard_normal((5, 3))
        run = whole if call % 2 else (lambda x: step(kiln, forward, state["kiln"], x))
        np.testing.assert_allclose(float(run(kiln.tensor(x))), float(step(torch, theirs, state["torch"], torch.tensor(x))),
                                   rtol=1e-12)
    for mine, expected in zip(ours.parameters(), theirs.parameters(), strict=True):
        np.testing.assert_allclose(np.asarray(mine.data), expected.detach().numpy(), rtol=1e-12)


def test_modules_made_elsewhere_between_calls_cost_no_trace():
    """Any registry's change makes the next call compare the structure it traced (``CHANGES``); the same structure
    keeps the variant."""
    _, ours, _ = _twins()
    compiled = kiln.compile(ours, fullgraph=True)
    with kiln.no_grad():
        for _ in range(5):
            compiled(kiln.ones(2, 3, dtype=kiln.float64))
            kiln.nn.Linear(2, 2)  # another model's registries change
    assert sum(hasattr(v, "executable") for v in compiled.variants.values()) == 1
    assert not any(compiled.superseded.values())
