"""A ``kiln.compile``d step that writes a ``.grad`` in place before its ``backward()`` (DeepDream's
``image.grad.data.zero_()`` at the top of the step, a hand-written SGD's ``w.grad.zero_()``, ``p.grad.mul_(decay)``):
the write is traced, as torch's eager step does it. kiln fed the ``.grad`` held at the call as the step's input and
the write went to the eager array at trace time only, so from the second call on ``backward()`` added to the unwritten
gradient, silently. And a step whose loss reaches a tensor read from outside it that requires grad and is no
parameter (``image = x.clone().detach().requires_grad_()``): PyTorch fills its ``.grad``; kiln's step left it None
(the user's ``image.grad.data`` then raised AttributeError out of ``kiln.compile``): now refused at the user's line,
so the call runs eagerly (warned), as torch. Float64, against torch 2.13's eager step."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch

torch = require_torch()

START = np.linspace(0.1, 1.0, 6)

WRITES = {
    "grad.zero_": lambda lib, t: t.grad.zero_(),
    "grad.data.zero_": lambda lib, t: t.grad.data.zero_(),
    "grad.mul_": lambda lib, t: t.grad.mul_(0.5),
    "grad.fill_": lambda lib, t: t.grad.fill_(1.0),
    "grad[0] = 0": lambda lib, t: t.grad.__setitem__(0, 0.0),
}

LEAVES = {
    "parameter": lambda lib: lib.nn.Parameter(lib.tensor(START)),
    "tensor marked by requires_grad_": lambda lib: lib.tensor(START).clone().requires_grad_(True),
}


def _run(lib, leaf, write, compile_step):
    """Three calls of a step that writes ``t.grad`` in place, then backward, then a hand-written SGD update."""
    t = LEAVES[leaf](lib)
    (t ** 2).sum().backward()  # a .grad before the first call: the step's input

    def step():
        WRITES[write](lib, t)
        loss = (t ** 3).sum()
        loss.backward()
        grad = t.grad.detach().clone()
        with lib.no_grad():
            t.sub_(0.05 * t.grad)
        return loss, grad

    run = kiln.compile(step, fullgraph=True) if compile_step else step
    calls = [[np.array(x.detach().numpy()) for x in run()] for _ in range(3)]
    return calls, np.array(t.detach().numpy()), np.array(t.grad.detach().numpy())


@pytest.mark.parametrize("write", WRITES)
@pytest.mark.parametrize("leaf", LEAVES)
def test_a_grad_written_in_place_before_backward_in_a_compiled_step_as_torch(leaf, write):
    ours, theirs = _run(kiln, leaf, write, True), _run(torch, leaf, write, False)
    for mine, other in zip(ours[0], theirs[0]):
        for a, b in zip(mine, other):
            np.testing.assert_allclose(a, b, rtol=1e-13)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-13)
    np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-13)


def _dream(lib, compile_step=None):
    """eriklindernoren's PyTorch-Deep-Dream ``dream``: ``Variable(Tensor(image), requires_grad=True)``, the loss the
    output's norm, ``image.data += norm_lr * image.grad.data``, ``image.grad.data.zero_()``."""
    lib.manual_seed(0)
    conv = lib.nn.Conv2d(1, 2, 3).double()
    with lib.no_grad():
        conv.weight.copy_(lib.tensor(np.cos(np.arange(18.0)).reshape(2, 1, 3, 3)))
        conv.bias.fill_(0.1)
    image = lib.autograd.Variable(lib.tensor(np.linspace(0, 1, 36).reshape(1, 1, 6, 6)), requires_grad=True)

    def step():
        conv.zero_grad()
        loss = conv(image).norm()
        loss.backward()
        avg_grad = image.grad.data.abs().mean()
        image.data += 0.05 / avg_grad * image.grad.data
        image.grad.data.zero_()
        return loss

    run = kiln.compile(step, fullgraph=compile_step == "fullgraph") if compile_step else step
    return [run().item() for _ in range(3)], np.array(image.detach().numpy())


def test_a_loss_reaching_an_outside_tensor_that_requires_grad_runs_eagerly_as_torch():
    theirs = _dream(torch)
    with pytest.warns(UserWarning, match=r"runs eagerly.*a tensor read from outside the function that requires grad"):
        ours = _dream(kiln, "warned")
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-13)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-13)


def test_a_loss_reaching_an_outside_tensor_that_requires_grad_is_refused_with_fullgraph():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(kiln.compiler.errors.TraceError,
                           match=r"(?s)loss.backward\(\).*read from outside the function that requires grad.*leaf of "
                                 r"its own"):
            _dream(kiln, "fullgraph")
