"""What porting dcgan/main.py and vae/main.py needed from kiln's ``torch.*`` surface, checked against torch in float64.

Outside a trace the creation functions give eager tensors (``label = kiln.full((b,), 1.0)``, ``label.fill_(0)``,
``real.size(0)``, ``real.to(device)``) and, with ``requires_grad=True``, leaves that ``backward()`` fills;
``kiln.randn(..., device=device)`` takes PyTorch's ``device`` and ``kiln.save(obj, path)`` PyTorch's argument order.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.frontend.tensor import Tensor
from oracles import require_torch

TIGHT = dict(rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("create", [
    lambda lib: lib.full((4,), 1, dtype=lib.float64),
    lambda lib: lib.zeros(2, 3),
    lambda lib: lib.ones((2, 3), dtype=lib.float64),
    lambda lib: lib.arange(5),
    lambda lib: lib.eye(3),
    lambda lib: lib.linspace(0.0, 1.0, 5),
    lambda lib: lib.tensor([[1.5, 2.0]]),
    lambda lib: lib.zeros_like(lib.tensor([1.0, 2.0])),
], ids=["full", "zeros", "ones", "arange", "eye", "linspace", "tensor", "zeros_like"])
def test_creation_outside_a_trace_gives_an_eager_tensor_with_torchs_values(create):
    torch = require_torch()
    ours, theirs = create(kiln), create(torch)
    assert isinstance(ours, Tensor) and ours.size() == tuple(theirs.size()) and ours.size(0) == theirs.size(0)
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "kiln.")
    np.testing.assert_array_equal(np.asarray(ours.to(kiln.device("cpu"))), theirs.numpy())


def test_a_filled_label_feeds_bce_and_its_gradient_as_torchs():
    """dcgan's label: ``full((b,), real_label, dtype=real.dtype)``, a BCE backward, ``fill_(fake_label)``, another."""
    torch = require_torch()
    logits = np.random.default_rng(0).normal(size=6)
    ours_w, theirs_w = nn.Parameter(logits.copy()), torch.tensor(logits, requires_grad=True)
    for lib, w, sigmoid, bce in ((kiln, ours_w, lambda t: t.sigmoid(), nn.BCELoss()),
                                 (torch, theirs_w, torch.sigmoid, torch.nn.BCELoss())):
        label = lib.full((6,), 1, dtype=lib.float64)
        bce(sigmoid(w * 2.0), label).backward()
        label.fill_(0)
        bce(sigmoid(w * 3.0), label).backward()
    np.testing.assert_allclose(ours_w.grad, theirs_w.grad.numpy(), **TIGHT)


def test_an_eager_tensor_is_a_constant_in_a_trace():
    offset = kiln.arange(3).to(kiln.float32)
    model = kiln.compile(lambda x: x + offset)
    np.testing.assert_array_equal(model(np.ones((2, 3), np.float32)), np.ones((2, 3)) + np.arange(3))


def test_tensor_copies_its_data_and_from_numpy_shares_it():
    array = np.zeros(3)
    copied, shared = kiln.tensor(array), kiln.from_numpy(array)
    array[0] = 5.0
    assert copied.tolist() == [0.0, 0.0, 0.0] and shared.tolist() == [5.0, 0.0, 0.0]


def test_random_draws_take_device_as_torchs():
    cpu = kiln.device("cpu")
    kiln.manual_seed(0)
    draws = [kiln.randn(4, 2, 1, 1, device=cpu), kiln.rand(3, device=cpu), kiln.randint(0, 5, (3,), device=cpu),
             kiln.randn_like(kiln.zeros(2, 2), device=cpu), kiln.rand_like(kiln.zeros(2), device=cpu)]
    assert [tuple(d.shape) for d in draws] == [(4, 2, 1, 1), (3,), (3,), (2, 2), (2,)]
    kiln.manual_seed(0)
    np.testing.assert_array_equal(np.asarray(kiln.randn(4, 2, 1, 1)), np.asarray(draws[0]))


def test_save_takes_torchs_argument_order_too(tmp_path):
    model = nn.Linear(3, 2)
    kiln.save(model.state_dict(), tmp_path / "torch_order.pth")
    kiln.save(str(tmp_path / "kiln_order.npz"), model.state_dict())
    for name in ("torch_order.pth", "kiln_order.npz"):
        restored = nn.Linear(3, 2)
        restored.load_state_dict(kiln.load(tmp_path / name))
        np.testing.assert_array_equal(restored.weight.data, model.weight.data)
    kiln.save(str(tmp_path / "a_string.npz"), "a string")  # a path first stays kiln's order, even for a string tree
    assert kiln.load(tmp_path / "a_string.npz") == "a string"


@pytest.mark.parametrize("create", [
    lambda lib: lib.zeros(2, 3, dtype=lib.float64, requires_grad=True),
    lambda lib: lib.full((3,), 0.5, dtype=lib.float64, requires_grad=True),
    lambda lib: lib.ones_like(lib.zeros(2, dtype=lib.float64), requires_grad=True),
    lambda lib: lib.arange(4.0, dtype=lib.float64, requires_grad=True),
    lambda lib: lib.linspace(-1.0, 1.0, 5, dtype=lib.float64, requires_grad=True),
    lambda lib: lib.eye(2, dtype=lib.float64, requires_grad=True),
], ids=["zeros", "full", "ones_like", "arange", "linspace", "eye"])
def test_requires_grad_makes_a_leaf_that_backward_fills_as_torchs(create):
    torch = require_torch()
    ours, theirs = create(kiln), create(torch)
    (ours.exp() * ours).sum().backward()
    (theirs.exp() * theirs).sum().backward()
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), **TIGHT)


def test_random_draws_with_requires_grad_are_leaves():
    kiln.manual_seed(1)
    for draw in (kiln.randn(3, 2, requires_grad=True), kiln.rand(4, requires_grad=True), kiln.randn_like(kiln.zeros(3), requires_grad=True)):
        (draw * draw).sum().backward()
        np.testing.assert_allclose(draw.grad, 2 * np.asarray(draw.data), rtol=1e-6)
    with pytest.raises(kiln.TraceError, match="only floating-point tensors can require gradients"):
        kiln.zeros(3, dtype=kiln.long, requires_grad=True)
