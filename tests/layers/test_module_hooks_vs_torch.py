"""Forward hooks and pre-hooks (``frontend/module_hooks.py``) against PyTorch's in float64: a hook that captures a
middle layer's output for the loss, hooks that rewrite inputs and outputs (with and without kwargs, prepended),
values and every gradient to rtol 1e-10; handles that remove; backward hooks refused with what to use instead."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import KilnError
from layer_parity import assert_layer_matches_torch, normal
from oracles import require


def _model(library):
    return library.Sequential(library.Linear(4, 6), library.Tanh(), library.Linear(6, 3))


def _hooked(model, captured):
    """Capture the tanh's output, halve the last layer's input, add one to its output (torch and kiln alike)."""
    model[1].register_forward_hook(lambda module, args, output: captured.__setitem__("features", output))
    model[2].register_forward_pre_hook(lambda module, args: (args[0] * 0.5,))
    model[2].register_forward_hook(lambda module, args, output: output + 1.0)
    model[2].register_forward_hook(lambda module, args, output: output * 3.0, prepend=True)  # runs first
    return model


def test_hooks_trace_into_the_graph_as_pytorch_runs_them():
    torch = require("torch")
    ours_captured, theirs_captured = {}, {}
    ours, theirs = _hooked(_model(nn).double(), ours_captured), _hooked(_model(torch.nn).double(), theirs_captured)

    def call(captured):
        return lambda model, x: model(x) + captured["features"].sum(-1, keepdim=True) ** 2

    assert_layer_matches_torch(torch, ours, theirs, [normal(5, 4, dtype="float64")], call=call(ours_captured),
                               torch_call=call(theirs_captured))


def test_hooks_with_kwargs_and_removal():
    layer = nn.Linear(2, 2)
    layer.weight.data[:], layer.bias.data[:] = np.eye(2), 0.0
    x = np.array([[1.0, 2.0]], np.float32)
    pre = layer.register_forward_pre_hook(lambda module, args, kwargs: ((args[0] + 1.0,), kwargs), with_kwargs=True)
    post = layer.register_forward_hook(lambda module, args, kwargs, output: output * 10.0, with_kwargs=True)
    np.testing.assert_allclose(kiln.compile(layer)(x), [[20.0, 30.0]])
    pre.remove()
    np.testing.assert_allclose(kiln.compile(layer)(x), [[10.0, 20.0]])
    with post:
        pass
    np.testing.assert_allclose(kiln.compile(layer)(x), x)


def test_a_captured_feature_drives_a_compiled_training_step():
    kiln.manual_seed(0)
    model, captured = _model(nn), {}
    model[1].register_forward_hook(lambda module, args, output: captured.__setitem__("features", output))
    loss = lambda out, y: ((out - y) ** 2).mean() + 0.1 * (captured["features"] ** 2).mean()  # noqa: E731
    step = kiln.compile_train_step(model, loss, kiln.optim.SGD(model.parameters(), lr=0.1))
    x, y = normal(8, 4), normal(8, 3, seed=1)
    losses = [float(step(x, y)) for _ in range(20)]
    assert losses[-1] < losses[0]


def test_backward_hooks_run_eagerly_and_a_trace_refuses_them_with_what_to_use():
    for register in ("register_full_backward_hook", "register_backward_hook", "register_full_backward_pre_hook"):
        layer = nn.Linear(2, 2)
        getattr(layer, register)(lambda *args: None)
        with pytest.raises(KilnError, match="kiln.autograd.grad"):
            kiln.compile(layer)(normal(3, 2))  # eager calls: tests/runtime/test_eager_hooks.py
