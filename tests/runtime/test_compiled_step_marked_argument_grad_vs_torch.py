"""A ``kiln.compile(fullgraph=True)``d whole training step that marks one of its arguments by ``requires_grad = True``
(rosinality/stylegan2-pytorch's R1 step: ``real_img.requires_grad = True``, ``autograd.grad(real_pred.sum(),
real_img, create_graph=True)``, then ``backward()``), against torch 2.13's eager step: torch leaves the caller's
tensor requiring grad, with the ``.grad`` the step's ``backward()`` gave it. kiln filled that ``.grad`` inside the
trace only: after the call the caller's tensor had no ``.grad`` and did not require grad (silently). Now both are
written back (``runtime/argument_writes.py``)."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import libraries


def _r1_steps(name, detached=False):
    """Two calls of an R1 step on fresh batches (``detached``: a step that marks its batch but feeds the critic
    ``real_img.detach()``, so nothing reaches it); each batch's flags and ``.grad`` after its call."""
    torch, nn, F = libraries(name)
    rng = np.random.default_rng(0)
    critic = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    for p in critic.parameters():
        p.data = torch.tensor(rng.standard_normal(tuple(p.shape)))
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-2)

    def step(real_img):
        real_img.requires_grad = True
        if detached:
            r1_loss = critic(real_img.detach()).pow(2).mean()
        else:
            real_pred = critic(real_img)
            grad_real, = torch.autograd.grad(outputs=real_pred.sum(), inputs=real_img, create_graph=True)
            r1_loss = grad_real.pow(2).reshape(grad_real.shape[0], -1).sum(1).mean()
        critic.zero_grad()
        (5.0 * r1_loss).backward()
        optimizer.step()
        return r1_loss

    run = kiln.compile(step, fullgraph=True) if name == "kiln" else step
    batches = [torch.tensor(rng.standard_normal((5, 3))) for _ in range(2)]
    losses = [run(batch).item() for batch in batches]
    return losses, batches, [p.detach().numpy().copy() for p in critic.parameters()]


def test_a_step_that_marks_its_argument_leaves_it_requiring_grad_with_its_grad(float64_default):
    theirs, ours = _r1_steps("torch"), _r1_steps("kiln")
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    for mine, expected in zip(ours[1], theirs[1], strict=True):
        assert mine.requires_grad and expected.requires_grad and mine.is_leaf
        np.testing.assert_allclose(mine.grad.numpy(), expected.grad.numpy(), rtol=1e-12, atol=1e-15)
    for mine, expected in zip(ours[2], theirs[2], strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-15)


def test_a_marked_argument_the_loss_does_not_reach_requires_grad_without_a_grad(float64_default):
    theirs, ours = _r1_steps("torch", detached=True), _r1_steps("kiln", detached=True)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    for mine, expected in zip(ours[1], theirs[1], strict=True):
        assert mine.requires_grad and expected.requires_grad
        assert mine.grad is None and expected.grad is None
