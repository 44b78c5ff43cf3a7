"""The legacy ``nn.utils.spectral_norm`` / ``remove_spectral_norm`` vs torch 2.13 in float64: ``weight_orig``,
``weight_u``, ``weight_v`` in ``state_dict``; a power iteration per training-mode forward (the buffers written), none in
eval mode; two forwards before one ``backward()`` each with their own vectors; in a compiled training step; the errors
PyTorch raises. Also what the SNGAN probe found beside it: the parametrization's ``spectral_norm`` called twice before
``backward()``, a buffer's ``copy_`` after a graph read it, ``clone()`` of a buffer, and the legacy ``weight_norm``'s
FutureWarning."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch

TIGHT = dict(rtol=1e-12, atol=1e-14)


def _np(tensor):
    """A copy of a kiln or torch tensor's values."""
    return np.array(tensor.detach().numpy())

LAYERS = {
    "linear": (lambda lib: lib.nn.Linear(5, 3), (2, 5)),
    "conv2d": (lambda lib: lib.nn.Conv2d(2, 3, 3), (2, 2, 5, 5)),
    "conv_transpose2d (dim 1)": (lambda lib: lib.nn.ConvTranspose2d(3, 2, 3), (2, 3, 4, 4)),
    "conv1d, 3 iterations": (lambda lib: lib.nn.Conv1d(2, 4, 3), (2, 2, 6)),
}


def _twins(layer, torch, **options):
    """The layer with spectral norm in kiln and in torch, torch's holding kiln's state (u and v included)."""
    make, _ = LAYERS[layer]
    kiln.manual_seed(0)
    ours = kiln.nn.utils.spectral_norm(make(kiln).double(), **options)
    theirs = torch.nn.utils.spectral_norm(make(torch).double(), **options)
    theirs.load_state_dict({key: torch.tensor(np.array(value)) for key, value in ours.state_dict().items()})
    return ours, theirs


def _assert_same_state(ours, theirs):
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(np.array(ours.state_dict()[key]), value.numpy(), **TIGHT, err_msg=key)


def _options(layer):
    return {"n_power_iterations": 3} if "3 iterations" in layer else {}


@pytest.mark.parametrize("layer", LAYERS)
def test_registration_names_and_shapes_as_torch(layer):
    torch = require_torch()
    make, _ = LAYERS[layer]
    ours, theirs = kiln.nn.utils.spectral_norm(make(kiln)), torch.nn.utils.spectral_norm(make(torch))
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    assert [name for name, _ in ours.named_parameters()] == [name for name, _ in theirs.named_parameters()]
    for name in ("weight_u", "weight_v"):  # unit vectors
        assert np.linalg.norm(_np(getattr(ours, name))) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_array_equal(_np(ours.weight), _np(ours.weight_orig.detach()))  # before any forward


@pytest.mark.parametrize("layer", LAYERS)
def test_training_forwards_update_the_vectors_and_gradients_as_torch(layer):
    """Each training-mode forward runs the iteration; the first of two forwards before ``backward()`` keeps its own
    ``u``/``v`` for its gradient (PyTorch clones them); eval mode leaves the buffers."""
    torch = require_torch()
    ours, theirs = _twins(layer, torch, **_options(layer))
    x = np.random.default_rng(0).standard_normal(LAYERS[layer][1])
    for _ in range(3):
        results = []
        for model, lib in ((ours, kiln), (theirs, torch)):
            first, second = model(lib.tensor(x)), model(lib.tensor(2 * x))
            (first.square().sum() + second.sum()).backward()
            results.append((_np(first.detach()), _np(model.weight.detach()), _np(model.weight_orig.grad)))
        for mine, twin in zip(*results):
            np.testing.assert_allclose(mine, twin, **TIGHT)
        _assert_same_state(ours, theirs)
    ours.eval(), theirs.eval()
    u_before = _np(ours.weight_u)
    np.testing.assert_allclose(_np(ours(kiln.tensor(x)).detach()), theirs(torch.tensor(x)).detach().numpy(), **TIGHT)
    np.testing.assert_array_equal(_np(ours.weight_u), u_before)
    _assert_same_state(ours, theirs)


def test_compiled_training_step_writes_the_vectors_back_as_torch():
    torch = require_torch()
    ours, theirs = _twins("conv2d", torch)

    def step_for(lib, model):
        optimizer = lib.optim.Adam(model.parameters(), lr=0.05, betas=(0.0, 0.9))

        def step(x):
            optimizer.zero_grad()
            loss = lib.nn.ReLU()(1.0 - model(x)).mean() + model(x * 0.5).square().mean()
            loss.backward()
            optimizer.step()
            return loss.detach()

        return step

    compiled, eager = kiln.compile(step_for(kiln, ours), fullgraph=True), step_for(torch, theirs)
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal((2, 2, 5, 5))
        assert compiled(kiln.tensor(x)).item() == pytest.approx(eager(torch.tensor(x)).item(), rel=1e-12)
    _assert_same_state(ours, theirs)


@pytest.mark.parametrize("layer", LAYERS)
def test_remove_spectral_norm_as_torch(layer):
    torch = require_torch()
    ours, theirs = _twins(layer, torch, **_options(layer))
    x = np.random.default_rng(2).standard_normal(LAYERS[layer][1])
    ours(kiln.tensor(x)), theirs(torch.tensor(x))
    kiln.nn.utils.remove_spectral_norm(ours), torch.nn.utils.remove_spectral_norm(theirs)
    _assert_same_state(ours, theirs)
    assert [name for name, _ in ours.named_parameters()] == [name for name, _ in theirs.named_parameters()]
    assert ours.weight.requires_grad and "_forward_pre_hooks" not in ours.__dict__ or not ours._forward_pre_hooks
    np.testing.assert_allclose(_np(ours(kiln.tensor(x)).detach()), theirs(torch.tensor(x)).detach().numpy(), **TIGHT)


@pytest.mark.parametrize("case, error", [("twice", RuntimeError), ("no such parameter", KeyError),
                                         ("zero iterations", ValueError), ("remove unregistered", ValueError)])
def test_refusals_as_torch(case, error):
    torch = require_torch()
    messages = []
    for lib in (torch, kiln):
        layer = lib.nn.Linear(3, 2)
        with pytest.raises(error) as raised:
            if case == "twice":
                lib.nn.utils.spectral_norm(lib.nn.utils.spectral_norm(layer))
            elif case == "no such parameter":
                lib.nn.utils.spectral_norm(layer, name="kernel")
            elif case == "zero iterations":
                lib.nn.utils.spectral_norm(layer, n_power_iterations=0)
            else:
                lib.nn.utils.remove_spectral_norm(layer)
        messages.append(str(raised.value).split(" in Linear(")[0])
    if case == "no such parameter":  # torch's KeyError is its dict lookup's ('kernel'); kiln's names the parameters
        assert "'kernel'" in messages[1] and "['weight', 'bias']" in messages[1]
    else:
        assert messages[1] == messages[0]


def test_parametrization_spectral_norm_called_twice_before_backward_as_torch():
    """kiln's parametrization read ``_u``/``_v`` themselves for sigma: the second forward's iteration changed the
    values the first forward's gradient was computed from (silently, 1e-4 off in the SNGAN probe)."""
    torch = require_torch()
    kiln.manual_seed(0)
    ours = kiln.nn.utils.parametrizations.spectral_norm(kiln.nn.Linear(4, 3).double())
    theirs = torch.nn.utils.parametrizations.spectral_norm(torch.nn.Linear(4, 3).double())
    theirs.load_state_dict({key: torch.tensor(np.array(value)) for key, value in ours.state_dict().items()})
    x = np.arange(8.0).reshape(2, 4)
    for model, lib in ((ours, kiln), (theirs, torch)):
        (model(lib.tensor(x)).sum() + model(lib.tensor(2 * x)).square().sum()).backward()
    np.testing.assert_allclose(_np(ours.parametrizations.weight.original.grad),
                               theirs.parametrizations.weight.original.grad.numpy(), **TIGHT)


def _buffer_holder(lib):
    module = lib.nn.Linear(3, 1, bias=False).double()
    module.register_buffer("u", lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64))
    return module


def test_backward_after_copy_into_a_buffer_the_graph_read_is_refused_as_torch():
    """It replayed the forward with the new values (a gradient of [10, 20, 30] for one of [1, 2, 3])."""
    torch = require_torch()
    for lib in (torch, kiln):
        module = _buffer_holder(lib)
        loss = (module.weight * module.u).sum()
        with lib.no_grad():
            module.u.copy_(lib.tensor([10.0, 20.0, 30.0], dtype=lib.float64))
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


@pytest.mark.parametrize("under_no_grad", [False, True])
def test_a_clone_of_a_buffer_keeps_its_values_for_backward_as_torch(under_no_grad):
    """The clone of a tensor without gradient is a leaf of its own: the buffer written after it does not reach
    ``backward()`` (refused before: the clone's chain led back to the buffer)."""
    torch = require_torch()
    grads = []
    for lib in (torch, kiln):
        module = _buffer_holder(lib)
        with lib.no_grad() if under_no_grad else warnings.catch_warnings():
            copy = module.u.clone()
        loss = (module.weight * copy).sum()
        with lib.no_grad():
            module.u.copy_(lib.tensor([10.0, 20.0, 30.0], dtype=lib.float64))
        loss.backward()
        grads.append(_np(module.weight.grad))
        assert not copy.requires_grad
    np.testing.assert_array_equal(grads[1], grads[0])
    np.testing.assert_array_equal(grads[1], [[1.0, 2.0, 3.0]])


def test_legacy_weight_norm_warns_as_torch():
    torch = require_torch()
    for lib in (torch, kiln):
        with pytest.warns(FutureWarning, match=rf"`{lib.__name__}.nn.utils.weight_norm` is deprecated in favor of "
                                               rf"`{lib.__name__}.nn.utils.parametrizations.weight_norm`"):
            lib.nn.utils.weight_norm(lib.nn.Linear(3, 2))
