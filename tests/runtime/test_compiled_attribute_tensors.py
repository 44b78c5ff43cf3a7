"""A module attribute a ``kiln.compile``'d call sets to a tensor it computed (``self.last = y``, a recurrent
``self.h = self.h * 0.5 + x``, a legacy ``weight_norm``'s ``module.weight``) holds that call's values afterwards, as
``torch.compile`` leaves it. It used to hold the trace's tensor, which had no values: reading it raised a bare
KeyError, and a forward reading it again fed the first tensor's values."""

import warnings

import numpy as np

import kiln
from oracles import require_torch

torch = require_torch()


def _net(lib):
    class Net(lib.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = lib.nn.Linear(4, 3).double()

        def forward(self, x):
            y = self.fc(x)
            self.last = y
            return y

    lib.manual_seed(0)
    net = Net()
    with lib.no_grad():
        net.fc.weight.copy_(lib.tensor(np.linspace(-1, 1, 12).reshape(3, 4)))
        net.fc.bias.fill_(0.25)
    return net


def test_an_attribute_set_in_a_compiled_step_holds_each_calls_tensor_as_torch():
    results = {}
    for lib in (torch, kiln):
        net = _net(lib)
        optimizer = lib.optim.SGD(net.parameters(), lr=0.1)

        def step(x):
            optimizer.zero_grad()
            loss = net(x).square().sum()
            loss.backward()
            optimizer.step()
            return loss.detach()

        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        kept = []
        for k in range(3):
            run(lib.ones(2, 4, dtype=lib.float64) * (k + 1))
            kept.append(net.last.detach().numpy().copy())
        results[lib] = kept
    for got, expected in zip(results[kiln], results[torch]):
        np.testing.assert_allclose(got, expected, rtol=1e-13)


def test_a_recurrent_attribute_is_read_anew_at_each_call_as_torch():
    def run(lib, compile_fn):
        class Leaky(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.h = lib.zeros(3, dtype=lib.float64)

            def forward(self, x):
                self.h = self.h * 0.5 + x
                return self.h.sum()

        module = Leaky()
        forward = compile_fn(module)
        with lib.no_grad():
            return [(forward(lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64) * k).item(), module.h.numpy().copy())
                    for k in range(1, 5)]

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled throughout: no eager fallback, no recompile limit
        got = run(kiln, lambda module: kiln.compile(module, fullgraph=True))
    for (value, h), (expected_value, expected_h) in zip(got, run(torch, lambda module: module)):
        assert value == expected_value
        np.testing.assert_array_equal(h, expected_h)


def test_a_compiled_spectral_normed_model_keeps_its_computed_weight_as_torch():
    """Legacy ``spectral_norm`` sets ``module.weight`` in a forward pre-hook: the compiled forward (split for
    ``loss.backward()``) stays compiled, and ``module.weight`` after each call is that call's, as torch's."""
    results, vectors = {}, None
    for lib in (torch, kiln):
        layer = lib.nn.Linear(3, 2).double()
        with lib.no_grad():
            layer.weight.copy_(lib.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5]], dtype=lib.float64))
            layer.bias.zero_()
        layer = lib.nn.utils.spectral_norm(layer)
        with lib.no_grad():  # the power iteration's random start, torch's in both
            vectors = vectors or (layer.weight_u.numpy().copy(), layer.weight_v.numpy().copy())
            layer.weight_u.copy_(lib.tensor(vectors[0]))
            layer.weight_v.copy_(lib.tensor(vectors[1]))
        model = kiln.compile(layer, fullgraph=True) if lib is kiln else layer
        optimizer = lib.optim.SGD(layer.parameters(), lr=0.1)
        kept = []
        for k in range(3):
            optimizer.zero_grad()
            model(lib.ones(4, 3, dtype=lib.float64) * (k + 1)).square().mean().backward()
            optimizer.step()
            kept.append((layer.weight.detach().numpy().copy(), layer.weight_u.numpy().copy()))
        results[lib] = kept
    for (weight, u), (expected_weight, expected_u) in zip(results[kiln], results[torch]):
        np.testing.assert_allclose(weight, expected_weight, rtol=1e-12)
        np.testing.assert_allclose(u, expected_u, rtol=1e-12)
