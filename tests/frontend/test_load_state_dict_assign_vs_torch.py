"""``Module.load_state_dict(state, assign=True)`` against torch 2.13: the state's values become new parameters and
buffers in the state's dtype, each parameter keeping the module's ``requires_grad``; shapes are checked all the same;
a compiled model traces again for the new parameters."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries


def _model(lib):
    model = lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.BatchNorm1d(4), lib.nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    return model


def _state(lib, dtype):
    rng = np.random.default_rng(0)
    shapes = {"0.weight": (4, 3), "0.bias": (4,), "1.weight": (4,), "1.bias": (4,), "1.running_mean": (4,),
              "1.running_var": (4,), "2.weight": (2, 4), "2.bias": (2,)}
    state = {name: lib.tensor(rng.standard_normal(shape), dtype=getattr(lib, dtype)) for name, shape in shapes.items()}
    state["1.running_var"] = state["1.running_var"].abs()
    state["1.num_batches_tracked"] = lib.tensor(7)
    return state


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_assigned_state_as_torch(dtype):
    models = {}
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        model = _model(lib)
        model.load_state_dict(_state(lib, dtype), assign=True)
        models[name] = model
    ours, theirs = models["kiln"], models["torch"]
    for (name, mine), (_, expected) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert str(mine.dtype).split(".")[-1] == str(expected.dtype).split(".")[-1], name
        assert mine.requires_grad == expected.requires_grad, name
        np.testing.assert_array_equal(np.asarray(mine.data), expected.detach().numpy())
    for (name, mine), (_, expected) in zip(ours.named_buffers(), theirs.named_buffers(), strict=True):
        assert str(mine.dtype).split(".")[-1] == str(expected.dtype).split(".")[-1], name
        np.testing.assert_array_equal(np.asarray(mine), expected.numpy())
    torch, _, _ = libraries("torch")
    x = np.random.default_rng(1).standard_normal((5, 3))
    ours.eval(), theirs.eval()
    with kiln.no_grad(), torch.no_grad():
        np.testing.assert_allclose(np.asarray(ours(kiln.tensor(x, dtype=getattr(kiln, dtype)))),
                                   theirs(torch.tensor(x, dtype=getattr(torch, dtype))).numpy(), rtol=1e-6, atol=1e-6)


def test_assign_checks_shapes_first_as_torch():
    model = _model(kiln)
    before = np.asarray(model[2].weight.data).copy()
    state = _state(kiln, "float32")
    state["0.weight"] = kiln.zeros(3, 3)
    with pytest.raises(kiln.KilnError, match="0.weight has shape"):
        model.load_state_dict(state, assign=True)
    np.testing.assert_array_equal(np.asarray(model[2].weight.data), before)  # nothing was assigned


def test_a_compiled_model_runs_the_assigned_parameters():
    model = _model(kiln).eval()
    compiled = kiln.compile(model)
    x = kiln.ones(2, 3)
    with kiln.no_grad():
        compiled(x)
        model.load_state_dict(_state(kiln, "float32"), assign=True)
        np.testing.assert_allclose(np.asarray(compiled(x)), np.asarray(model(x)), rtol=1e-6)
