"""``kiln.func.jacrev``/``jacfwd(has_aux=True)`` on eager tensors call ``func`` once per call and take the Jacobian
and the aux from that one evaluation, as torch 2.13's (kiln called it once more for the aux, after tracing it twice):
the calls counted, a random draw shared by the aux and the Jacobian, argnums tuples and dict arguments, several
outputs, and the chain (float64): plain results where nothing requires grad, a PINN loss on the derivatives
training the network, a second derivative reaching the input (``runtime/eager_jacobian.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import kiln
from oracles import libraries, torch_twins

X = np.linspace(-1.0, 1.0, 3)
TRANSFORMS = ["jacrev", "jacfwd"]


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_func_runs_once_per_call_as_torchs(transform):
    counts = {}
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        calls = []

        def f(x):
            calls.append(1)
            y = (x * x).sin()
            return y, y.sum()

        jacobian = getattr(lib.func, transform)(f, has_aux=True)
        counts[name] = [len(calls) for _ in range(3) if jacobian(lib.tensor(X)) is not None]
    assert counts["kiln"] == counts["torch"] == [1, 2, 3]


@pytest.mark.parametrize("transform", ["jacrev"])  # torch's jacfwd vmaps func: a random op there is refused
def test_the_aux_comes_from_the_evaluation_the_jacobian_differentiates(transform):
    """A fresh random scale each call: the Jacobian ``diag(r)`` holds the ``r`` the aux returns (torch's too)."""
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        jacobian, scale = getattr(lib.func, transform)(lambda x: (x * (r := lib.rand(3)), r), has_aux=True)(lib.tensor(X))
        np.testing.assert_array_equal(np.diag(jacobian.numpy()), scale.numpy(), err_msg=name)


def _compare(make: Any) -> None:
    results = []
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        jacobian, aux = make(lib)
        flat = [leaf for tree in (jacobian, aux) for leaf in _leaves(tree)]
        results.append([(np.asarray(t.detach().numpy()), bool(t.requires_grad)) for t in flat])
    assert len(results[0]) == len(results[1])
    for (ours, our_flag), (theirs, their_flag) in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
        assert our_flag == their_flag


def _leaves(tree: Any) -> list[Any]:
    if isinstance(tree, dict):
        return [leaf for key in sorted(tree) for leaf in _leaves(tree[key])]
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return [tree]


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_argnums_dict_arguments_and_several_outputs_as_torchs(transform, float64_default):
    def make(lib):
        def f(x, params, y):
            out = (x * params["w"]).tanh() + y.sum() * params["b"]
            return (out, out.sum() * y), {"out": out, "x": x}

        params = {"w": lib.tensor(X + 2.0), "b": lib.tensor(0.5)}
        return getattr(lib.func, transform)(f, argnums=(0, 1), has_aux=True)(lib.tensor(X), params, lib.tensor(X[:2]))

    _compare(make)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_a_pinn_loss_on_the_derivatives_trains_the_network_as_torchs(transform, float64_default):
    torch, model, twin = torch_twins(lambda lib: lib.nn.Sequential(lib.nn.Linear(1, 4), lib.nn.Tanh(), lib.nn.Linear(4, 1)).double())
    grads = []
    for lib, net in ((kiln, model), (torch, twin)):
        def u(x):
            value = net(x.reshape(1, 1)).reshape(())
            return value, value

        points = [lib.tensor(p) for p in (-0.5, 0.25, 1.0)]
        derivatives = [getattr(lib.func, transform)(u, has_aux=True)(p) for p in points]
        loss = sum((du - value.cos()) ** 2 for du, value in derivatives)
        assert all(du.requires_grad and value.requires_grad for du, value in derivatives)
        loss.backward()
        grads.append([np.asarray(p.grad.numpy()) for p in net.parameters()])
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_a_second_derivative_through_the_jacobian_reaches_the_input_as_torchs(transform, float64_default):
    results = []
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        x = lib.tensor(X).requires_grad_()
        jacobian, value = getattr(lib.func, transform)(lambda v: ((v ** 3).sin(), v.exp()), has_aux=True)(x)
        (jacobian.sum() + value.sum()).backward()
        results.append(np.asarray(x.grad.numpy()))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12)


def test_under_no_grad_the_results_are_plain_as_torchs(float64_default):
    torch, model, twin = torch_twins(lambda lib: lib.nn.Linear(3, 2).double())
    for lib, net in ((kiln, model), (torch, twin)):
        with lib.no_grad():
            jacobian, aux = lib.func.jacrev(lambda v: (net(v), v), has_aux=True)(lib.tensor(X))
        assert not jacobian.requires_grad and not aux.requires_grad


@pytest.mark.parametrize("transform", ["grad", "grad_and_value"])
def test_grad_with_aux_runs_func_once_per_call_and_matches_torch(transform, float64_default):
    counts, results = {}, []
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        calls = []

        def f(x, w):
            calls.append(1)
            out = (x * w).tanh()
            return out.pow(2).sum(), {"mean": out.mean(), "input": x}

        transformed = getattr(lib.func, transform)(f, argnums=(0, 1), has_aux=True)
        outputs = [transformed(lib.tensor(X * k), lib.tensor(X + 1.0)) for k in (1.0, 2.0)]
        counts[name] = len(calls)
        results.append([leaf for output in outputs for leaf in _leaves(output)])
    assert counts["kiln"] == counts["torch"] == 2
    for ours, theirs in zip(*results):
        assert ours.requires_grad == theirs.requires_grad
        np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("transform", ["grad", "grad_and_value"])
def test_grad_with_aux_of_a_non_scalar_is_torchs_runtime_error(transform):
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        with pytest.raises(RuntimeError, match=r"Expected f\(\*args\) to return a scalar Tensor, got tensor with 1 dims"):
            getattr(lib.func, transform)(lambda x: (x.sin(), x), has_aux=True)(lib.tensor(X))
