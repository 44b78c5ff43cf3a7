"""Ops whose result's shape depends on the values (``x[mask]``, ``masked_select``, ``nonzero``, ``unique``,
``bincount``, ``histc``...) run eagerly as PyTorch's, gradients included, and stay refused in a trace
(frontend/eager_data_dependent.py)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from oracles import require_torch

RNG = np.random.default_rng(0)
VALUES = RNG.standard_normal((4, 5))
LABELS = np.array([[3, 1, 3, 0, 7], [1, 1, 2, 2, 0]])


def _both(function, *arrays):
    torch = require_torch()
    ours = function(kiln, *[kiln.tensor(a) for a in arrays])
    theirs = function(torch, *[torch.tensor(a) for a in arrays])
    return ours, theirs


def _assert_same(ours, theirs):
    if isinstance(theirs, (tuple, list)):
        assert isinstance(ours, tuple) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            _assert_same(a, b)
        return
    expected = theirs.numpy()
    assert ours.numpy().dtype == expected.dtype and ours.numpy().shape == expected.shape
    np.testing.assert_array_equal(ours.numpy(), expected)


@pytest.mark.parametrize("function", [
    lambda lib, x: x.nonzero(), lambda lib, x: lib.nonzero(x, as_tuple=True), lambda lib, x: lib.argwhere(x),
    lambda lib, x: lib.where(x > 1), lambda lib, x: (x[0, 0] > 9).nonzero(), lambda lib, x: lib.unique(x),
    lambda lib, x: x.unique(return_inverse=True, return_counts=True), lambda lib, x: x.unique(dim=1, return_counts=True),
    lambda lib, x: lib.unique_consecutive(x), lambda lib, x: x.unique_consecutive(return_inverse=True, return_counts=True, dim=0),
    lambda lib, x: x[0].bincount(), lambda lib, x: lib.bincount(x[1], minlength=9),
    lambda lib, x: x[0].bincount(x[1].float()), lambda lib, x: x[0].bincount(x[1]),
    lambda lib, x: x.float().histc(bins=4), lambda lib, x: lib.histc(x.double(), bins=3, min=1, max=2.5),
    lambda lib, x: lib.masked_select(x, x > 1), lambda lib, x: x[x > 1], lambda lib, x: x[x[:, 0] > 1],
])
def test_integer_results_match_torch(function):
    _assert_same(*_both(function, LABELS))


@pytest.mark.parametrize("pick", [
    lambda lib, x: x[x > 0], lambda lib, x: x[x.sum(1) > 0], lambda lib, x: lib.masked_select(x, x[:1] > 0),
    lambda lib, x: x.masked_select(lib.tensor(np.array([True, False, True, True, False]))),
])
def test_masked_picks_match_torch_in_value_and_gradient(pick):
    torch = require_torch()
    x, t = kiln.tensor(VALUES, requires_grad=True), torch.tensor(VALUES, requires_grad=True)
    ours, theirs = pick(kiln, x), pick(torch, t)
    np.testing.assert_array_equal(ours.numpy(), theirs.detach().numpy())
    weights = RNG.standard_normal(tuple(theirs.shape))
    (theirs * torch.tensor(weights)).sum().backward()
    (grad,) = kiln.autograd.grad((ours * kiln.tensor(weights)).sum(), x)
    np.testing.assert_array_equal(grad.numpy(), t.grad.numpy())


def test_a_loss_on_masked_outputs_trains_as_torch():
    """Each step masks a different number of positions: the eager backward follows every new shape."""
    torch = require_torch()

    def net(lib):
        return lib.nn.Sequential(lib.nn.Linear(5, 8), lib.nn.Tanh(), lib.nn.Linear(8, 3)).double()

    kiln.manual_seed(0)
    model, twin = net(kiln), net(torch)
    twin.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    for net_, lib in ((model, kiln), (twin, torch)):
        optimizer = lib.optim.SGD(net_.parameters(), lr=0.2)
        for step in range(4):
            rng = np.random.default_rng(step)
            x, y = lib.tensor(rng.standard_normal((12, 5))), lib.tensor(rng.integers(-1, 3, 12))
            valid = y >= 0
            optimizer.zero_grad()
            (lib.nn.functional.cross_entropy(net_(x)[valid], y[valid])).backward()
            optimizer.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(np.array(p.data), q.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_traced_data_dependent_shapes_are_refused_with_what_to_do():
    spec = kiln.TensorSpec((4, 5), "float64")
    with pytest.raises(kiln.TraceError, match=r"x\[mask\] has a data-dependent shape.*where\(mask, x, 0\)"):
        kiln.trace(lambda x: x[x > 0].sum(), spec)
    with pytest.raises(kiln.TraceError, match="unique\\(\\) has a data-dependent shape"):
        kiln.trace(lambda x: x.unique(), spec)
    with pytest.raises(kiln.TraceError, match="nonzero\\(\\) has a data-dependent shape"):
        kiln.trace(lambda x: kiln.where(x > 0), spec)


def test_bad_masks_and_counts_say_what():
    with pytest.raises(kiln.TraceError, match="does not match the shape of the indexed tensor"):
        kiln.tensor(VALUES)[kiln.tensor(np.ones((5,), bool))]
    with pytest.raises(kiln.TraceError, match="1-d non-negative integral"):
        kiln.tensor(np.array([1, -1])).bincount()
    F.softmax(kiln.tensor(VALUES)[kiln.tensor(VALUES) > 0], dim=0)  # the picked vector is an ordinary eager tensor


@pytest.mark.parametrize("function", [
    lambda lib, a, b: lib.allclose(a, b), lambda lib, a, b: a.allclose(b, rtol=0, atol=1e-7),
    lambda lib, a, b: lib.allclose(a, b * lib.nan, equal_nan=True), lambda lib, a, b: lib.equal(a, a),
    lambda lib, a, b: lib.equal(a, b), lambda lib, a, b: lib.equal(a, a[:1]), lambda lib, a, b: a[:1, :1].is_nonzero(),
    lambda lib, a, b: lib.allclose(a, a[:1]),
])
def test_python_bool_answers_match_torch(function):
    torch = require_torch()
    a, b = VALUES, VALUES + 1e-6 * RNG.standard_normal(VALUES.shape)
    ours = function(kiln, kiln.tensor(a), kiln.tensor(b))
    theirs = function(torch, torch.tensor(a), torch.tensor(b))
    assert type(ours) is bool and ours == theirs


def test_python_bools_stay_refused_in_a_trace():
    with pytest.raises(kiln.TraceError, match="returns a Python bool"):
        kiln.trace(lambda x: kiln.tensor(1.0) if x.allclose(x) else x, kiln.TensorSpec((2,), "float64"))


def test_one_hot_infers_the_class_count_eagerly_as_torch():
    _assert_same(*_both(lambda lib, x: lib.nn.functional.one_hot(x[1]), LABELS))
    with pytest.raises(kiln.TraceError, match="pass num_classes"):
        kiln.trace(lambda y: F.one_hot(y), kiln.TensorSpec((3,), "int64"))
    with pytest.raises(kiln.TraceError, match="empty tensor"):
        F.one_hot(kiln.tensor(np.zeros(0, np.int64)))


@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "bool"])
def test_histc_of_a_non_float_tensor_raises_torchs_not_implemented_error(dtype):
    """semseg's ``intersectionAndUnionGPU`` counts the long predictions with ``torch.histc``, which torch's CPU kernel
    refuses with ``NotImplementedError``; kiln raised a ``TraceError`` (a ``RuntimeError``) in its own words."""
    torch = require_torch()
    raised = []
    for lib in (torch, kiln):
        with pytest.raises(NotImplementedError) as error:
            lib.histc(lib.tensor([0, 1, 1, 2]).to(getattr(lib, dtype)), bins=3, min=0, max=2)
        raised.append(str(error.value))
    assert raised[0] in raised[1]


@pytest.mark.parametrize("function", [
    lambda lib, x: lib.histogram(x, bins=5), lambda lib, x: x.double().histogram(3, range=(-1.0, 1.0)),
    lambda lib, x: lib.histogram(x[0], bins=lib.tensor([-2.0, -0.5, 0.0, 0.3, 2.0]), weight=x[1].abs()),
    lambda lib, x: lib.histogram(x, 4, density=True), lambda lib, x: lib.histogram(x[:1, :1], bins=2),
    lambda lib, x: tuple(lib.histogram(x, bins=4, range=(-0.5, 0.5))),
])
def test_histogram_counts_and_edges_match_torch(function):
    ours, theirs = _both(function, VALUES.astype(np.float32))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
        assert a.numpy().dtype == b.numpy().dtype and a.numpy().shape == b.numpy().shape


def test_histogram_refuses_as_torch():
    torch = require_torch()
    for lib in (torch, kiln):
        with pytest.raises(NotImplementedError, match='"histogramdd" not implemented for \'Long\''):
            lib.histogram(lib.tensor([0, 1, 2]), 3)
        with pytest.raises(RuntimeError, match="min should not exceed max, but got min 3 max 1 for dimension 0"):
            lib.histogram(lib.tensor([0.0, 1.0]), 3, range=(3.0, 1.0))
    with pytest.raises(kiln.TraceError, match="count against fixed bin edges"):
        kiln.trace(lambda x: x.histogram(4), kiln.TensorSpec((3,)))
