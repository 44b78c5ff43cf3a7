"""A result that requires grad prints PyTorch's ``grad_fn=<...>`` suffix (``print(loss)`` shows
``tensor(2.3026, grad_fn=<NllLossBackward0>)``), wrapped as the other suffixes are; a leaf prints
``requires_grad=True``, and under ``no_grad`` or after ``detach()`` neither. Compared with torch 2.13's text."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries

EXPRESSIONS = {
    "leaf": lambda t, F, x: x,
    "mul": lambda t, F, x: x * 2,
    "sum": lambda t, F, x: x.sum(),
    "mean": lambda t, F, x: x.mean(),
    "relu": lambda t, F, x: F.relu(x),
    "tanh": lambda t, F, x: t.tanh(x),
    "exp": lambda t, F, x: x.exp(),
    "view": lambda t, F, x: x.view(-1),
    "select": lambda t, F, x: x[0],
    "slice": lambda t, F, x: x[:, 1:],
    "transpose": lambda t, F, x: x.t(),
    "mm": lambda t, F, x: x @ x.t(),
    "cross_entropy": lambda t, F, x: F.cross_entropy(x, t.tensor([0, 2])),
    "mse": lambda t, F, x: F.mse_loss(x, t.zeros(2, 3)),
    "softmax": lambda t, F, x: F.softmax(x, dim=1),
    "wide": lambda t, F, x: x.repeat(1, 12) * 3,
    "float64": lambda t, F, x: x.double() + 1,
    "detached": lambda t, F, x: (x * 2).detach(),
}


@pytest.mark.parametrize("name", EXPRESSIONS)
def test_a_result_prints_its_grad_fn_as_torchs(name):
    texts = []
    for library in ("kiln", "torch"):
        torch, _, F = libraries(library)
        x = torch.tensor(np.arange(6.0).reshape(2, 3) / 7 - 0.3, dtype=torch.float32, requires_grad=True)
        texts.append(repr(EXPRESSIONS[name](torch, F, x)).replace("torch.", "kiln."))
    assert texts[0] == texts[1]


@pytest.mark.parametrize("library", ["kiln", "torch"])
def test_no_suffix_under_no_grad(library):
    torch, _, _ = libraries(library)
    x = torch.ones(2, requires_grad=True)
    with torch.no_grad():
        assert repr(x * 2) == "tensor([2., 2.])"
