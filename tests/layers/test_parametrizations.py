"""``kiln.nn.utils.parametrize`` and ``parametrizations`` (weight_norm, spectral_norm, orthogonal) against PyTorch's in
float64: forward values and the gradients w.r.t. the originals to rtol 1e-10 on Linear and Conv2d, SGD and Adam steps in
lockstep (parameters and the spectral norm's u, v buffers), state_dict keys and values both ways, removal, eval mode,
chains, caching, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.compiler.errors import KilnError, TraceError
from kiln.frontend import init
from kiln.frontend.parametrizations import matrix_exp, power_iterations
from kiln.nn.utils import parametrize
from kiln.nn.utils.parametrizations import orthogonal, spectral_norm, weight_norm
from layer_parity import kiln_outputs_and_grads, normal, randomize
from oracles import require

F64 = dict(rtol=1e-10, atol=1e-12)


@pytest.fixture(autouse=True)
def _torch_in_float64():
    """PyTorch's default dtype float64 for this file's twins, restored after each test (it is process-wide: other
    files' float32 twins would get float64 biases)."""
    torch = require("torch")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _torch():
    return require("torch")


def _to_torch(torch, module, twin):
    twin.load_state_dict({key: torch.tensor(np.array(value)) for key, value in module.state_dict().items()})


def _assert_same_state(torch_module, module, **tolerances):
    theirs = torch_module.state_dict()
    ours = module.state_dict()
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        np.testing.assert_allclose(ours[key], value.numpy(), err_msg=key, **(tolerances or F64))


PARAMETRIZE = {
    "weight_norm": lambda m: weight_norm(m),
    "weight_norm_dim1": lambda m: weight_norm(m, dim=1),
    "weight_norm_none": lambda m: weight_norm(m, dim=None),
    "spectral_norm": lambda m: spectral_norm(m),
    "spectral_norm_2_iterations_dim1": lambda m: spectral_norm(m, n_power_iterations=2, dim=1),
    "orthogonal_matrix_exp": lambda m: orthogonal(m, orthogonal_map="matrix_exp"),
    "orthogonal_cayley": lambda m: orthogonal(m, orthogonal_map="cayley"),
}


def _torch_parametrize(torch, name):
    P = torch.nn.utils.parametrizations
    return {"weight_norm": lambda m: P.weight_norm(m), "weight_norm_dim1": lambda m: P.weight_norm(m, dim=1),
            "weight_norm_none": lambda m: P.weight_norm(m, dim=None), "spectral_norm": lambda m: P.spectral_norm(m),
            "spectral_norm_2_iterations_dim1": lambda m: P.spectral_norm(m, n_power_iterations=2, dim=1),
            "orthogonal_matrix_exp": lambda m: P.orthogonal(m, orthogonal_map="matrix_exp"),
            "orthogonal_cayley": lambda m: P.orthogonal(m, orthogonal_map="cayley")}[name]


LAYERS = {
    "linear": (lambda lib: lib.Linear(5, 4), (6, 5)),
    "square_linear": (lambda lib: lib.Linear(4, 4), (6, 4)),
    "conv2d": (lambda lib: lib.Conv2d(3, 4, 3, padding=1), (2, 3, 5, 5)),
}


def _pair(torch, layer, kind, seed=1):
    """The layer parametrized in kiln and in torch, kiln's originals random (small for orthogonal maps), torch's equal."""
    build, input_shape = LAYERS[layer]
    ours, theirs = build(nn).double(), build(torch.nn)
    PARAMETRIZE[kind](ours)
    _torch_parametrize(torch, kind)(theirs)
    randomize(ours, seed)
    if kind.startswith("orthogonal"):
        ours.parametrizations.weight.original.data[...] *= 0.3
    _to_torch(torch, ours, theirs)
    return ours, theirs, normal(*input_shape, dtype="float64", seed=seed + 10)


CASES = [(layer, kind) for layer in ("linear", "conv2d") for kind in PARAMETRIZE
         if not (layer == "linear" and kind.startswith("orthogonal"))] + [("square_linear", "orthogonal_matrix_exp"),
                                                                         ("square_linear", "orthogonal_cayley")]


@pytest.mark.parametrize("layer,kind", CASES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_values_and_gradients_match_torch(layer, kind, training):
    torch = _torch()
    ours, theirs, x = _pair(torch, layer, kind)
    ours.train(training), theirs.train(training)
    np.testing.assert_allclose(ours.weight, theirs.weight.detach().numpy(), **F64)  # read outside a trace: an array
    _assert_same_state(theirs, ours)  # the read ran the spectral norm's power iteration in both (training mode)
    _assert_matches(torch, ours, theirs, x)


def _assert_matches(torch, ours, theirs, x, call=lambda module, x: module(x)):
    """Output and gradients w.r.t. every original of ``sum(call(module, x) * weights)``, one forward each (the
    shared harness runs torch twice, and a spectral norm in training mode iterates on each)."""
    shape = kiln.trace(lambda x: call(ours, x), kiln.TensorSpec(x.shape, "float64")).outputs[0].type.shape  # no buffer writes
    weights = normal(*shape, dtype="float64", seed=11)
    output, grads, _ = kiln_outputs_and_grads(ours, call, [x], weights)
    expected = call(theirs, torch.tensor(x))
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(output, expected.detach().numpy(), err_msg="output", **F64)
    theirs_named = dict(theirs.named_parameters())
    assert list(grads) == list(theirs_named)
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, theirs_named[name].grad.numpy(), err_msg=name, **F64)


@pytest.mark.parametrize("shape,orthogonal_map", [((5, 3), "matrix_exp"), ((3, 5), "cayley"), ((2, 3, 4), "matrix_exp")])
def test_orthogonal_rectangular_and_batched(shape, orthogonal_map):
    torch = _torch()

    ours = nn.Module()
    ours.weight = nn.Parameter(normal(*shape, dtype="float64"))
    theirs = torch.nn.Module()
    theirs.weight = torch.nn.Parameter(torch.tensor(normal(*shape, dtype="float64")))
    orthogonal(ours, orthogonal_map=orthogonal_map)
    torch.nn.utils.parametrizations.orthogonal(theirs, orthogonal_map=orthogonal_map)
    ours.parametrizations.weight.original.data[...] = 0.4 * normal(*shape, dtype="float64", seed=3)
    _to_torch(torch, ours, theirs)
    q = ours.weight
    np.testing.assert_allclose(q, theirs.weight.detach().numpy(), **F64)
    wide = shape[-2] < shape[-1]
    gram = q @ np.swapaxes(q, -1, -2) if wide else np.swapaxes(q, -1, -2) @ q
    np.testing.assert_allclose(gram, np.broadcast_to(np.eye(min(shape[-2:])), gram.shape), atol=1e-12)
    weights = normal(*shape, dtype="float64", seed=5)
    grad = kiln.grad(lambda o: (ours.parametrizations.weight[0](o) * weights).sum())(ours.parametrizations.weight.original.data)
    (theirs.weight * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(grad, theirs.parametrizations.weight.original.grad.numpy(), **F64)


def test_matrix_exp_scales_and_squares_large_norms():
    torch = _torch()
    a = normal(3, 6, 6, dtype="float64") * np.array([0.01, 5.0, 300.0])[:, None, None]
    a = a - np.swapaxes(a, -1, -2)  # skew-symmetric, as the orthogonal maps make them
    np.testing.assert_allclose(kiln.compile(matrix_exp, batch_dim=None)(a), torch.matrix_exp(torch.tensor(a)).numpy(), rtol=1e-9, atol=1e-12)


def _models(library, kind):
    P = library.nn.utils.parametrizations if library is not nn else None
    spectral, norm = (P.spectral_norm, P.weight_norm) if P else (spectral_norm, weight_norm)
    ortho = P.orthogonal if P else orthogonal
    lib = library.nn if P else nn
    if kind == "mlp":
        return lib.Sequential(spectral(lib.Linear(6, 8)), lib.Tanh(), norm(lib.Linear(8, 4)), lib.Tanh(),
                              ortho(lib.Linear(4, 4), orthogonal_map="cayley"), lib.Tanh(), spectral(lib.Linear(4, 3), n_power_iterations=2))
    return lib.Sequential(spectral(lib.Conv2d(2, 3, 3)), lib.Tanh(), norm(lib.Conv2d(3, 2, 3, padding=1), dim=None), lib.Flatten(),
                          ortho(lib.Linear(18, 18), orthogonal_map="matrix_exp"), lib.Linear(18, 3))


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_training_steps_in_lockstep_with_torch(kind, optimizer):
    torch = _torch()
    kiln.manual_seed(0)
    ours, theirs = _models(nn, kind).double(), _models(torch, kind)
    for module in ours.modules():
        if parametrize.is_parametrized(module) and "base" not in module.parametrizations.weight[0]._buffers:
            randomize(module.parametrizations, seed=4)
    _to_torch(torch, ours, theirs)
    x = normal(*((5, 6) if kind == "mlp" else (5, 2, 5, 5)), dtype="float64", seed=2)
    y = normal(5, 3, dtype="float64", seed=3)
    options = dict(lr=0.05) if optimizer == "SGD" else dict(lr=0.01)
    step = kiln.compile_train_step(ours, lambda out, t: ((out - t) ** 2).mean(), getattr(kiln.optim, optimizer)(ours.parameters(), **options))
    torch_optimizer = getattr(torch.optim, optimizer)(theirs.parameters(), **options)
    for _ in range(4):
        loss = float(step(x, y))
        torch_optimizer.zero_grad()
        expected = ((theirs(torch.tensor(x)) - torch.tensor(y)) ** 2).mean()
        expected.backward()
        torch_optimizer.step()
        np.testing.assert_allclose(loss, expected.item(), rtol=1e-10)
        _assert_same_state(theirs, ours, rtol=1e-9, atol=1e-11)


def test_spectral_norm_eval_mode_keeps_u_and_v():
    torch = _torch()
    ours, theirs, x = _pair(torch, "linear", "spectral_norm")
    ours.eval(), theirs.eval()
    u = ours.parametrizations.weight[0]._u.data.copy()
    out = kiln.compile(ours)(x)
    np.testing.assert_array_equal(ours.parametrizations.weight[0]._u.data, u)
    np.testing.assert_allclose(out, theirs(torch.tensor(x)).detach().numpy(), **F64)
    ours.train(), theirs.train()
    kiln.compile(ours)(x), theirs(torch.tensor(x))  # training mode: one power iteration, kept
    assert not np.allclose(ours.parametrizations.weight[0]._u.data, u, rtol=1e-13, atol=0)
    _assert_same_state(theirs, ours)


def test_spectral_norm_registration_runs_15_power_iterations_and_one_read():
    torch = _torch()
    weight = normal(4, 3, 2, dtype="float64")
    kiln.manual_seed(7)
    u0, v0 = (init.normal((n,), dtype="float64") for n in (3, 8))
    kiln.manual_seed(7)
    ours = nn.Module()
    ours.weight = nn.Parameter(weight)
    spectral_norm(ours, dim=1)
    reference = torch.nn.utils.parametrizations._SpectralNorm(torch.tensor(weight), dim=1)
    reference._u.copy_(torch.nn.functional.normalize(torch.tensor(u0), dim=0))
    reference._v.copy_(torch.nn.functional.normalize(torch.tensor(v0), dim=0))
    reference._power_method(reference._reshape_weight_to_matrix(torch.tensor(weight)), 16)
    np.testing.assert_allclose(ours.parametrizations.weight[0]._u.data, reference._u.numpy(), **F64)
    np.testing.assert_allclose(ours.parametrizations.weight[0]._v.data, reference._v.numpy(), **F64)
    u, v = power_iterations(np.moveaxis(weight, 1, 0).reshape(3, 8), u0 / np.linalg.norm(u0), v0 / np.linalg.norm(v0), 16, 1e-12)
    np.testing.assert_allclose(u, reference._u.numpy(), **F64)
    np.testing.assert_allclose(v, reference._v.numpy(), **F64)


def test_state_dicts_load_both_ways():
    torch = _torch()
    ours, theirs = _models(nn, "mlp").double(), _models(torch, "mlp")
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert "0.parametrizations.weight.0._u" in ours.state_dict() and "2.parametrizations.weight.original1" in ours.state_dict()
    with torch.no_grad():
        for parameter in theirs.parameters():
            parameter.mul_(0.5).add_(0.01)
    ours.load_state_dict(theirs.state_dict())  # torch tensors load as they are
    _assert_same_state(theirs, ours)
    ours.eval(), theirs.eval()
    for index in (0, 2, 4, 6):
        np.testing.assert_allclose(ours[index].weight, theirs[index].weight.detach().numpy(), **F64)
    randomize(ours, seed=9)
    _to_torch(torch, ours, theirs)
    _assert_same_state(theirs, ours)


@pytest.mark.parametrize("kind", ["weight_norm", "spectral_norm", "orthogonal_cayley"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_remove_parametrizations_leaves_the_same_weight(kind, training):
    torch = _torch()
    ours, theirs, x = _pair(torch, "square_linear", kind)
    ours.train(training), theirs.train(training)
    parametrize.remove_parametrizations(ours, "weight")
    torch.nn.utils.parametrize.remove_parametrizations(theirs, "weight")
    assert type(ours) is nn.Linear and not parametrize.is_parametrized(ours)
    assert isinstance(ours.weight, nn.Parameter)
    _assert_same_state(theirs, ours)
    np.testing.assert_allclose(kiln.compile(ours)(x), theirs(torch.tensor(x)).detach().numpy(), **F64)


def test_remove_without_leaving_parametrized():
    ours = nn.Linear(3, 2).double()
    original = ours.weight.data.copy()
    spectral_norm(ours)
    parametrize.remove_parametrizations(ours, "weight", leave_parametrized=False)
    np.testing.assert_array_equal(ours.weight.data, original)
    weight_norm(ours)
    with pytest.raises(ValueError, match="sequence of tensors"):
        parametrize.remove_parametrizations(ours, "weight", leave_parametrized=False)


def _custom(library):
    class Symmetric(library.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).mT

        def right_inverse(self, A):
            return A.triu()

    class Scale(library.Module):
        def __init__(self):
            super().__init__()
            self.scale = library.Parameter(library_tensor(library, [1.5]))

        def forward(self, X):
            return X * self.scale

        def right_inverse(self, A):
            return A / 1.5

    return Symmetric(), Scale()


def library_tensor(library, values):
    return np.array(values) if library is nn else __import__("torch").tensor(values)


def test_chained_parametrizations_with_right_inverse_and_assignment():
    torch = _torch()
    ours, theirs, x = _pair(torch, "square_linear", "weight_norm")
    for module, library in ((ours, nn), (theirs, torch.nn)):
        symmetric, scale = _custom(library)
        (parametrize if library is nn else torch.nn.utils.parametrize).register_parametrization(module, "weight", symmetric)
        (parametrize if library is nn else torch.nn.utils.parametrize).register_parametrization(module, "weight", scale)
    assert len(ours.parametrizations.weight) == 3
    assert list(ours.state_dict()) == list(theirs.state_dict())
    _to_torch(torch, ours, theirs)
    _assert_matches(torch, ours, theirs, x)
    np.testing.assert_allclose(ours.weight, ours.weight.T, **F64)
    target = normal(4, 4, dtype="float64", seed=4)
    target = target + target.T
    ours.weight = target  # right_inverse through the chain: Scale, Symmetric, then weight norm's
    with torch.no_grad():
        theirs.weight = torch.tensor(target)
    _assert_same_state(theirs, ours)
    np.testing.assert_allclose(ours.weight, target, **F64)


def test_a_buffer_can_be_parametrized_and_is_saved_as_a_buffer():
    ours = nn.Module()
    ours.register_buffer("table", np.arange(4.0).reshape(2, 2))
    symmetric, _ = _custom(nn)
    parametrize.register_parametrization(ours, "table", symmetric)
    assert isinstance(ours.parametrizations.table.original, nn.Buffer)
    np.testing.assert_array_equal(ours.table, [[0.0, 1.0], [1.0, 3.0]])


def test_cached_runs_the_power_iteration_once_per_trace():
    torch = _torch()
    ours, theirs, x = _pair(torch, "linear", "spectral_norm")
    twice = lambda layer: (lambda h: (layer.weight * 2).sum() + h.sum() + layer.weight.sum())  # noqa: E731
    with parametrize.cached():
        kiln.compile(twice(ours), batch_dim=None)(x)
    with torch.nn.utils.parametrize.cached():
        twice(theirs)(torch.tensor(x))
    _assert_same_state(theirs, ours)
    kiln.compile(twice(ours), batch_dim=None)(x)  # uncached: two iterations, in each
    twice(theirs)(torch.tensor(x))
    _assert_same_state(theirs, ours)


def test_is_parametrized_and_type_before():
    layer = nn.Linear(3, 3)
    assert not parametrize.is_parametrized(layer)
    weight_norm(layer)
    assert parametrize.is_parametrized(layer) and parametrize.is_parametrized(layer, "weight")
    assert not parametrize.is_parametrized(layer, "bias")
    assert type(layer).__name__ == "ParametrizedLinear" and parametrize.type_before_parametrizations(layer) is nn.Linear
    assert "parametrizations.weight.original0" in dict(layer.named_parameters())


def test_errors_say_what_is_wrong():
    layer = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="does not have a parameter, a buffer, or a parametrized element with name 'wieght'"):
        parametrize.register_parametrization(layer, "wieght", nn.Identity())
    with pytest.raises(KilnError, match="must be a kiln nn.Module"):
        parametrize.register_parametrization(layer, "weight", lambda w: w * 2)
    with pytest.raises(IndexError, match="Dimension out of range"):
        spectral_norm(nn.Linear(3, 2), dim=2)
    with pytest.raises(IndexError, match="dim 5 is out of range"):
        weight_norm(nn.Linear(3, 2), dim=5)
    with pytest.raises(ValueError, match="n_power_iterations"):
        spectral_norm(nn.Linear(3, 2), n_power_iterations=0)
    with pytest.raises(ValueError, match="no parameter or buffer with name 'kernel'"):
        weight_norm(nn.Linear(3, 2), name="kernel")
    with pytest.raises(ValueError, match="Expected a matrix"):
        orthogonal(nn.Linear(3, 2), name="bias")
    with pytest.raises(ValueError, match="does not have a parametrization on weight"):
        parametrize.remove_parametrizations(nn.Linear(3, 2), "weight")

    class Shrink(nn.Module):
        def forward(self, X):
            return X[:1]

    with pytest.raises(ValueError, match="may not change the shape"):
        parametrize.register_parametrization(nn.Linear(3, 2), "weight", Shrink())
    parametrize.register_parametrization(nn.Linear(3, 2), "weight", Shrink(), unsafe=True)


def test_assigning_inside_a_trace_names_the_users_line():
    layer = spectral_norm(nn.Linear(3, 2))

    def forward(x):
        layer.weight = x  # the offending line
        return x

    with pytest.raises(TraceError, match=r"test_parametrizations.py:\d+ in forward(.|\n)*assigning to a parametrized tensor"):
        kiln.compile(forward, batch_dim=None)(np.ones((2, 3), np.float32))


def test_a_shape_error_in_a_parametrization_names_its_line():
    class Bad(nn.Module):
        def forward(self, X):
            return X @ X  # (2, 3) @ (2, 3)

    layer = nn.Linear(3, 2)
    with pytest.raises(KilnError, match=r"test_parametrizations.py:\d+ in forward"):
        parametrize.register_parametrization(layer, "weight", Bad())


def test_orthogonal_without_trivialization_keeps_the_original():
    torch = _torch()
    ours = nn.Linear(4, 4).double()
    theirs = torch.nn.Linear(4, 4)
    _to_torch(torch, ours, theirs)
    orthogonal(ours, orthogonal_map="cayley", use_trivialization=False)
    torch.nn.utils.parametrizations.orthogonal(theirs, orthogonal_map="cayley", use_trivialization=False)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["bias", "parametrizations.weight.original"]
    _assert_same_state(theirs, ours)
    _assert_matches(torch, ours, theirs, normal(3, 4, dtype="float64"))
    with pytest.raises(NotImplementedError, match="use_trivialization=False"):
        ours.weight = np.eye(4)


@pytest.mark.parametrize("layer", ["linear", "conv2d"])
@pytest.mark.parametrize("dim", [0, 1, None])
def test_legacy_weight_norm_matches_torch(layer, dim):
    torch = _torch()
    build, input_shape = LAYERS[layer]
    ours, theirs = build(nn).double(), build(torch.nn)
    _to_torch(torch, ours, theirs)
    kiln.nn.utils.weight_norm(ours, dim=dim)
    torch.nn.utils.weight_norm(theirs, dim=dim)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["bias", "weight_g", "weight_v"]
    _assert_same_state(theirs, ours)
    randomize(ours, seed=6)
    _to_torch(torch, ours, theirs)
    x = normal(*input_shape, dtype="float64", seed=8)
    _assert_matches(torch, ours, theirs, x)
    np.testing.assert_allclose(ours.weight, theirs.weight.detach().numpy(), **F64)
    spectral_norm(ours, name="bias")  # a parametrization of another tensor of the same module, removed after
    kiln.nn.utils.remove_weight_norm(ours)
    torch.nn.utils.remove_weight_norm(theirs)
    assert parametrize.is_parametrized(ours, "bias") and type(ours).__name__.startswith("Parametrized")
    parametrize.remove_parametrizations(ours, "bias", leave_parametrized=False)
    assert type(ours) is type(build(nn)) and list(ours.state_dict()) == ["weight", "bias"]
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[key], value.numpy(), err_msg=key, **F64)
    with pytest.raises(ValueError, match="weight_norm of 'weight' not found"):
        kiln.nn.utils.remove_weight_norm(ours)
