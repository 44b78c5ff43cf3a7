"""A ``kiln.compile``d function called with no arguments (a training step that reads its model and data from a closure
or ``self``, as PINN code's ``train_step()``), against torch 2.13: ``torch.compile`` gives tensors back and runs what
it cannot capture eagerly. kiln took a call without tensors for a NumPy call: it returned NumPy arrays
(``loss.detach()``, ``loss.backward()`` failed) and raised where the function could not be traced instead of running
it eagerly (``LBFGS.step(closure)``, a branch on ``.item()``). Now such a call is PyTorch's kind
(``runtime/compiled_function.py``: ``pytorch_style``)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

X = np.linspace(-1.0, 1.0, 8).reshape(4, 2)


def _model(torch):
    rng = np.random.default_rng(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1))
    for p in model.parameters():
        p.data = torch.tensor(rng.standard_normal(tuple(p.shape)))
    return model


def _forward_then_backward(name):
    torch = libraries(name)[0]
    model, x = _model(torch), torch.tensor(X)
    forward = (lambda: model(x).pow(2).sum()) if name == "torch" else kiln.compile(lambda: model(x).pow(2).sum())
    out = forward()
    assert type(out).__name__ == "Tensor" and out.requires_grad
    out.backward()
    return [out.item()] + [np.array(p.grad.numpy()) for p in model.parameters()]


def test_a_forward_without_arguments_returns_a_tensor_whose_backward_reaches_the_model(float64_default):
    for ours, theirs in zip(_forward_then_backward("kiln"), _forward_then_backward("torch"), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def _steps(name, fullgraph=True, branch=False):
    torch = libraries(name)[0]
    model, x = _model(torch), torch.tensor(X)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def train_step():
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        if branch and loss.item() > 100.0:  # a Python branch on a value: torch.compile breaks the graph there
            loss = loss / 2
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(train_step, fullgraph=fullgraph) if name == "kiln" else train_step
    losses = [run() for _ in range(3)]
    assert all(type(loss).__name__ == "Tensor" for loss in losses)
    return [loss.detach().numpy() for loss in losses] + [np.array(p.detach().numpy()) for p in model.parameters()]


def test_a_whole_step_without_arguments_returns_tensors(float64_default):
    for ours, theirs in zip(_steps("kiln"), _steps("torch"), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_a_step_without_arguments_that_cannot_be_traced_runs_eagerly_or_raises_with_fullgraph(float64_default):
    with pytest.warns(UserWarning, match=r"runs eagerly.*item\(\) of a traced"):
        ours = _steps("kiln", fullgraph=False, branch=True)
    for mine, theirs in zip(ours, _steps("torch", branch=True), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-12)
    with pytest.raises(kiln.TraceError, match=r"item\(\) of a traced"):
        _steps("kiln", fullgraph=True, branch=True)
