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


def _forward_reading_a_closure_mask(lib, compiled):
    """A compiled forward (its backward by loss.backward()) reading a closure tensor that changes between calls."""
    lib.manual_seed(0)
    layer = lib.nn.Linear(3, 2).double()
    with lib.no_grad():
        layer.weight.copy_(lib.tensor([[0.1, -0.2, 0.3], [0.4, 0.5, -0.6]], dtype=lib.float64))
    keep = lib.tensor([1.0, 0.0], dtype=lib.float64)

    class Masked(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            return (self.layer(x) * keep).sum()

    masked = kiln.compile(Masked()) if compiled else Masked()
    x = lib.ones(4, 3, dtype=lib.float64)
    grads = []
    for column in range(2):
        keep.zero_()
        keep[column] = 1.0
        layer.zero_grad()
        masked(x).backward()
        grads.append(layer.weight.grad.numpy().copy())
    return grads


def test_a_compiled_forward_for_backward_sees_a_closure_tensor_change_as_torch():
    torch = require_torch()
    theirs = _forward_reading_a_closure_mask(torch, compiled=False)
    ours = _forward_reading_a_closure_mask(kiln, compiled=True)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-15)
    assert not np.allclose(ours[0], ours[1])


def test_compiled_outputs_made_under_no_grad_or_detached_require_no_grad_as_torch():
    class Memory(kiln.nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = kiln.nn.Linear(3, 3)

        def forward(self, x):
            hidden = self.layer(x)
            with kiln.no_grad():
                memory = hidden * 1
            return hidden.sum(), memory, hidden.detach()

    loss, memory, detached = kiln.compile(Memory(), fullgraph=True)(kiln.ones(2, 3))
    assert loss.requires_grad and not memory.requires_grad and not detached.requires_grad

