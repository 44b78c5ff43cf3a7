"""``kiln.compile(module)`` is a ``Module``, as ``torch.compile``'s ``OptimizedModule`` (``runtime/compiled_module.py``):
code that checks ``isinstance(model, nn.Module)``, registers it in a parent, averages or pickles it takes it."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from oracles import torch_twins


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(4, 8), lib.nn.Tanh(), lib.nn.Linear(8, 3)).double()


X = np.random.default_rng(0).standard_normal((5, 4))


def test_a_compiled_module_is_a_module_but_not_its_modules_class_as_torchs():
    torch, model, twin = torch_twins(_net)
    compiled, twin_compiled = kiln.compile(model), torch.compile(twin)
    assert isinstance(compiled, nn.Module) == isinstance(twin_compiled, torch.nn.Module) is True
    assert isinstance(compiled, nn.Sequential) == isinstance(twin_compiled, torch.nn.Sequential) is False
    assert compiled._orig_mod is model and twin_compiled._orig_mod is twin


def test_a_parent_registers_a_compiled_module_and_trains_its_parameters():
    kiln.manual_seed(0)
    model = _net(kiln)
    parent = nn.Module()
    parent.body = kiln.compile(model)
    assert [id(p) for p in parent.parameters()] == [id(p) for p in model.parameters()]
    assert list(parent.state_dict()) == [f"body.{name}" for name in model.state_dict()]
    optimizer = kiln.optim.SGD(parent.parameters(), lr=0.1)
    before = np.array(model[0].weight.data)
    parent.body(kiln.tensor(X)).sum().backward()
    optimizer.step()
    assert not np.array_equal(before, model[0].weight.data)


def test_modes_attributes_and_state_dicts_are_the_modules():
    torch, model, twin = torch_twins(_net)
    compiled = kiln.compile(model)
    assert compiled.eval() is compiled and not model.training and not model[0].training
    compiled.train()
    assert model.training and compiled.training
    compiled.note = "set on the compiled module"
    assert model.note == "set on the compiled module"
    del compiled.note
    assert not hasattr(model, "note")
    torch_state = torch.compile(twin).state_dict()  # torch's keys: '_orig_mod.0.weight', ...
    assert all(key.startswith("_orig_mod.") for key in torch_state)
    compiled.load_state_dict({key: value.numpy() * 2 for key, value in torch_state.items()})
    np.testing.assert_array_equal(np.array(model[0].weight.data), twin[0].weight.detach().numpy() * 2)


def test_a_forward_hook_on_the_compiled_module_runs_around_its_call_as_torchs():
    torch, model, twin = torch_twins(_net)
    outputs = []
    for lib, net in ((kiln, model), (torch, twin)):
        compiled = kiln.compile(net) if lib is kiln else torch.compile(net, backend="eager")
        compiled.register_forward_hook(lambda module, args, output: output * 2)
        with lib.no_grad():
            outputs.append(np.asarray(compiled(lib.tensor(X))))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-12)


def test_averaged_copied_and_pickled_compiled_modules_are_compiled_copies(tmp_path):
    kiln.manual_seed(1)
    model = _net(kiln)
    compiled = kiln.compile(model)
    average = kiln.optim.swa_utils.AveragedModel(compiled)
    average.update_parameters(compiled)
    np.testing.assert_array_equal(np.asarray(average(kiln.tensor(X))), np.asarray(compiled(X)))
    duplicate = copy.deepcopy(compiled)
    assert type(duplicate) is type(compiled) and duplicate._orig_mod is not model
    duplicate._orig_mod[0].weight.data[...] = 0
    assert np.any(np.array(model[0].weight.data) != 0)
    kiln.save(compiled, tmp_path / "compiled.pt")
    loaded = kiln.load(tmp_path / "compiled.pt", weights_only=False)
    assert isinstance(loaded, nn.Module) and loaded._orig_mod is not model
    np.testing.assert_array_equal(loaded(X), compiled(X))


def test_a_compiled_function_that_is_not_a_module_stays_a_plain_compiled_function():
    compiled = kiln.compile(lambda x: x * 2)
    assert not isinstance(compiled, nn.Module)
    with pytest.raises(AttributeError):
        compiled._orig_mod  # noqa: B018


def test_non_persistent_buffers_stay_out_of_the_compiled_modules_state_dict_as_torchs():
    from oracles import require_torch

    torch = require_torch()
    keys = {}
    for lib in (kiln, torch):
        class Masked(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = lib.nn.Linear(2, 2)
                self.register_buffer("mask", lib.ones(2), persistent=False)
                self.register_buffer("kept", lib.ones(1))

            def forward(self, x):
                return self.linear(x) * self.mask

        model = Masked()
        compiled = lib.compile(model)
        compiled.register_buffer("later", lib.zeros(1), persistent=False)  # after compiling: the module's, left out too
        keys[lib.__name__] = sorted(k.removeprefix("_orig_mod.") for k in compiled.state_dict())  # torch's has the prefix
    assert keys["kiln"] == keys["torch"] == ["kept", "linear.bias", "linear.weight"]
