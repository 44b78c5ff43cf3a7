"""The activation functions and modules against PyTorch: values and gradients in float64 (rtol 1e-10) over a grid
with the kinks, tiny and huge magnitudes; float32; the modules and their reprs; a training step; ONNX export."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from layer_parity import assert_layer_matches_torch, sgd_losses_in_lockstep
from oracles import require

KINKS = [-6.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.5, 3.0, 6.0, 10.0, 20.0]  # leaky/elu 0, hardtanh bounds, relu6, hardswish, softplus thresholds
MAGNITUDES = [1e-8, 0.5, 1.0, 30.0, 1e4]
GRID = np.array(sorted(set(KINKS) | {s * m for m in MAGNITUDES for s in (-1.0, 1.0)}))

CASES = [  # (function name, keyword arguments)
    ("silu", {}), ("mish", {}), ("softplus", {}), ("softplus", {"beta": 2.0, "threshold": 5.0}), ("softplus", {"beta": 0.5, "threshold": 5.0}),
    ("logsigmoid", {}), ("softsign", {}), ("elu", {}), ("elu", {"alpha": 2.0}), ("celu", {}), ("celu", {"alpha": 0.5}), ("selu", {}),
    ("leaky_relu", {}), ("leaky_relu", {"negative_slope": 0.2}), ("hardtanh", {}), ("hardtanh", {"min_val": -2.0, "max_val": 2.5}),
    ("relu6", {}), ("hardswish", {}),
]
CASE_IDS = [name + "".join(f"-{k}={v}" for k, v in options.items()) for name, options in CASES]


def _torch_value_and_grad(torch, name, options, x, weights):
    t = torch.tensor(x, requires_grad=True)
    value = getattr(torch.nn.functional, name)(t, **options)
    (value * torch.tensor(weights)).sum().backward()
    return value.detach().numpy(), t.grad.numpy()


def _kiln_value_and_grad(name, options, x, weights):
    function = getattr(F, name)
    graph = kiln.trace(lambda t: function(t, **options), kiln.TensorSpec(x.shape, x.dtype.name))
    (value,) = NumpyBackend().compile(graph)(x)
    return value, kiln.grad(lambda t: (function(t, **options) * weights).sum())(x)


def _assert_matches_torch(name, options, x, rtol, atol):
    torch = require("torch")
    weights = np.random.default_rng(3).uniform(0.5, 1.5, x.shape).astype(x.dtype)  # positive: no gradient cancels to 0 by chance
    expected_value, expected_grad = _torch_value_and_grad(torch, name, options, x, weights)
    value, grad = _kiln_value_and_grad(name, options, x, weights)
    assert value.dtype == x.dtype and grad.dtype == x.dtype
    assert np.isfinite(value).all() and np.isfinite(grad).all(), f"{name}: non-finite value or gradient at {x[~np.isfinite(value + grad)]}"
    np.testing.assert_allclose(value, expected_value, rtol=rtol, atol=atol, err_msg=f"{name} value")
    np.testing.assert_allclose(grad, expected_grad, rtol=rtol, atol=atol, err_msg=f"{name} gradient")


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_function_matches_torch_in_float64_on_kinks_and_extremes(name, options):
    """Every grid point, each kink included, must agree to 1e-10 in value and in gradient; atol is 1e-300 so a tail
    value like softplus(-30) = 9e-14 or elu's slope exp(-30) is checked to full relative accuracy."""
    x = np.concatenate([GRID, np.random.default_rng(0).standard_normal(64) * 3])
    _assert_matches_torch(name, options, x, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_function_matches_torch_in_float32(name, options):
    x = (np.random.default_rng(1).standard_normal(256) * 4).astype(np.float32)
    _assert_matches_torch(name, options, np.concatenate([x, np.float32([0, 3, -3, 6, 1, -1])]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_function_stays_finite_for_large_float32_inputs(name, options):
    """exp(89) overflows float32: no branch, taken or not, may reach it (a where's zero cotangent times inf is NaN)."""
    x = np.float32([-1e4, -100, -88, -80, -30, 30, 80, 88, 100, 1e4])
    # softsign's slope at 1e4, 1e-8, is a difference of two terms near 1e-4 in kiln's autodiff and in PyTorch's alike
    _assert_matches_torch(name, options, x, rtol=1e-5, atol=1e-10 if name == "softsign" else 1e-30)


def test_kink_slopes_are_pytorchs():
    """The one-sided slopes PyTorch picks, spelled out (the grid tests compare them to torch as well)."""
    at = np.array([0.0, -3.0, 3.0, 6.0, -1.0, 1.0])
    ones = np.ones_like(at)
    assert kiln.grad(lambda t: (F.leaky_relu(t, 0.2) * ones).sum())(at)[0] == 0.2
    assert kiln.grad(lambda t: (F.elu(t, 2.0) * ones).sum())(at)[0] == 2.0
    assert kiln.grad(lambda t: (F.celu(t, 0.5) * ones).sum())(at)[0] == 1.0
    assert kiln.grad(lambda t: (F.softplus(t) * ones).sum())(at)[0] == 0.5
    np.testing.assert_array_equal(kiln.grad(lambda t: (F.hardswish(t) * ones).sum())(at)[:3], [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(kiln.grad(lambda t: (F.relu6(t) * ones).sum())(at)[[0, 3]], [0.0, 0.0])
    np.testing.assert_array_equal(kiln.grad(lambda t: (F.hardtanh(t) * ones).sum())(at)[[4, 5]], [0.0, 0.0])


def test_invalid_arguments_raise_as_in_torch():
    with pytest.raises(ValueError, match="alpha"):
        kiln.trace(lambda t: F.celu(t, 0.0), kiln.TensorSpec((3,), "float32"))
    with pytest.raises(ValueError, match="min_val"):
        kiln.trace(lambda t: F.hardtanh(t, 1.0, -1.0), kiln.TensorSpec((3,), "float32"))
    with pytest.raises(ValueError, match="max_val"):
        nn.Hardtanh(2.0, 2.0)
    with pytest.raises(ValueError, match="dim"):
        nn.LogSoftmax()


# Modules ----------------------------------------------------------------------------------

MODULES = {  # "Name-variant": (args, kwargs) given to both kiln.nn.Name and torch.nn.Name
    "SiLU": ((), {}), "SiLU-inplace": ((), {"inplace": True}), "Mish": ((), {}), "Hardswish": ((), {}), "SELU": ((), {}),
    "ReLU6": ((), {}), "ReLU6-inplace": ((), {"inplace": True}), "LogSigmoid": ((), {}), "Softsign": ((), {}),
    "LeakyReLU": ((), {}), "LeakyReLU-0.2": ((0.2,), {"inplace": True}), "ELU": ((), {}), "ELU-2": ((2.0,), {}),
    "CELU": ((), {}), "CELU-0.5": ((0.5,), {}), "Softplus": ((), {}), "Softplus-2-5": ((2.0, 5.0), {}),
    "Hardtanh": ((), {}), "Hardtanh-bounds": ((-2.0, 2.5), {"inplace": True}), "LogSoftmax-1": ((1,), {}), "LogSoftmax--1": ((), {"dim": -1}),
    "Identity": ((3,), {"unused": True}),
}


def _build(torch, key, inplace_twin=True):
    """The kiln module and its torch twin; ``inplace_twin=False`` drops the flag from the twin, whose in-place
    update of a leaf tensor autograd would refuse."""
    name = key.split("-")[0]
    args, kwargs = MODULES[key]
    twin_kwargs = kwargs if inplace_twin else {k: v for k, v in kwargs.items() if k != "inplace"}
    return getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **twin_kwargs)


@pytest.mark.parametrize("key", sorted(MODULES))
def test_module_repr_matches_torch(key):
    module, reference = _build(require("torch"), key)
    assert module.extra_repr() == reference.extra_repr() and repr(module) == repr(reference)


@pytest.mark.parametrize("key", sorted(MODULES))
def test_module_matches_torch(key):
    torch = require("torch")
    module, reference = _build(torch, key, inplace_twin=False)
    x = np.random.default_rng(2).standard_normal((4, 7)).astype(np.float32) * 4
    x[0, :5] = [0.0, 3.0, -3.0, 6.0, -1.0]
    assert_layer_matches_torch(torch, module, reference, [x])
    assert_layer_matches_torch(torch, module, reference, [x.astype(np.float64) * 1.5 - 0.25], rtol=1e-10, atol=1e-300)


def test_identity_returns_its_input_tensor():
    spec = kiln.TensorSpec(("N", 3), "float32")
    graph = kiln.trace(nn.Identity(54, unused_argument_name=0.1), spec)
    assert not graph.ops and graph.outputs == graph.inputs


# Training and export ---------------------------------------------------------------------


def _mlp(torch_nn):
    return torch_nn.Sequential(torch_nn.Linear(5, 16), torch_nn.SiLU(), torch_nn.Linear(16, 16), torch_nn.LeakyReLU(0.1),
                               torch_nn.Linear(16, 8), torch_nn.Mish(), torch_nn.Linear(8, 3))


def test_compiled_training_step_matches_torch_and_loss_falls():
    torch = require("torch")
    kiln.manual_seed(0)
    model, reference = _mlp(nn), _mlp(torch.nn)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    losses = sgd_losses_in_lockstep(torch, model, reference, x, y, lr=0.5, steps=25)
    assert all(np.diff(losses) < 0) and losses[-1] < 0.6 * losses[0], losses


def test_onnx_export_runs_in_onnxruntime_like_kiln_and_torch(tmp_path):
    torch = require("torch")
    onnx, ort = require("onnx"), require("onnxruntime")

    def build(torch_nn):
        return torch_nn.Sequential(torch_nn.Linear(6, 12), torch_nn.Softplus(2.0, 5.0), torch_nn.Linear(12, 12), torch_nn.ELU(0.5),
                                   torch_nn.Hardswish(), torch_nn.Linear(12, 12), torch_nn.SELU(), torch_nn.Hardtanh(-0.5, 0.5),
                                   torch_nn.Linear(12, 4), torch_nn.LogSoftmax(dim=-1))

    kiln.manual_seed(0)
    model, reference = build(nn), build(torch.nn)
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    path = str(tmp_path / "activations.onnx")
    proto = kiln.export_onnx(model, [kiln.TensorSpec(("N", 6))], path)
    onnx.checker.check_model(proto, full_check=True)
    session, predict = ort.InferenceSession(path), kiln.compile(model)
    for batch in (1, 9):
        x = np.random.default_rng(batch).standard_normal((batch, 6)).astype(np.float32) * 3
        expected = reference(torch.tensor(x)).detach().numpy()
        np.testing.assert_allclose(predict(x), expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-5)
