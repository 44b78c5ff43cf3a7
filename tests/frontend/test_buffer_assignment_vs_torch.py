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


def _leaky(lib):
    """snnTorch's ``Leaky`` pattern: the membrane kept in a buffer registered as ``zeros(0)``, assigned a tensor of the
    input's shape, then the integrated value at each step, and returned (the caller keeps each step's)."""

    class Leaky(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lib.nn.Linear(3, 3)
            self.register_buffer("mem", lib.zeros(0), False)

        def forward(self, x):
            if not self.mem.shape == x.shape:
                self.mem = lib.zeros_like(x)
            self.mem = 0.9 * self.mem + self.lin(x)
            return self.mem

    return Leaky()


def _unrolled(lib, model, x, steps=3):
    """The time loop: each step's membrane, stacked, and the loss of them all."""
    model.mem = lib.zeros(0)
    mems = [model(x) for _ in range(steps)]
    return lib.stack(mems), (lib.stack(mems) ** 2).sum()


def test_a_buffer_assigned_a_tensor_that_requires_grad_is_that_tensor_as_torch(float64_default):
    """PyTorch's buffer is the tensor assigned, gradient history included: the loss of the unrolled loop reaches the
    weights through every step's read of ``self.mem`` (kiln kept only the values: the gradient of one step)."""
    torch = float64_default
    kiln.manual_seed(0)
    records = []
    for lib, model in zip((kiln, torch), (_leaky(kiln), _leaky(torch))):
        if lib is torch:
            model.load_state_dict({k: torch.tensor(v) for k, v in _state(ours)})
        mems, loss = _unrolled(lib, model, lib.tensor(X))
        loss.backward()
        assert model.mem.requires_grad
        records.append([mems.detach().numpy(), model.lin.weight.grad.numpy(), model.state_dict()["lin.bias"].numpy()])
        ours = model
    for a, b in zip(*records):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_compiled_buffer_reassigned_each_step_is_read_as_torch(float64_default):
    """In ``kiln.compile``: each step's ``self.mem`` is the tensor assigned then (kiln read the buffer's last value for
    all of them), and the buffer registered as ``zeros(0)`` takes the new shape when written back (kiln raised a
    broadcast error there); the next (eager) steps start from it."""
    torch = float64_default
    kiln.manual_seed(0)
    ours, theirs = _leaky(kiln), _leaky(torch)
    theirs.load_state_dict({name: torch.tensor(np.array(value)) for name, value in ours.state_dict().items()})
    # dynamic=False: a symbolic batch dim compares unequal to every number (``self.mem.shape == x.shape``), see
    # e2e/test_porting_probes_xlstm_snn.py's test_compiled_shape_comparison_with_the_batch_dim_as_torch
    mems = kiln.compile(lambda x: kiln.stack([ours(x) for _ in range(3)]), fullgraph=True, dynamic=False)(kiln.tensor(X))
    expected = torch.stack([theirs(torch.tensor(X)) for _ in range(3)])
    np.testing.assert_allclose(mems.numpy(), expected.detach().numpy(), rtol=1e-12)
    assert tuple(ours.mem.shape) == tuple(theirs.mem.shape) == X.shape
    np.testing.assert_allclose(np.asarray(ours.mem.data), theirs.mem.detach().numpy(), rtol=1e-12)
    with kiln.no_grad(), torch.no_grad():
        np.testing.assert_allclose(ours(kiln.tensor(X)).numpy(), theirs(torch.tensor(X)).numpy(), rtol=1e-12)
