"""A leaf that requires grad given to a ``kiln.compile``d step whose ``backward()`` reaches it (a PGD attack's
``delta``, passed in at each call) gets its ``.grad`` as torch's eager step gives it: filled at the first call, added
to where the caller kept it, read and written inside the step (``delta.grad.sign()``, ``delta.grad.zero_()``,
``delta.grad = None``). The step refused it before (``backward() ... depends on an argument that requires grad``), so
a ``fullgraph`` attack loop raised and the others ran eagerly."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import libraries


def _attack(name, ending, batches=(4, 4, 4, 4, 4)):
    torch, nn, F = libraries(name)
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    for p in model.parameters():
        p.data = torch.tensor(rng.standard_normal(tuple(p.shape)))
    images, labels = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)

    def step(x, y, delta):
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()
        seen = delta.grad.abs().sum()
        delta.data = (delta + 0.05 * delta.grad.sign()).clamp(-0.1, 0.1)
        if ending == "zero_":
            delta.grad.zero_()
        elif ending == "none":
            delta.grad = None
        return loss.detach(), seen

    run = kiln.compile(step, fullgraph=True) if name == "kiln" else step
    records = []
    deltas = {}
    for n in batches:
        delta = deltas.setdefault(n, torch.zeros(n, 3, dtype=torch.float64).requires_grad_())
        loss, seen = run(torch.tensor(images[:n]), torch.tensor(labels[:n]), delta)
        records.append((loss.item(), seen.item(), None if delta.grad is None else delta.grad.numpy().copy()))
    grads = [p.grad.numpy().copy() for p in model.parameters()]
    return records, {n: d.detach().numpy().copy() for n, d in deltas.items()}, grads, run


@pytest.mark.parametrize("ending", ["zero_", "none", "accumulate"])
def test_attack_step_given_its_delta_as_torch(float64_default, ending):
    theirs = _attack("torch", ending)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no eager fallback
        ours = _attack("kiln", ending)
    for mine, expected in zip(ours[0], theirs[0], strict=True):
        np.testing.assert_allclose(mine[:2], expected[:2], rtol=1e-12)
        assert (mine[2] is None) == (expected[2] is None)
        if expected[2] is not None:
            np.testing.assert_allclose(mine[2], expected[2], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours[1][4], theirs[1][4], rtol=1e-12)
    for mine, expected in zip(ours[2], theirs[2], strict=True):
        np.testing.assert_allclose(mine, expected, rtol=1e-12)
    assert len(ours[3].variants) <= 2  # the first call's delta has no .grad; later ones hold one (fed in), or not


def test_deltas_of_two_batch_sizes(float64_default):
    """The ``.grad`` fed in takes the argument's traced shape: a delta per batch size, each holding its own."""
    batches = (4, 6, 4, 6, 4)
    theirs = _attack("torch", "accumulate", batches)
    ours = _attack("kiln", "accumulate", batches)
    for mine, expected in zip(ours[0], theirs[0], strict=True):
        np.testing.assert_allclose(mine[1], expected[1], rtol=1e-12)
        np.testing.assert_allclose(mine[2], expected[2], rtol=1e-12, atol=1e-15)
    for n in (4, 6):
        np.testing.assert_allclose(ours[1][n], theirs[1][n], rtol=1e-12)
