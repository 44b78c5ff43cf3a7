"""Porting probes: whole training steps compiled as PyTorch users write them (``@torch.compile`` over
``loss.backward()`` and ``optimizer.step()``), run with ``kiln.compile`` and, from the same source, in torch eager
(the oracle) in float64: losses, parameters, ``.grad`` and optimizer state agree to 1e-12 after several calls.

Patterns: torch's compiled-optimizer tutorial (only ``opt.step()`` compiled, a scheduler outside), a GAN step with
two optimizers, AdamW parameter groups, a metrics dict, gradient accumulation across calls and over micro-batches,
``train()``/``eval()`` and ``requires_grad_`` toggled between calls, ``add_param_group`` mid-run, and what cannot be
traced (``.item()``: eager, warned; ``fullgraph=True``: a clear error)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import KilnError
from oracles import torch_twins

TOLERANCE = dict(rtol=1e-12, atol=1e-12)


def _mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(6, 16), lib.nn.Tanh(), lib.nn.Linear(16, 3)).double()


def _batches(count=4, size=8, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, 6)), rng.integers(0, 3, size)) for _ in range(count)]


def _assert_same(model, twin, optimizer=None, twin_optimizer=None):
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


def _classifier_step(lib, net, optimizer, **zero_grad):
    def train_step(x, y):
        optimizer.zero_grad(**zero_grad)
        loss = lib.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        return loss.detach()

    return train_step


def _lockstep(step, twin_step, batches, before_call=lambda index: None):
    """Call both steps on each batch (``before_call(index)`` first); their losses agree."""
    import torch

    for index, (x, y) in enumerate(batches):
        before_call(index)
        ours, theirs = step(kiln.tensor(x), kiln.tensor(y)), twin_step(torch.tensor(x), torch.tensor(y))
        np.testing.assert_allclose(float(ours), float(theirs), **TOLERANCE)


def test_a_group_added_mid_run_and_a_layer_frozen_then_unfrozen_train_as_torch():
    """``opt.add_param_group`` after two steps: the new group's Adam steps count from 1 (torch.optim's per-parameter
    ``state['step']``; kiln counted the optimizer's earlier steps, eager and compiled alike); the first layer frozen for
    two calls, then unfrozen."""
    torch, model, twin = torch_twins(_mlp, seed=8)
    optimizer, twin_optimizer = kiln.optim.Adam(model[0].parameters(), lr=0.05), torch.optim.Adam(twin[0].parameters(), lr=0.05)
    step = kiln.compile(_classifier_step(kiln, model, optimizer))

    def before_call(index):
        if index == 2:
            optimizer.add_param_group({"params": model[2].parameters(), "lr": 0.01})
            twin_optimizer.add_param_group({"params": twin[2].parameters(), "lr": 0.01})
        for net in (model, twin):
            net[0].requires_grad_(index not in (3, 4))

    _lockstep(step, _classifier_step(torch, twin, twin_optimizer), _batches(6), before_call)
    _assert_same(model, twin, optimizer, twin_optimizer)
    assert all(step.variants.values())
