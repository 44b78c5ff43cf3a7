"""``kiln.jacrev`` / ``jacfwd`` / ``hessian``: Jacobians built on vmap over one-hot cotangents, against torch.func in
float64. The functions are written once against the torch-like API both libraries share."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as KF
from oracles import require_torch

torch = require_torch()
TF = torch.nn.functional
TIGHT = dict(rtol=1e-12, atol=1e-12)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def as_torch(*arrays):
    return [torch.from_numpy(np.asarray(a)) for a in arrays]


def assert_close(got, expected):
    if isinstance(got, tuple):
        assert isinstance(expected, tuple) and len(got) == len(expected)
        return [assert_close(ours, theirs) for ours, theirs in zip(got, expected)]
    np.testing.assert_allclose(got, expected.numpy(), **TIGHT)


def layer(x, w):
    """(2, 3) out of (3,) and (3, 3): a matrix output, so the Jacobian is (2, 3) + the input's shape."""
    h = (w @ x).tanh() * x.sum()
    return (h.unsqueeze(0) * (h.unsqueeze(1) ** 2).sin()).softmax(-1)[:2]


@pytest.mark.parametrize("argnums", [0, 1, (0, 1)])
def test_jacrev_and_jacfwd_match_torch_func(argnums):
    x, w = rng().normal(size=3), rng(1).normal(size=(3, 3))
    got = kiln.jacrev(layer, argnums)(x, w)
    assert_close(got, torch.func.jacrev(layer, argnums)(*as_torch(x, w)))
    assert_close(kiln.jacfwd(layer, argnums)(x, w), torch.func.jacfwd(layer, argnums)(*as_torch(x, w)))


def test_jacrev_of_several_outputs_and_of_a_scalar():
    x = rng().normal(size=(2, 2))

    def two(x):
        return (x.exp(), (x * x).sum())

    assert_close(kiln.jacrev(two)(x), torch.func.jacrev(two)(*as_torch(x)))


XS, YS = rng(3).normal(size=(5, 3)), np.array([0, 2, 1, 3, 2])
SCALARS = {
    "sin times x": lambda lib, F: (lambda x: (x.sin() * x).sum()),
    "log-sum-exp": lambda lib, F: (lambda x: x.exp().sum().log() + (x ** 3).mean()),
    "softmax cross-entropy of a linear model": lambda lib, F: (lambda w: F.cross_entropy(lib.tensor(XS) @ w, lib.tensor(YS))),
    "tanh MLP": lambda lib, F: (lambda w: ((lib.tensor(XS) @ w).tanh() @ w.t() * lib.tensor(XS)).sum()),
}


@pytest.mark.parametrize("name", SCALARS)
def test_hessian_matches_torch_func(name):
    shape = (3,) if name in ("sin times x", "log-sum-exp") else (3, 4)
    x = rng().normal(size=shape)
    got = kiln.hessian(SCALARS[name](kiln, KF))(x)
    assert got.shape == shape + shape
    assert_close(got, torch.func.hessian(SCALARS[name](torch, TF))(*as_torch(x)))


def test_hessian_over_two_arguments_is_nested_as_jax():
    x, y = rng().normal(size=3), rng(1).normal(size=2)

    def f(x, y):
        return (x.tanh().sum() * y.exp()).sum() + (x[:2] * y).sum() ** 2

    assert_close(kiln.hessian(f, (0, 1))(x, y), torch.func.hessian(f, (0, 1))(*as_torch(x, y)))


def test_per_example_jacobians_by_vmap_of_jacrev_and_jacrev_inside_compile():
    xs, w = rng().normal(size=(4, 3)), rng(1).normal(size=(3, 3))
    got = kiln.vmap(kiln.jacrev(layer), (0, None))(xs, w)
    assert_close(got, torch.func.vmap(torch.func.jacrev(layer), (0, None))(*as_torch(xs, w)))
    compiled = kiln.compile(lambda x, w: kiln.jacrev(layer, 1)(x, w), batch_dim=None)
    assert_close(compiled(xs[1], w), torch.func.jacrev(layer, 1)(*as_torch(xs[1], w)))


def test_integer_outputs_are_refused():
    with pytest.raises(kiln.KilnError, match="floating-point Tensors of static shapes"):
        kiln.jacrev(lambda x: x.argmax())(np.ones(3))


def test_hessian_through_a_composite_gradient():
    """layer_norm's gradient is one composite op (nn.layer_norm_grad) without a VJP rule: autodiff expands it in place
    while differentiating, and the Hessian used to come out as zeros."""
    x = rng().normal(size=(2, 4))

    def f(F):
        return lambda x: (F.layer_norm(x, (4,)) ** 3).sum()

    assert_close(kiln.hessian(f(KF))(x), torch.func.hessian(f(TF))(*as_torch(x)))
    assert_close(kiln.jacfwd(kiln.grad(f(KF)))(x), torch.func.hessian(f(TF))(*as_torch(x)))


def test_jacfwd_builds_columns_and_jacrev_rows():
    """A wide output of a narrow input: jacfwd pushes 2 one-hot tangents forward, jacrev pulls 30 cotangents back."""
    x = rng().normal(size=2)

    def wide(x):
        return (x.unsqueeze(0) * kiln.tensor(np.linspace(-1, 1, 30)).unsqueeze(1)).sin().sum(1)

    spec = kiln.TensorSpec((2,), "float64")
    largest = {name: max(int(np.size(op.attrs["value"])) for op in kiln.trace(transform(wide), spec).ops if op.name == "tensor.constant")
               for name, transform in (("jacfwd", kiln.jacfwd), ("jacrev", kiln.jacrev))}
    assert largest == {"jacfwd": 30, "jacrev": 900}  # the linspace's 30 against the (30, 30) identity
    np.testing.assert_allclose(kiln.jacfwd(wide)(x), kiln.jacrev(wide)(x), **TIGHT)
