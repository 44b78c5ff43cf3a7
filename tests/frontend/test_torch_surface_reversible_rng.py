"""What reformer_pytorch's ``reversible.py`` (and revtorch's, and the memory-saving checkpoints written after them)
imports beyond ``checkpoint``, against PyTorch 2.13: ``from torch.autograd.function import Function``,
``torch.cuda._initialized`` and ``torch.utils.checkpoint.get_device_states``/``set_device_states``, in
``Deterministic``'s replay of the forward's random draws (``kiln/autograd/function.py``, ``kiln/cuda.py``,
``frontend/checkpoint.py``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_function_from_the_autograd_function_module(name):
    torch, nn, F = libraries(name)
    Function = torch.autograd.function.Function
    assert Function is torch.autograd.Function and torch.autograd.function.FunctionCtx is not None

    class Cube(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return 3 * x ** 2 * grad

    x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64, requires_grad=True)
    Cube.apply(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 12.0, 0.75])


def test_cuda_is_never_initialized_as_torchs_cpu_wheel():
    assert kiln.cuda._initialized is False
    assert libraries("torch")[0].cuda._initialized is False


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_device_states_of_tensors_that_are_on_no_accelerator(name):
    torch, nn, F = libraries(name)
    states = torch.utils.checkpoint.get_device_states(torch.zeros(2), 3, None, [torch.ones(1)])
    assert states == ([], [])
    assert torch.utils.checkpoint.set_device_states(*states) is None


def test_setting_a_device_state_kiln_never_gave_is_refused_saying_what_to_do():
    with pytest.raises(kiln.KilnError, match="kiln keeps no per-device random states.*kiln.set_rng_state"):
        kiln.utils.checkpoint.set_device_states([0], [kiln.get_rng_state()])


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_deterministic_replays_the_forwards_draws(name):
    """``Deterministic``: ``record_rng`` keeps ``get_rng_state()`` (and the device states where
    ``torch.cuda._initialized``); ``set_rng`` replays under ``fork_rng``, drawing the same dropout mask, and the
    generator continues afterwards as if nothing had been replayed."""
    torch, nn, F = libraries(name)
    torch.manual_seed(3)
    x = torch.ones(4, 6, dtype=torch.float64)
    cpu_state = torch.get_rng_state()
    devices, states = torch.utils.checkpoint.get_device_states(x) if torch.cuda._initialized else ([], [])
    first = F.dropout(x, 0.5, training=True)
    after_first = torch.rand(3)
    torch.manual_seed(3)
    F.dropout(x, 0.5, training=True)
    with torch.random.fork_rng(devices=devices, enabled=True):
        torch.set_rng_state(cpu_state)
        torch.utils.checkpoint.set_device_states(devices, states)
        replayed = F.dropout(x, 0.5, training=True)
    np.testing.assert_array_equal(replayed.numpy(), first.numpy())
    np.testing.assert_array_equal(torch.rand(3).numpy(), after_first.numpy())
