"""A ``kiln.compile(step, fullgraph=True)`` training step (zero_grad, loss, ``backward()``, ``optimizer.step()``) given
tensors that require grad, against PyTorch 2.13's eager step: torchbeast's learner gets a batch stacked from buffers an
actor wrote from a forward outside ``no_grad``, so the batch carries a chain back to the actor. kiln traced such a call
as a forward whose backward comes later and refused the ``backward()`` inside ("backward() of a traced tensor"); now it
is traced again as a whole step (``frontend/whole_step_inputs.py``). The step differentiates the parameters only, so a
loss that reaches such an argument (PyTorch would give it a gradient too) is refused."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import libraries


def _models(torch, nn):
    torch.manual_seed(0)
    actor, learner = nn.Linear(3, 2), nn.Linear(3, 2)
    rng = np.random.default_rng(0)
    for model in (actor, learner):
        for p in model.parameters():
            p.data = torch.tensor(rng.standard_normal(tuple(p.shape)))
    return actor, learner


def _run(name, compiled, use_targets_in_loss=False, steps=3):
    """A learner step whose targets come from the actor's forward (with its chain); the targets enter the loss
    detached unless ``use_targets_in_loss``."""
    torch, nn, F = libraries(name)
    actor, learner = _models(torch, nn)
    optimizer = torch.optim.SGD(learner.parameters(), lr=0.1, momentum=0.9)
    x = torch.tensor(np.linspace(-1.0, 1.0, 12).reshape(4, 3))
    buffer = torch.zeros(4, 2)
    buffer[...] = actor(x)  # a forward outside no_grad written into a buffer: it requires grad now

    def step(inputs, targets):
        optimizer.zero_grad()
        with torch.no_grad():
            weights = torch.softmax(targets, dim=-1)
        prediction = learner(inputs)
        loss = ((prediction - (targets if use_targets_in_loss else targets.detach())) ** 2 * weights).mean()
        loss.backward()
        optimizer.step()
        return loss.detach()

    run = kiln.compile(step, fullgraph=True) if compiled else step
    assert buffer.requires_grad
    losses = [run(x, buffer).item() for _ in range(steps)]
    return losses, [np.array(p.detach().numpy()) for p in learner.parameters()], [p.grad for p in actor.parameters()]


def test_whole_step_given_a_batch_that_requires_grad_as_torch(float64_default):
    theirs = _run("torch", compiled=False)
    for compiled in (False, True):
        ours = _run("kiln", compiled=compiled)
        np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
        for mine, expected in zip(ours[1], theirs[1], strict=True):
            np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-14)
        assert ours[2] == theirs[2] == [None, None]  # the actor got no gradient: its chain is not on the loss's path


def test_whole_step_whose_loss_reaches_an_argument_that_requires_grad_is_refused(float64_default):
    """PyTorch's backward() would also give the actor a gradient through the batch's chain; the compiled step cannot
    hand it back, and says so."""
    torch_losses, _, torch_actor_grads = _run("torch", compiled=False, use_targets_in_loss=True, steps=1)
    assert torch_actor_grads[0] is not None
    with pytest.raises(kiln.TraceError, match=r"(?s)test_compiled_step_given_grad_arguments_vs_torch.py:\d+ in step.*"
                                              r"the loss depends on an argument that requires grad.*x.detach\(\)"):
        _run("kiln", compiled=True, use_targets_in_loss=True, steps=1)


def _alternating(name):
    """One compiled step called with an input that does not require grad, then with one that does and reaches the
    loss, then without again: the second call's gradient for the input, as PyTorch's."""
    torch, nn, F = libraries(name)
    _, learner = _models(torch, nn)
    optimizer = torch.optim.SGD(learner.parameters(), lr=0.1)

    def step(inputs):
        optimizer.zero_grad()
        loss = learner(inputs).pow(2).sum()
        loss.backward()
        optimizer.step()
        return loss.detach()

    run = kiln.compile(step) if name == "kiln" else step
    x = torch.tensor(np.linspace(-1.0, 1.0, 12).reshape(4, 3))
    leaf = x.clone().requires_grad_()
    losses = [run(x).item(), run(leaf).item(), run(x).item()]
    return losses, leaf.grad.numpy(), [p.detach().numpy() for p in learner.parameters()]


def test_a_step_traced_for_inputs_without_grad_is_not_reused_for_one_that_requires_grad(float64_default):
    """The variant traced for an input without grad was reused for a leaf that requires grad: its ``.grad`` stayed
    None. Now the set of arguments that require grad keys the step, and the leaf's variant fills its ``.grad`` (it ran
    eagerly, warned, before leaf arguments were the step's leaves)."""
    theirs = _alternating("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = _alternating("kiln")
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12)
    for mine, expected in zip(ours[2], theirs[2], strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-12)
