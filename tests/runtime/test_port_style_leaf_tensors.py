"""Optimizing a tensor that is not a Parameter, as PyTorch allows (the style-transfer tutorial's input image):
``optim.X([x])`` on an eager leaf marked by ``requires_grad_()``, ``x.clamp_`` under ``no_grad`` keeping the mark, and
PyTorch's refusals (an in-place write to a marked leaf while recording, a non-leaf, an unmarked tensor). Checked
against torch 2.13 in float64."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError, TraceError
from oracles import require_torch

START = np.array([[0.2, 1.7, -0.4], [0.9, 0.1, 2.5]])
TARGET = np.array([[0.5, 0.5, 0.5], [1.0, 0.0, 0.3]])


def _fit(lib, make_optimizer, steps=4):
    """Fit ``x`` (a clone of a constant, marked) to TARGET through ``sin``, clamping to [0, 1] under no_grad first."""
    x = lib.tensor(START).clone()
    x.requires_grad_(True)
    optimizer = make_optimizer(lib, x)
    losses = []
    for _ in range(steps):
        def closure():
            with lib.no_grad():
                x.clamp_(0, 1)
            optimizer.zero_grad()
            loss = ((lib.sin(3 * x) - lib.tensor(TARGET)) ** 2).sum()
            loss.backward()
            losses.append(loss.item())
            return loss

        optimizer.step(closure)
    return losses, np.array(x.detach().numpy()), np.array(x.grad)


@pytest.mark.parametrize("make_optimizer", [
    lambda lib, x: lib.optim.LBFGS([x]),
    lambda lib, x: lib.optim.Adam([x], lr=0.1),
    lambda lib, x: lib.optim.SGD([{"params": [x], "lr": 0.05}], momentum=0.9),
], ids=["lbfgs", "adam", "sgd-group"])
def test_an_eager_leaf_tensor_is_optimised_as_torch_does(make_optimizer):
    torch = require_torch()
    (losses, x, grad), (torch_losses, torch_x, torch_grad) = _fit(kiln, make_optimizer), _fit(torch, make_optimizer)
    np.testing.assert_allclose(losses, torch_losses, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(x, torch_x, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(grad, torch_grad, rtol=1e-10, atol=1e-13)
    assert losses[-1] < losses[0]


def test_clamp_under_no_grad_keeps_the_leaf_marked_and_its_gradient_matches_torch():
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        x = lib.tensor(START).requires_grad_()
        with lib.no_grad():
            x.clamp_(0, 1)
        assert x.requires_grad and x.is_leaf
        (lib.tanh(x) * lib.tensor(TARGET)).sum().backward()
        results.append((np.array(x.detach().numpy()), np.array(x.grad)))
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_in_place_write_to_a_marked_leaf_while_recording_is_refused_naming_the_line():
    x = kiln.tensor(START).requires_grad_()
    with pytest.raises(TraceError, match=r"(?s)test_port_style_leaf_tensors.py:\d+.*clamp_: a leaf Variable that requires grad.*no_grad"):
        x.clamp_(0, 1)


def test_optimizers_refuse_unmarked_and_non_leaf_tensors():
    with pytest.raises(KilnError, match="requires_grad_"):
        kiln.optim.SGD([kiln.tensor(START)], lr=0.1)
    w = kiln.nn.Parameter(START)
    with pytest.raises(KilnError, match="non-leaf"):
        kiln.optim.SGD([(w * 2).requires_grad_()], lr=0.1)
    x = kiln.tensor(START).requires_grad_()
    with pytest.raises(KilnError, match="more than one parameter group"):
        kiln.optim.Adam([{"params": [x]}, {"params": [x], "lr": 0.1}])



@pytest.mark.parametrize("make", [
    lambda lib, a: a.clone(),
    lambda lib, a: a.detach().clone(),
    lambda lib, a: a * 2,
    lambda lib, a: lib.tensor(START),
], ids=["clone", "detach-clone", "product", "fresh"])
def test_marking_a_tensor_computed_from_constants_makes_a_leaf_as_torch(make):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        x = make(lib, lib.tensor(START)).requires_grad_()
        (lib.cos(x) * x).sum().backward()
        results.append((x.is_leaf, x.requires_grad, x.grad_fn is None, np.array(x.grad)))
    (*flags, grad), (*torch_flags, torch_grad) = results
    assert flags == torch_flags == [True, True, True]
    np.testing.assert_allclose(grad, torch_grad, rtol=1e-12)
