"""Eager tensors a ``kiln.compile``'d function reads without being given them (a closure's rollout buffer, a global
mask) are read at every call, as ``torch.compile`` lifts them to graph inputs: written in place between calls, the
compiled function sees the new values (it used to keep the values from when it was traced)."""

import warnings

import numpy as np

import kiln
from oracles import require_torch


def test_a_closure_tensor_written_in_place_is_read_at_each_call():
    scale = kiln.tensor([1.0, 2.0])
    mask = kiln.tensor([True, False])
    x = kiln.tensor([1.0, 1.0])
    weighted = kiln.compile(lambda x: (x * scale).sum(), fullgraph=True)
    masked = kiln.compile(lambda x: kiln.where(mask, x, 0.0).sum() + (mask == True).sum(), fullgraph=True)  # noqa: E712
    assert (weighted(x).item(), masked(x).item()) == (3.0, 2.0)
    scale.add_(1)
    mask[1] = True
    assert (weighted(x).item(), masked(x).item()) == (5.0, 4.0)
    scale[0] = -1.0
    assert weighted(x).item() == 2.0


def test_values_the_trace_read_are_guarded():
    """bincount's size comes from its input's values when traced: a call finding them changed traces again."""
    index = kiln.tensor([0, 1, 1])
    counts = kiln.compile(lambda w: kiln.bincount(index, minlength=4).to(w.dtype) * w)
    w = kiln.ones(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # where bincount cannot trace, the call runs eagerly: the numbers must hold
        assert counts(w).tolist() == [1.0, 2.0, 0.0, 0.0]
        index[2] = 3
        assert counts(w).tolist() == [1.0, 1.0, 0.0, 1.0]


def _rollout_training(lib, compile_step):
    """CleanRL's pattern: a buffer in the closure filled in place each iteration, a compiled update reading it."""
    lib.manual_seed(0)
    model = lib.nn.Linear(3, 1).double()
    with lib.no_grad():
        model.weight.copy_(lib.tensor([[0.1, -0.2, 0.3]], dtype=lib.float64))
        model.bias.fill_(0.05)
    optimizer = lib.optim.Adam(model.parameters(), lr=0.05)
    observations = lib.zeros((4, 3), dtype=lib.float64)
    returns = lib.zeros(4, dtype=lib.float64)

    def update():
        optimizer.zero_grad()
        loss = ((model(observations).squeeze(1) - returns) ** 2).mean()
        loss.backward()
        optimizer.step()
        return loss

    step = compile_step(update)
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(5):
        for t in range(4):
            observations[t] = lib.tensor(rng.normal(size=3))
            returns[t] = float(rng.normal())
        losses.append(step().item())
    return losses, model.weight.detach().numpy().copy()


def test_a_compiled_step_reading_a_buffer_filled_in_place_trains_as_torch():
    torch = require_torch()
    theirs = _rollout_training(torch, lambda f: f)
    ours = _rollout_training(kiln, lambda f: kiln.compile(f, fullgraph=True))
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-12)
    assert len(set(ours[0])) == 5  # the losses differ: each call saw the new rollout
