"""A ``kiln.compile``'d function that writes a tensor argument in place (SwAV's queue, ``queue[i, bs:] =
queue[i, :-bs].clone()``; ``x.add_(1)``; ``q.mul_(2)`` in a step returning None) writes the caller's tensor at every
call, as ``torch.compile`` keeps an input's mutation; and a Python value it returns beside its tensors (SwAV's
``return loss, use_the_queue``, a dict with a count) comes back as traced, as ``torch.compile`` returns it. kiln
dropped the writes silently (the queue stayed zeros, so SwAV's compiled step never used it) and refused the bool
("the compiled function's result must be a kiln Tensor"). Values vs torch 2.13 eager, float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def enqueue(lib, x, queue, use_the_queue):
    """SwAV's queue: shift by the batch, write the batch first, read it (the new values) in the result."""
    bs = x.shape[0]
    queue[0, bs:] = queue[0, :-bs].clone()
    queue[0, :bs] = x
    return (queue[0] * 2).sum(), use_the_queue or bs > 1, {"count": bs, "name": "queue"}


def scale_in_place(lib, x, total):
    total.mul_(2)
    total.add_(x)


def _run(lib, fn, steps, *state):
    rng = np.random.default_rng(0)
    results = [fn(lib.tensor(rng.standard_normal((2, 3))), *state) for _ in range(steps)]
    return results, [np.array(s.numpy()) if hasattr(s, "numpy") else s for s in state]


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
def test_an_argument_written_in_place_is_written_at_each_call_as_torch(compiled, float64_default):
    torch = float64_default
    fn = kiln.compile(lambda x, q, u: enqueue(kiln, x, q, u), fullgraph=True) if compiled else \
        (lambda x, q, u: enqueue(kiln, x, q, u))
    ours, ours_state = _run(kiln, fn, 3, kiln.zeros(1, 6, 3), False)
    theirs, theirs_state = _run(torch, lambda x, q, u: enqueue(torch, x, q, u), 3, torch.zeros(1, 6, 3), False)
    np.testing.assert_allclose(ours_state[0], theirs_state[0], rtol=1e-12)
    for (loss, used, extras), (their_loss, their_used, their_extras) in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(loss.item(), their_loss.item(), rtol=1e-12)
        assert used is their_used is True and extras == their_extras == {"count": 2, "name": "queue"}


def test_a_step_returning_none_writes_its_argument_as_torch(float64_default):
    torch = float64_default
    ours = _run(kiln, kiln.compile(lambda x, t: scale_in_place(kiln, x, t), fullgraph=True), 3, kiln.ones(2, 3))
    theirs = _run(torch, lambda x, t: scale_in_place(torch, x, t), 3, torch.ones(2, 3))
    assert ours[0] == theirs[0] == [None] * 3
    np.testing.assert_allclose(ours[1][0], theirs[1][0], rtol=1e-12)


def test_a_training_step_writing_its_queue_argument_trains_as_torch(float64_default):
    """A whole step (zero_grad, loss, backward, SGD) that also enqueues detached features into a queue argument and
    reads the queue in its loss, as SwAV's: the losses, the weight and the queue as torch's."""
    torch = float64_default
    records = []
    for lib in (kiln, torch):
        weight = lib.nn.Parameter(lib.tensor(np.linspace(-1.0, 1.0, 9).reshape(3, 3)))
        optimizer = lib.optim.SGD([weight], lr=0.1)

        def step(x, queue):
            optimizer.zero_grad()
            features = x @ weight
            loss = (features @ queue[0].t()).logsumexp(-1).mean() + features.pow(2).mean()
            loss.backward()
            optimizer.step()
            with lib.no_grad():
                queue[0, 2:] = queue[0, :-2].clone()
                queue[0, :2] = features.detach()
            return loss

        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        queue, rng = lib.zeros(1, 6, 3), np.random.default_rng(1)
        losses = [run(lib.tensor(rng.standard_normal((2, 3))), queue).item() for _ in range(4)]
        records.append((losses, np.array(weight.detach().numpy()), np.array(queue.numpy())))
    for ours, theirs in zip(*records, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_a_view_of_the_written_argument_follows_as_torch():
    """The caller's view of the argument sees the write, as after an eager in-place write."""
    require_torch()
    queue = kiln.zeros(2, 3)
    first_row = queue[0]
    kiln.compile(lambda x, q: q.add_(x), fullgraph=True)(kiln.ones(3), queue)
    np.testing.assert_array_equal(np.asarray(first_row.numpy()), np.ones(3))


def _cache_writer(lib, linear):
    def forward(x, cache):
        y = linear(x)
        cache.copy_(y.detach())
        return y.pow(2).sum()
    return forward


def test_a_call_with_gradients_enabled_writing_its_argument_runs_eagerly_as_torch(float64_default):
    """Called with gradients enabled (its backward outside the call), the compiled forward does not write arguments
    back: it says so and runs eagerly, so the write and the gradients are torch's (it dropped the write silently);
    with ``fullgraph`` it raises."""
    torch = float64_default
    results = []
    for lib in (kiln, torch):
        linear = lib.nn.Linear(3, 2)
        with lib.no_grad():
            linear.weight.copy_(lib.tensor(np.linspace(-1.0, 1.0, 6).reshape(2, 3)))
            linear.bias.copy_(lib.tensor([0.5, -0.25]))
        forward, cache = _cache_writer(lib, linear), lib.zeros(2, 2)
        if lib is kiln:
            with pytest.raises(kiln.TraceError, match="writes its argument 1 in place.*gradients enabled"):
                kiln.compile(forward, fullgraph=True)(kiln.ones(2, 3), cache)
            with pytest.warns(UserWarning, match="runs eagerly.*writes its argument 1 in place"):
                loss = kiln.compile(forward)(kiln.ones(2, 3), cache)
        else:
            loss = forward(torch.ones(2, 3), cache)
        loss.backward()
        results.append((np.array(cache.numpy()), np.array(linear.weight.grad.numpy())))
    for ours, theirs in zip(*results, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)
