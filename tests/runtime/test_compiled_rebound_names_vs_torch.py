"""``kiln.compile``: a name the compiled function reaches a module or an optimizer by (a closure variable, a global, a
plain object's attribute) bound to another object between calls traces again, as ``torch.compile``'s identity guards
do (``runtime/rebound_names.py``); the old graph used to run on with the old object, silently. Against torch 2.13's
eager runs in float64."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import libraries, require_torch

X = np.linspace(-1.0, 1.0, 12).reshape(4, 3)
Y = np.array([0, 1, 1, 0])


def _model(lib):
    lib.manual_seed(0)
    return lib.nn.Sequential(lib.nn.Linear(3, 5), lib.nn.Tanh(), lib.nn.Linear(5, 2)).double()


def _twins():
    torch = require_torch()
    ours, theirs = _model(kiln), _model(torch)
    theirs.load_state_dict({k: torch.tensor(np.array(v)) for k, v in ours.state_dict().items()})
    return torch, ours, theirs


def _state(model):
    return {k: np.array(v.detach().numpy()) for k, v in model.state_dict().items()}


def _assert_same_state(ours, theirs):
    for (name, value), other in zip(_state(ours).items(), _state(theirs).values()):
        np.testing.assert_allclose(value, other, rtol=1e-12, atol=1e-14, err_msg=name)


def test_closure_optimizer_rebound_by_a_resume():
    """A step compiled once; the script then builds a new optimizer (another lr, the old one's state loaded) under the
    same closure name, as a resumed run does."""
    torch, ours, theirs = _twins()
    losses = []
    for lib, model in ((kiln, ours), (torch, theirs)):
        _, _, F = libraries(lib.__name__)
        optimizer = lib.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

        def step(x, y):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        x, y = lib.tensor(X), lib.tensor(Y)
        record = [run(x, y).item() for _ in range(2)]
        saved = optimizer.state_dict()
        optimizer = lib.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
        optimizer.load_state_dict(saved)
        optimizer.param_groups[0]["lr"] = 0.5
        record += [run(x, y).item() for _ in range(3)]
        losses.append(record)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-12)
    _assert_same_state(ours, theirs)


class Agent:
    """A plain object whose method is compiled (TD3-style); its optimizer attribute is replaced mid-run."""

    def __init__(self, lib, model):
        self.lib, self.model = lib, model
        self.optimizer = lib.optim.Adam(model.parameters(), lr=0.01)

    def update(self, x, y):
        self.optimizer.zero_grad()
        loss = (self.model(x) - y).pow(2).mean()
        loss.backward()
        self.optimizer.step()
        return loss


def test_plain_objects_optimizer_attribute_replaced():
    torch, ours, theirs = _twins()
    losses = []
    for lib, model in ((kiln, ours), (torch, theirs)):
        agent = Agent(lib, model)
        run = kiln.compile(agent.update, fullgraph=True) if lib is kiln else agent.update
        x, y = lib.tensor(X), lib.tensor(X[:, :2] * 0.5)
        record = [run(x, y).item() for _ in range(2)]
        agent.optimizer = lib.optim.SGD(model.parameters(), lr=0.2)  # a second phase: Adam, then SGD
        record += [run(x, y).item() for _ in range(2)]
        losses.append(record)
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-12)
    _assert_same_state(ours, theirs)


MODEL = None


def predict(x):
    return MODEL(x).softmax(dim=-1)


def test_global_model_rebound_in_an_inference_function():
    global MODEL
    compiled = kiln.compile(predict)
    first, second = _model(kiln), _model(kiln)
    with kiln.no_grad():
        second[0].weight.mul_(-2.0)
    x = kiln.tensor(X)
    outputs = []
    for model in (first, second, first):
        MODEL = model
        outputs.append((np.array(compiled(x).numpy()), np.array(predict(x).numpy())))
    MODEL = None
    for got, want in outputs:
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert not np.allclose(outputs[0][0], outputs[1][0])


def _scaled(lib):
    class Scaled(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = lib.nn.Linear(3, 2)
            self.register_buffer("scale", lib.ones(2))

        def forward(self, x):
            return self.lin(x) * self.scale

    return Scaled()


def test_compiled_model_sees_a_replaced_buffer_and_parameter():
    """``kiln.compile(model)`` called with gradients enabled and under no_grad while the script replaces what the
    model registers: a buffer registered again (``prune``'s new mask does so), a Parameter assigned."""
    torch = require_torch()
    kiln.manual_seed(0)
    ours, theirs = _scaled(kiln), _scaled(torch)
    theirs.load_state_dict({k: torch.tensor(np.array(v)) for k, v in ours.state_dict().items()})
    outputs = []
    for lib, model in ((kiln, ours), (torch, theirs)):
        run = kiln.compile(model) if lib is kiln else model
        x = lib.ones(1, 3)
        record = [run(x).detach().numpy().copy()]
        model.register_buffer("scale", lib.ones(2) * 3)
        record.append(run(x).detach().numpy().copy())
        model.lin.weight = lib.nn.Parameter(lib.zeros(2, 3))
        record.append(run(x).detach().numpy().copy())
        with lib.no_grad():
            record.append(run(x).numpy().copy())
            model.register_buffer("scale", lib.ones(2) * 5)
            record.append(run(x).numpy().copy())
        outputs.append(np.concatenate(record))
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6)
