"""Shared pieces of the compiled-step porting probes (``test_porting_probes_compiled_steps*.py``): a small model
for either library, batches, the lockstep of a kiln step and its torch twin, and the comparison of parameters,
``.grad`` and optimizer state to 1e-12."""

from __future__ import annotations

import numpy as np

import kiln

TOLERANCE = dict(rtol=1e-12, atol=1e-12)


def mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(6, 16), lib.nn.Tanh(), lib.nn.Linear(16, 3)).double()


def batches(count=4, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, 6)), rng.integers(0, 3, size)) for _ in range(count)]


def assert_same(model, twin, optimizer=None, twin_optimizer=None):
    """Parameters, ``.grad`` (None where torch's is) and each optimizer state entry, to 1e-12."""
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), **TOLERANCE)
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            np.testing.assert_allclose(np.asarray(p.grad), q.grad.detach().numpy(), **TOLERANCE)
        if optimizer is not None:
            theirs = twin_optimizer.state.get(q, {})
            for name, array in optimizer.state.get(id(p), {}).items():
                np.testing.assert_allclose(array, theirs[name].numpy(), **TOLERANCE)


def classifier_step(lib, net, optimizer, **zero_grad):
    def train_step(x, y):
        optimizer.zero_grad(**zero_grad)
        loss = lib.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return train_step


def lockstep(step, twin_step, batches, before_call=lambda index: None):
    """Call both steps on each batch (``before_call(index)`` first); their losses agree."""
    import torch

    for index, (x, y) in enumerate(batches):
        before_call(index)
        ours, theirs = step(kiln.tensor(x), kiln.tensor(y)), twin_step(torch.tensor(x), torch.tensor(y))
        np.testing.assert_allclose(float(ours), float(theirs), **TOLERANCE)


def counting(fn, traces):
    """``fn`` noting each run of its Python in ``traces``: once per trace under ``kiln.compile``, once per call in torch.
    ``kiln.compile`` replays a function's changes to the lists it reaches after each call, as ``torch.compile`` does
    (``runtime/container_stores.py``), which would count calls; the list is reached here only through its bound
    ``append`` (a builtin method, which kiln does not follow), so the count stays one of traces."""
    note = traces.append

    def counted(*args):
        note(1)
        return fn(*args)

    return counted


def bn_net(lib):
    layers = [lib.nn.Linear(6, 16), lib.nn.BatchNorm1d(16), lib.nn.ReLU(), lib.nn.Dropout(0.0), lib.nn.Linear(16, 3)]
    return lib.nn.Sequential(*layers).double()
