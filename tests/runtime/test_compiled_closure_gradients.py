"""A ``kiln.compile``'d plain function that reads what it was not given (a closure's model, a closure tensor that
requires grad) returns outputs whose chain reaches them, as ``torch.compile``'s: ``loss.backward()`` fills their
``.grad``. Before, such calls took the inference path, and ``backward()`` found nothing to differentiate (or, with
a tensor that required grad given as well, silently left the closure's parameters without a gradient)."""

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch

torch = require_torch()


def _closure_model(lib):
    lib.manual_seed(0)
    model = lib.nn.Sequential(lib.nn.Linear(3, 4), lib.nn.Tanh(), lib.nn.Linear(4, 2)).double()
    rng = np.random.default_rng(1)
    with lib.no_grad():
        for parameter in model.parameters():
            parameter.copy_(lib.tensor(rng.normal(size=tuple(parameter.shape))))
    return model


def _train_closure(lib, compile_fn, steps=3):
    model = _closure_model(lib)
    optimizer = lib.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_of = compile_fn(lambda x, y: lib.nn.functional.mse_loss(model(x), y))
    rng = np.random.default_rng(2)
    losses = []
    for _ in range(steps):
        x, y = lib.tensor(rng.normal(size=(5, 3))), lib.tensor(rng.normal(size=(5, 2)))
        optimizer.zero_grad()
        loss = loss_of(x, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, [p.detach().numpy().copy() for p in model.parameters()]


def test_a_compiled_function_of_a_closure_model_trains_as_torch():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # compiled, not an eager fallback
        losses, parameters = _train_closure(kiln, lambda fn: kiln.compile(fn, fullgraph=True))
    expected_losses, expected = _train_closure(torch, lambda fn: fn)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-12)
    for got, want in zip(parameters, expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_a_tensor_that_requires_grad_given_or_closed_over_gets_its_gradient():
    """``ones(3, requires_grad=True)`` given as an argument, a leaf closure tensor and a result on a closure
    tensor's chain: each gets torch's gradient, and the closure leaf updated in place is read anew."""
    def run(lib, compile_fn):
        given = lib.ones(3, dtype=lib.float64, requires_grad=True)
        leaf = lib.tensor([0.5, -1.0, 2.0], dtype=lib.float64).requires_grad_()
        base = lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64, requires_grad=True)
        derived = base * base
        f = compile_fn(lambda t, x: (t * x * leaf).sum() + (derived * x).sum())
        x = lib.tensor([1.0, -2.0, 0.5], dtype=lib.float64)
        results = []
        for _ in range(2):
            out = f(given, x)
            out.backward(retain_graph=True)
            results.append([out.item(), given.grad.numpy().copy(), leaf.grad.numpy().copy(), base.grad.numpy().copy()])
            with lib.no_grad():
                leaf -= 0.1 * leaf.grad
        return results

    got, expected = run(kiln, kiln.compile), run(torch, lambda fn: fn)
    for got_step, expected_step in zip(got, expected):
        for a, b in zip(got_step, expected_step):
            np.testing.assert_allclose(a, b, rtol=1e-12)


def test_the_closure_models_mode_and_frozen_parameters_are_followed():
    """``model.eval()`` and ``requires_grad_(False)`` between calls: the outputs and gradients follow, as torch's."""
    def run(lib, compile_fn):
        lib.manual_seed(0)
        model = lib.nn.Sequential(lib.nn.Linear(3, 3), lib.nn.BatchNorm1d(3), lib.nn.Linear(3, 1)).double()
        with lib.no_grad():
            for k, parameter in enumerate(model.parameters()):
                parameter.copy_(lib.linspace(-1, 1, parameter.numel(), dtype=lib.float64).reshape(parameter.shape) + k)
        f = compile_fn(lambda x: model(x).square().sum())
        x = lib.tensor(np.arange(12.0).reshape(4, 3) / 7 - 0.5)
        results = []
        for change in (None, "eval", "freeze"):
            if change == "eval":
                model.eval()
            if change == "freeze":
                model[0].weight.requires_grad_(False)
            model.zero_grad(set_to_none=True)
            out = f(x)
            out.backward()
            grad = model[0].weight.grad
            results.append((out.item(), None if grad is None else grad.numpy().copy(), model[2].weight.grad.numpy().copy()))
        return results

    for got, expected in zip(run(kiln, kiln.compile), run(torch, lambda fn: fn)):
        assert got[0] == pytest.approx(expected[0], rel=1e-12)
        assert (got[1] is None) == (expected[1] is None)
        if expected[1] is not None:
            np.testing.assert_allclose(got[1], expected[1], rtol=1e-10)
        np.testing.assert_allclose(got[2], expected[2], rtol=1e-10)


def test_no_grad_calls_and_result_nesting_are_torchs():
    model = kiln.nn.Linear(2, 2)
    f = kiln.compile(lambda x: (model(x),))
    x = kiln.ones(1, 2)
    assert isinstance(f(x), tuple) and len(f(x)) == 1 and f(x)[0].requires_grad
    with kiln.no_grad():
        assert not f(x)[0].requires_grad
    pair = kiln.compile(lambda x: [x * 2, {"y": x + 1}])(x)
    assert isinstance(pair, list) and isinstance(pair[1], dict)


def test_the_eager_fallback_warning_names_the_callers_line():
    model = kiln.nn.Linear(2, 1)
    f = kiln.compile(lambda x: model(x) * 2 if model(x).sum().item() > -1e9 else model(x))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f(kiln.ones(3, 2))
    assert [w.filename for w in caught if "runs eagerly" in str(w.message)] == [__file__]
