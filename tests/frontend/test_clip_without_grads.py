"""The clipping helpers when no parameter has a ``.grad``, as torch 2.13's: ``clip_grad_norm_`` and ``get_total_norm``
give ``tensor(0.)`` in the default dtype and change nothing, ``clip_grads_with_norm_`` does nothing, and
``clip_grad_value_`` raises a ``RuntimeError``; eagerly and inside a ``kiln.compile``d training step."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import torch_twins


def _name(dtype) -> str:
    return str(dtype).split(".")[-1]


def _net(lib):
    return lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Linear(4, 2)).double()


def test_the_norm_of_no_grads_is_torchs_zero_in_the_default_dtype(default_dtype):
    torch, model, twin = torch_twins(_net)
    for ours, theirs in [(kiln.nn.utils.clip_grad_norm_(model.parameters(), 1.0),
                          torch.nn.utils.clip_grad_norm_(twin.parameters(), 1.0)),
                         (kiln.nn.utils.get_total_norm([]), torch.nn.utils.get_total_norm([]))]:
        assert isinstance(ours, kiln.Tensor) and ours.shape == () and _name(ours.dtype) == _name(theirs.dtype)
        assert str(theirs.dtype).endswith(default_dtype) and ours.item() == theirs.item() == 0.0
    assert kiln.nn.utils.clip_grads_with_norm_(model.parameters(), 1.0, kiln.tensor(2.0)) is None
    assert torch.nn.utils.clip_grads_with_norm_(twin.parameters(), 1.0, torch.tensor(2.0)) is None
    assert all(p.grad is None for p in model.parameters()) and all(q.grad is None for q in twin.parameters())


def test_clip_grad_value_of_no_grads_raises_a_runtime_error_as_torchs():
    torch, model, twin = torch_twins(_net)
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_value_(twin.parameters(), 0.5)
    with pytest.raises(RuntimeError, match=r"clip_grad_value_: no parameter has a .grad.*loss.backward\(\).*clip_grad_value=0.5"):
        kiln.nn.utils.clip_grad_value_(model.parameters(), 0.5)
    with pytest.raises(kiln.KilnError):
        kiln.nn.utils.clip_grad_value_([], 0.5)


def _step(lib, model, optimizer, clip_before_backward):
    """zero_grad(set_to_none) then a clip before backward (no .grad yet: torch's zero norm) and one after."""

    def train_step(x):
        optimizer.zero_grad()
        before = clip_before_backward(model.parameters())
        loss = (model(x) ** 2).mean()
        loss.backward()
        after = lib.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        optimizer.step()
        return loss, before, after

    return train_step


def test_a_compiled_step_that_clips_before_backward_returns_torchs_zero(default_dtype):
    torch, model, twin = torch_twins(_net, seed=2)
    optimizer, twin_optimizer = kiln.optim.SGD(model.parameters(), lr=0.3), torch.optim.SGD(twin.parameters(), lr=0.3)
    compiled = kiln.compile(_step(kiln, model, optimizer, lambda ps: kiln.nn.utils.clip_grad_norm_(ps, 1.0)))
    eager = _step(torch, twin, twin_optimizer, lambda ps: torch.nn.utils.clip_grad_norm_(ps, 1.0))
    rng = np.random.default_rng(4)
    for x in [rng.standard_normal((5, 3)) for _ in range(3)]:
        ours, theirs = compiled(kiln.tensor(x)), eager(torch.tensor(x))
        assert _name(ours[1].dtype) == _name(theirs[1].dtype) and float(ours[1]) == float(theirs[1]) == 0.0
        np.testing.assert_allclose([float(ours[0]), float(ours[2])], [float(theirs[0].detach()), float(theirs[2])], rtol=1e-12)
    assert float(theirs[2]) > 0.1  # the clip after backward acted
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_a_compiled_step_that_clips_values_before_backward_raises_as_torch():
    torch, model, twin = torch_twins(_net)
    optimizer, twin_optimizer = kiln.optim.SGD(model.parameters(), lr=0.3), torch.optim.SGD(twin.parameters(), lr=0.3)
    with pytest.raises(RuntimeError):
        _step(torch, twin, twin_optimizer, lambda ps: torch.nn.utils.clip_grad_value_(ps, 0.5))(torch.ones(2, 3))
    compiled = kiln.compile(_step(kiln, model, optimizer, lambda ps: kiln.nn.utils.clip_grad_value_(ps, 0.5)))
    with pytest.raises(RuntimeError, match="clip_grad_value_: no parameter has a .grad"):
        compiled(kiln.ones(2, 3, dtype=kiln.float64))
