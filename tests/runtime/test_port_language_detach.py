"""Eager ``detach()`` makes a leaf, as PyTorch's: truncated back-propagation through time (``repackage_hidden`` in
pytorch/examples' word_language_model) carries a detached state into the next batch after the weights were updated in
place, and the next ``backward()`` must neither walk nor recompute the ops before the detach (it used to recompute
them from the updated weights: right loss, wrong gradient). Also ``np.asarray(parameter)`` outside a trace."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from oracles import require_torch


def _truncated_bptt(lib, parameter, x, w0, steps=3, lr=0.1):
    """A tanh recurrence whose state is detached between steps, updated with ``p.add_(p.grad, alpha=-lr)``."""
    weight = parameter(lib.tensor(w0.copy()))
    state = lib.zeros(x.shape[0], w0.shape[1], dtype=lib.float64)
    history = []
    for _ in range(steps):
        state = state.detach()
        new_state = lib.tanh(lib.tensor(x) @ weight + state @ weight)
        loss = (new_state ** 2).sum()
        weight.grad = None
        loss.backward()
        history.append((loss.item(), np.asarray(weight.grad).copy()))
        with lib.no_grad():
            weight.add_(weight.grad, alpha=-lr)
        state = new_state
    return history


def test_detached_state_after_an_in_place_update_gives_torchs_gradients():
    torch = require_torch()
    rng = np.random.default_rng(0)
    x, w0 = rng.normal(size=(2, 3)), rng.normal(size=(3, 3))
    ours = _truncated_bptt(kiln, nn.Parameter, x, w0)
    theirs = _truncated_bptt(torch, torch.nn.Parameter, x, w0)
    for (loss, grad), (torch_loss, torch_grad) in zip(ours, theirs):
        assert loss == pytest.approx(torch_loss, rel=1e-12)
        np.testing.assert_allclose(grad, torch_grad, rtol=1e-10, atol=1e-12)


def test_an_eager_detach_keeps_no_chain_and_shares_the_values():
    weight = nn.Parameter(np.array([1.0, 2.0]))
    hidden = weight * 3.0
    detached = hidden.detach()
    assert detached.value.producer is None and np.shares_memory(detached.numpy(), hidden.numpy())
    (detached * weight).sum().backward()
    np.testing.assert_array_equal(weight.grad, [3.0, 6.0])


def test_a_traced_detach_is_still_a_stop_gradient():
    graph = kiln.trace(lambda x: x.detach() * x, kiln.TensorSpec((3,), "float32"))
    assert [op.name for op in graph.ops].count("tensor.stop_gradient") == 1


def test_numpy_reads_a_parameter_outside_a_trace():
    parameter = nn.Parameter(np.array([1.0, -2.0]))
    np.testing.assert_array_equal(np.asarray(parameter), [1.0, -2.0])
    np.testing.assert_array_equal(np.array(parameter.detach()), [1.0, -2.0])
    assert np.asarray(parameter, dtype=np.float32).dtype == np.float32


def test_an_in_place_update_between_forward_and_backward_is_refused_as_torch_refuses():
    torch = require_torch()
    for lib, parameter in ((kiln, nn.Parameter), (torch, torch.nn.Parameter)):
        weight = parameter(lib.tensor(np.array([1.0, 2.0])))
        loss = (weight * weight).sum()
        with lib.no_grad():
            weight.add_(1.0)
        with pytest.raises(RuntimeError if lib is torch else kiln.TraceError, match="modified by an inplace|updated in place"):
            loss.backward()


def test_an_update_through_data_is_not_tracked_as_in_torch():
    torch = require_torch()
    grads = []
    for lib, parameter in ((kiln, nn.Parameter), (torch, torch.nn.Parameter)):
        weight = parameter(lib.tensor(np.array([1.0, 2.0])))
        loss = (weight * weight).sum()
        weight.data.add_(1.0)  # .data bypasses the version counter: the gradient reads the new values
        loss.backward()
        grads.append(np.asarray(weight.grad))
    np.testing.assert_array_equal(grads[0], grads[1])
