"""Dropout with ``p = 1``, which PyTorch allows (``[0, 1]``) and kiln refused: ``F.dropout``/``nn.Dropout`` give
``input * 0`` (a NaN stays NaN, the gradient is 0), and a multi-layer ``LSTM``/``GRU``/``RNN(dropout=1.0)`` in training
mode zeroes what passes between its layers only, so it is deterministic and equals torch's (which also shows the
last layer's output is not dropped). A ``p`` outside ``[0, 1]`` is torch's ValueError with its words."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array
from oracles import require_torch, torch_twins

X = np.array([[1.5, -2.0, np.nan], [0.5, np.inf, -3.0]])


@pytest.mark.parametrize("form", ["functional", "module", "compiled"])
def test_dropout_one_zeroes_as_torch(form):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        x = lib.tensor(X, requires_grad=True)
        drop = (lambda t: lib.nn.functional.dropout(t, 1.0)) if form != "module" else lib.nn.Dropout(1.0)
        run = kiln.compile(drop) if form == "compiled" and lib is kiln else drop
        out = run(x)
        out.sum().backward() if form != "compiled" else None
        results.append((np.asarray(out.detach().numpy() if lib is torch or form != "compiled" else out),
                        None if form == "compiled" else x.grad.numpy()))
    (ours, our_grad), (theirs, their_grad) = results
    np.testing.assert_array_equal(ours, theirs)
    if their_grad is not None:
        np.testing.assert_array_equal(our_grad, their_grad)


@pytest.mark.parametrize("cell", ["LSTM", "GRU", "RNN"])
def test_a_recurrent_stack_with_dropout_one_matches_torch_in_training(cell):
    torch, model, twin = torch_twins(lambda lib: getattr(lib.nn, cell)(3, 4, num_layers=3, bidirectional=True, dropout=1.0).double())
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    results = []
    for lib, net in ((kiln, model), (torch, twin)):
        inputs = lib.tensor(x, requires_grad=True)
        out = net(inputs)[0]
        (out * out).sum().backward()
        results.append((out.detach().numpy(), inputs.grad.numpy(), [array(p.grad) for p in net.parameters()]))
    (ours, our_input_grad, our_grads), (theirs, their_input_grad, their_grads) = results
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(our_input_grad, their_input_grad)  # zero: nothing of the input reaches layer 2
    for a, b in zip(our_grads, their_grads):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("p", [1.5, -0.1])
def test_a_probability_outside_zero_one_is_torchs_value_error(p):
    torch = require_torch()
    for lib in (torch, kiln):
        with pytest.raises(ValueError, match=f"dropout probability has to be between 0 and 1, but got {p}"):
            lib.nn.functional.dropout(lib.ones(3), p)
        with pytest.raises(ValueError, match=f"dropout probability has to be between 0 and 1, but got {p}"):
            lib.nn.Dropout(p)
        with pytest.raises(ValueError, match="dropout should be a number in range \\[0, 1\\]"):
            lib.nn.LSTM(3, 4, num_layers=2, dropout=p)
