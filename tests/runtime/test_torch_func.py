"""``kiln.func`` against ``torch.func`` in float64: per-example gradients (the torch.func tutorial), model ensembling
with ``stack_module_state``, ``grad(has_aux=True)``/``grad_and_value``, MAML's second-order meta-gradient through
``functional_call`` and ``kiln.autograd.grad(create_graph=True)`` (eager, and compiled into one training step), and
``functional_call``'s bookkeeping."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.func import functional_call, grad, grad_and_value
from oracles import require_torch, torch_twins

X = np.random.RandomState(0).randn(6, 4)
Y = np.arange(6) % 3


def _mlp(lib):
    return lib.nn.Sequential(lib.nn.Linear(4, 8), lib.nn.Tanh(), lib.nn.Linear(8, 3)).double()


def _twins(seed=0):
    return torch_twins(_mlp, seed)


def _close(got, want, tol=1e-12):
    np.testing.assert_allclose(np.asarray(got), want.detach().numpy(), rtol=tol, atol=tol)


def _per_example_grads(lib, func, model, x, y):
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss(params, sample, target):
        return lib.nn.functional.cross_entropy(func.functional_call(model, params, (sample.unsqueeze(0),)), target.unsqueeze(0))

    return func.vmap(func.grad(loss), in_dims=(None, 0, 0))(params, x, y)


def test_per_example_gradients_match_torch_func():
    torch, model, twin = _twins()
    got = _per_example_grads(kiln, kiln.func, model, kiln.tensor(X), kiln.tensor(Y))
    want = _per_example_grads(torch, torch.func, twin, torch.tensor(X), torch.tensor(Y))
    assert list(got) == list(want)
    for name in want:
        assert got[name].shape == tuple(want[name].shape)
        _close(got[name], want[name])


def test_an_ensemble_through_stack_module_state_matches_torch():
    torch = require_torch()
    kiln.manual_seed(1)
    models = [_mlp(kiln) for _ in range(3)]
    twins = [_mlp(torch) for _ in range(3)]
    for model, twin in zip(models, twins):
        for p, q in zip(model.parameters(), twin.parameters()):
            q.data = torch.tensor(np.array(p.data))

    def ensemble(lib, func, models, x):
        params, buffers = func.stack_module_state(models)
        return func.vmap(lambda p, b, x: func.functional_call(models[0], (p, b), (x,)), in_dims=(0, 0, None))(params, buffers, x)

    _close(ensemble(kiln, kiln.func, models, kiln.tensor(X)), ensemble(torch, torch.func, twins, torch.tensor(X)))


def test_grad_with_aux_and_grad_and_value_match_torch():
    torch = require_torch()

    def f(lib):
        return lambda w, x: ((lib.tanh(x @ w) ** 2).sum(), (x @ w).mean())

    w = np.random.RandomState(2).randn(4, 2)
    got, want = grad(f(kiln), has_aux=True)(kiln.tensor(w), kiln.tensor(X)), torch.func.grad(f(torch), has_aux=True)(torch.tensor(w), torch.tensor(X))
    _close(got[0], want[0]), _close(got[1], want[1])
    g = lambda lib: (lambda w: (lib.sin(w) * w).sum())  # noqa: E731
    got, want = grad_and_value(g(kiln))(kiln.tensor(w)), torch.func.grad_and_value(g(torch))(torch.tensor(w))
    _close(got[0], want[0]), _close(got[1], want[1])


def test_maml_meta_gradient_through_functional_call_matches_torch():
    torch, model, twin = _twins(3)
    _maml_loss(kiln, model, kiln.tensor(X), kiln.tensor(Y)).backward()
    _maml_loss(torch, twin, torch.tensor(X), torch.tensor(Y)).backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-11, atol=1e-13)


def test_functional_call_restores_the_module_and_replaces_ties_together():
    model = _mlp(kiln)
    before = {k: v for k, v in model.named_parameters()}
    zeros = {"0.weight": np.zeros((8, 4))}
    with pytest.raises(kiln.TraceError, match="mat1 and mat2 shapes cannot be multiplied"):
        functional_call(model, zeros, (kiln.tensor(np.ones((2, 5))),))  # a shape error inside the call
    assert all(a is b for a, b in zip(before.values(), dict(model.named_parameters()).values()))
    assert model[0].weight is before["0.weight"]

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3, bias=False)
            self.b = nn.Linear(3, 3, bias=False)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    tied, x = Tied(), kiln.tensor(np.eye(3, dtype=np.float32))
    np.testing.assert_allclose(functional_call(tied, {"a.weight": 2 * np.eye(3, dtype=np.float32)}, (x,)).numpy(), 4 * np.eye(3))
    untied = functional_call(tied, {"a.weight": 2 * np.eye(3, dtype=np.float32)}, (x,), tie_weights=False).numpy()
    np.testing.assert_allclose(untied, 2 * np.asarray(tied.a.weight.data).T)


def test_functional_call_errors_name_the_keys():
    model = _mlp(kiln)
    with pytest.raises(kiln.KilnError, match="no parameter or buffer 1.weight"):
        functional_call(model, {"1.weight": np.zeros(1)}, (kiln.tensor(X),))
    with pytest.raises(kiln.KilnError, match=r"strict=True\): missing 0.bias, 2.bias, 2.weight"):
        functional_call(model, {"0.weight": np.zeros((8, 4))}, (kiln.tensor(X),), strict=True)
    with pytest.raises(kiln.KilnError, match="0.weight appear in more than one"):
        functional_call(model, ({"0.weight": 1}, {"0.weight": 2}), (kiln.tensor(X),))


def test_grad_of_a_dict_of_arrays_gives_a_dict_of_arrays():
    params = {"w": np.array([1.0, 2.0]), "b": np.array(0.5)}
    got = kiln.grad(lambda p: (p["w"] ** 2).sum() + 3 * p["b"])(params)
    assert list(got) == ["w", "b"] and isinstance(got["w"], np.ndarray)
    np.testing.assert_allclose(got["w"], [2.0, 4.0]), np.testing.assert_allclose(got["b"], 3.0)


class _Identity(nn.Module):
    def forward(self, x):
        return x


def _maml_loss(lib, model, x, y):
    params = dict(model.named_parameters())
    support = lib.nn.functional.cross_entropy(lib.func.functional_call(model, params, (x[:3],)), y[:3])
    grads = lib.autograd.grad(support, list(params.values()), create_graph=True)
    fast = {name: p - 0.4 * g for (name, p), g in zip(params.items(), grads)}
    return lib.nn.functional.cross_entropy(lib.func.functional_call(model, fast, (x[3:],)), y[3:])


def test_maml_compiles_into_one_training_step_in_lockstep_with_torch():
    torch, model, twin = _twins(4)
    step = kiln.compile_train_step(_Identity(), lambda x, y: _maml_loss(kiln, model, x, y),
                                   kiln.optim.SGD(model.parameters(), lr=0.1), batch_dim=None)
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
    for _ in range(3):
        loss = step(X, Y)
        optimizer.zero_grad()
        torch_loss = _maml_loss(torch, twin, torch.tensor(X), torch.tensor(Y))
        torch_loss.backward()
        optimizer.step()
        np.testing.assert_allclose(float(loss), torch_loss.item(), rtol=1e-12)
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-11, atol=1e-13)


def test_a_tuple_argnums_of_one_gives_a_tuple_of_one_as_torch_func():
    """``argnums=(0,)`` is a tuple of one gradient, ``argnums=0`` the gradient itself: torch.func's (and JAX's) rule,
    for grad, grad_and_value and kiln.value_and_grad, eagerly and traced."""
    torch = require_torch()
    from torch.func import grad as torch_grad

    def f(x):
        return (x**3).sum()

    x = np.array([1.0, -2.0, 0.5])
    expected = torch_grad(f, argnums=(0,))(torch.tensor(x))
    ours = grad(f, argnums=(0,))(kiln.tensor(x))
    assert isinstance(expected, tuple) and isinstance(ours, tuple) and len(ours) == 1
    np.testing.assert_allclose(ours[0].numpy(), expected[0].numpy())
    assert not isinstance(grad(f, argnums=0)(kiln.tensor(x)), tuple)
    gradient, value = grad_and_value(f, argnums=(0,))(kiln.tensor(x))
    assert isinstance(gradient, tuple) and float(value) == float(f(torch.tensor(x)))
    value, gradient = kiln.value_and_grad(f, argnums=(0,))(kiln.tensor(x))
    assert isinstance(gradient, tuple)
    traced = kiln.compile(lambda v: grad(f, argnums=(0,))(v)[0] * 2, batch_dim=None)(x)
    np.testing.assert_allclose(traced, 2 * expected[0].numpy())


def test_linearize_gives_torchs_output_and_jacobian_vector_products():
    torch = require_torch()
    x, tangents = np.array([0.3, -1.2, 2.0]), [np.array([1.0, 0.5, -2.0]), np.array([0.0, 3.0, 1.0])]
    results = {}
    for lib in (kiln, torch):
        out, jvp_fn = lib.func.linearize(lambda t: (t.sin() * t).sum(0, keepdim=True) * t, lib.tensor(x))
        results[lib.__name__] = [np.asarray(out.detach().numpy())] + [jvp_fn(lib.tensor(t)).detach().numpy() for t in tangents]
    for ours, theirs in zip(results["kiln"], results["torch"]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_functionalize_keeps_in_place_programs_composable_as_torch():
    torch = require_torch()
    x = np.array([0.5, -1.0, 2.0])
    results = []
    for lib in (kiln, torch):
        def f(t):
            y = t.clone()
            y.mul_(2.0).add_(t.sin())
            return (y * y).sum()

        results.append(lib.func.grad(lib.func.functionalize(f))(lib.tensor(x)).numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-12)


def test_replace_all_batch_norm_modules_uses_batch_statistics_as_torch():
    torch = require_torch()
    x = np.random.default_rng(0).standard_normal((6, 3))
    outputs = []
    for lib in (kiln, torch):
        model = lib.nn.Sequential(lib.nn.Linear(3, 3), lib.nn.BatchNorm1d(3)).double()
        with lib.no_grad():
            model[0].weight.copy_(lib.tensor(np.eye(3) * 2.0))
            model[0].bias.zero_()
        assert lib.func.replace_all_batch_norm_modules_(model) is model
        norm = model[1]
        assert (norm.running_mean, norm.running_var, norm.num_batches_tracked, norm.track_running_stats) == (None,) * 3 + (False,)
        model.eval()  # still batch statistics: nothing is tracked
        outputs.append(model(lib.tensor(x)).detach().numpy())
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-10)
    assert kiln.func.debug_unwrap(kiln.ones(2)).shape == (2,)
