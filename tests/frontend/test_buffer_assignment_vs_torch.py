"""Assigning a tensor to a registered buffer's name in ``forward`` (``self._ema_cluster_size = ...``, as VQ-VAE's EMA
codebook and many running averages write it) keeps it a buffer, as PyTorch's ``Module.__setattr__``: it stays in
``state_dict`` and ``named_buffers`` in its place, with the new values, eagerly, in ``kiln.compile`` and in a compiled
training step (kiln dropped it from the buffers, so checkpoints lost it)."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import require_torch


def _model(lib):
    class RunningMean(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lib.nn.Linear(3, 3)
            self.register_buffer("running", lib.zeros(3))
            self.register_buffer("steps", lib.zeros((), dtype=lib.int64))

        def forward(self, x):
            self.running = self.running * 0.5 + 0.5 * x.mean(0)
            self.steps = self.steps + 1
            return self.lin(x) + self.running

    return RunningMean()


def _twins(torch):
    kiln.manual_seed(0)
    ours, theirs = _model(kiln), _model(torch)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        q.data = torch.tensor(np.array(p.data))
    return ours, theirs


X = np.linspace(-1, 1, 6).reshape(2, 3)


def _state(model):
    return [(name, np.asarray(value.detach().numpy() if hasattr(value, "detach") else value)) for name, value in model.state_dict().items()]


def _same_state(ours, theirs):
    a, b = _state(ours), _state(theirs)
    assert [n for n, _ in a] == [n for n, _ in b]
    for (name, x), (_, y) in zip(a, b):
        assert x.dtype == y.dtype, name
        np.testing.assert_allclose(x, y, rtol=1e-12, err_msg=name)


def test_eager_assignment_keeps_the_buffer_as_torch(float64_default):
    torch = float64_default
    ours, theirs = _twins(torch)
    before, their_before = ours.running, theirs.running
    for _ in range(3):
        np.testing.assert_allclose(ours(kiln.tensor(X)).detach().numpy(), theirs(torch.tensor(X)).detach().numpy(), rtol=1e-12)
    _same_state(ours, theirs)
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()] == ["running", "steps"]
    np.testing.assert_array_equal(np.asarray(before.data), their_before.numpy())  # rebound: the old tensor is unchanged


def test_compiled_forward_writes_the_assigned_buffer_back(float64_default):
    torch = float64_default
    ours, theirs = _twins(torch)
    compiled = kiln.compile(ours)
    for _ in range(2):
        np.testing.assert_allclose(compiled(X), theirs(torch.tensor(X)).detach().numpy(), rtol=1e-12)
    _same_state(ours, theirs)


def test_compiled_training_step_writes_the_assigned_buffer_back(float64_default):
    torch = float64_default
    ours, theirs = _twins(torch)
    step = kiln.compile_train_step(ours, lambda out, y: ((out - y) ** 2).mean(), kiln.optim.SGD(ours.parameters(), lr=0.1))
    optimizer = torch.optim.SGD(theirs.parameters(), lr=0.1)
    for _ in range(2):
        step(X, np.zeros((2, 3)))
        optimizer.zero_grad()
        ((theirs(torch.tensor(X)) - 0) ** 2).mean().backward()
        optimizer.step()
    _same_state(ours, theirs)
