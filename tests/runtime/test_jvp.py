"""``kiln.jvp`` / ``kiln.vjp`` and the forward-mode ``kiln.jacfwd`` against torch.func in float64.

Each function is written once against the torch-like API both libraries share and called with kiln Tensors or torch
tensors; JVPs come from kiln's transposed VJP and torch's dual numbers, so agreement to rounding checks the transpose.
"""

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


def as_torch(tree):
    if isinstance(tree, (tuple, list)):
        return type(tree)(as_torch(item) for item in tree)
    return torch.from_numpy(np.asarray(tree))


def assert_close(got, expected):
    if isinstance(expected, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(expected)
        return [assert_close(ours, theirs) for ours, theirs in zip(got, expected)]
    np.testing.assert_allclose(np.asarray(got), expected.detach().numpy(), **TIGHT)


def mlp(F):
    def forward(x, w1, b1, w2):
        return F.log_softmax(F.gelu(x @ w1 + b1) @ w2, dim=-1)

    return forward


def attention(F):
    def block(x, wq, wk, wv):
        q, k, v = x @ wq, x @ wk, x @ wv
        scores = F.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1)
        return F.layer_norm(x + scores @ v, (4,))

    return block


FUNCTIONS = {  # name: (fn of (lib, F), primal shapes)
    "elementwise": (lambda lib, F: lambda x, y: (x.sin() * y.exp() + (x / (1 + y * y)).tanh()) ** 2, [(3, 4), (3, 4)]),
    "broadcast matmul": (lambda lib, F: lambda x, w: (x @ w).sigmoid() * x.sum(-1, keepdim=True), [(2, 3, 4), (4, 5)]),
    "reductions": (lambda lib, F: lambda x: lib.stack([x.sum(), x.mean(), x.amax(), (x * x).sum(0).max(), x.var(),
                                                      lib.logsumexp(x, 1).sum(), x.norm()]), [(4, 5)]),
    "softmax, log_softmax": (lambda lib, F: lambda x: F.softmax(x, dim=-1) * F.log_softmax(x * 2, dim=0), [(3, 5)]),
    "layer_norm": (lambda lib, F: lambda x, w, b: F.layer_norm(x, (6,), w, b), [(4, 6), (6,), (6,)]),
    "mlp": (lambda lib, F: mlp(F), [(5, 4), (4, 8), (8,), (8, 3)]),
    "attention": (lambda lib, F: attention(F), [(3, 4), (4, 4), (4, 4), (4, 4)]),
}


def draws(shapes, seed):
    return tuple(rng(seed + index).normal(size=shape) for index, shape in enumerate(shapes))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_jvp_matches_torch_func(name):
    make, shapes = FUNCTIONS[name]
    primals, tangents = draws(shapes, 0), draws(shapes, 10)
    got = kiln.jvp(make(kiln, KF), primals, tangents)
    assert_close(got, torch.func.jvp(make(torch, TF), as_torch(primals), as_torch(tangents)))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_vjp_matches_torch_func(name):
    make, shapes = FUNCTIONS[name]
    primals = draws(shapes, 0)
    out, vjp_fn = kiln.vjp(make(kiln, KF), *primals)
    expected_out, expected_vjp = torch.func.vjp(make(torch, TF), *as_torch(primals))
    assert_close(out, expected_out)
    cotangent = rng(20).normal(size=np.shape(out))
    assert_close(vjp_fn(cotangent), expected_vjp(as_torch(cotangent)))
    assert_close(vjp_fn(2 * cotangent), expected_vjp(as_torch(2 * cotangent)))  # the compiled pullback, reused


@pytest.mark.parametrize("name", ["mlp", "attention"])
def test_jacfwd_is_column_by_column_and_matches_torch_func(name):
    make, shapes = FUNCTIONS[name]
    primals = draws(shapes, 0)
    argnums = tuple(range(len(shapes)))
    got = kiln.jacfwd(make(kiln, KF), argnums)(*primals)
    assert_close(got, torch.func.jacfwd(make(torch, TF), argnums)(*as_torch(primals)))
    assert_close(got, tuple(as_torch(kiln.jacrev(make(kiln, KF), argnums)(*primals))))


def nested(x, pair):
    """Several outputs, nested, from nested primals."""
    w, b = pair
    h = (x @ w + b).tanh()
    return h.sum(), (h * x[:, :1], [b.exp()])


def test_nested_primals_and_outputs():
    x, w, b = draws([(3, 2), (2, 2), (2,)], 0)
    tx, tw, tb = draws([(3, 2), (2, 2), (2,)], 5)
    primals, tangents = (x, (w, b)), (tx, (tw, tb))
    assert_close(kiln.jvp(nested, primals, tangents), torch.func.jvp(nested, as_torch(primals), as_torch(tangents)))
    out, vjp_fn = kiln.vjp(nested, *primals)
    expected_out, expected_vjp = torch.func.vjp(nested, *as_torch(primals))
    assert_close(out, expected_out)
    cotangents = (np.array(0.7), (rng(1).normal(size=(3, 2)), [rng(2).normal(size=2)]))
    assert_close(vjp_fn(cotangents), expected_vjp(as_torch(cotangents)))


def test_has_aux_returns_the_aux_untouched():
    x, v = draws([(3,), (3,)], 0)

    def f(x):
        return x.sin() * 2, x.cos()

    out, tangent, aux = kiln.jvp(f, (x,), (v,), has_aux=True)
    assert_close((out, tangent), torch.func.jvp(f, (as_torch(x),), (as_torch(v),), has_aux=True)[:2])
    np.testing.assert_allclose(aux, np.cos(x), **TIGHT)
    out, vjp_fn, aux = kiln.vjp(f, x, has_aux=True)
    np.testing.assert_allclose(vjp_fn(v)[0], 2 * np.cos(x) * v, **TIGHT)
    np.testing.assert_allclose(aux, np.cos(x), **TIGHT)


def test_integer_outputs_get_zero_tangents_and_need_no_cotangent():
    x, v = draws([(4,), (4,)], 0)
    out, tangent = kiln.jvp(lambda x: (x.exp(), x.argmax()), (x,), (v,))
    np.testing.assert_allclose(tangent[0], np.exp(x) * v, **TIGHT)
    assert tangent[1] == 0 and tangent[1].dtype == np.int64
    _, vjp_fn = kiln.vjp(lambda x: (x.exp(), x.argmax()), x)
    np.testing.assert_allclose(vjp_fn((v, np.int64(0)))[0], np.exp(x) * v, **TIGHT)


def test_inside_compile_with_a_symbolic_batch():
    make, shapes = FUNCTIONS["mlp"]
    fn = make(kiln, KF)
    compiled = kiln.compile(lambda x, tx, w1, b1, w2: kiln.jvp(lambda x: fn(x, w1, b1, w2), (x,), (tx,)),
                            batch_dim=(0, 0, None, None, None))
    weights = draws(shapes[1:], 1)
    for rows in (5, 7):  # one graph for both: the batch dim is symbolic
        x, tx = rng(rows).normal(size=(rows, 4)), rng(rows + 1).normal(size=(rows, 4))
        expected = torch.func.jvp(lambda x: make(torch, TF)(x, *as_torch(weights)), (as_torch(x),), (as_torch(tx),))
        assert_close(compiled(x, tx, *weights), expected)
    assert len(compiled.variants) == 1

    def pulled(x, u, w1, b1, w2):
        return kiln.vjp(fn, x, w1, b1, w2)[1](u)

    x, u = rng(3).normal(size=(6, 4)), rng(4).normal(size=(6, 3))
    expected = torch.func.vjp(make(torch, TF), *as_torch((x, *weights)))[1](as_torch(u))
    assert_close(kiln.compile(pulled, batch_dim=(0, 0, None, None, None))(x, u, *weights), expected)


def test_vmap_of_jvp_and_of_vjp():
    f = FUNCTIONS["elementwise"][0]
    xs, ys, ts = draws([(4, 3, 4), (3, 4), (4, 3, 4)], 0)

    def products(lib, F):
        transform = torch.func if lib is torch else kiln
        pushed = lambda x, y, t: transform.jvp(f(lib, F), (x, y), (t, t * 0.5))[1]  # noqa: E731
        pulled = lambda x, y, u: transform.vjp(f(lib, F), x, y)[1](u)  # noqa: E731
        return pushed, pulled

    for ours, theirs in zip(products(kiln, KF), products(torch, TF)):
        got = kiln.vmap(ours, in_axes=(0, None, 0))(xs, ys, ts)
        assert_close(got, torch.func.vmap(theirs, in_dims=(0, None, 0))(*as_torch((xs, ys, ts))))


def test_grad_through_jvp_and_vjp_and_jvp_of_grad():
    x, v, u = draws([(5,), (5,), (5,)], 0)

    def f(x):
        return (x.sin() * x.sum()).tanh()

    def loss(lib):
        transform = torch.func if lib is torch else kiln
        return lambda x, v, u: (transform.jvp(f, (x,), (v,))[1] ** 2).sum() + (transform.vjp(f, x)[1](u)[0] * x).sum()

    got = kiln.grad(loss(kiln), (0, 1, 2))(x, v, u)
    assert_close(got, torch.func.grad(loss(torch), (0, 1, 2))(*as_torch((x, v, u))))

    def scalar(x):
        return (f(x) * x.exp()).sum()

    # forward over reverse: the Hessian-vector product
    assert_close(kiln.jvp(kiln.grad(scalar), (x,), (v,)), torch.func.jvp(torch.func.grad(scalar), as_torch((x,)), as_torch((v,))))
    assert_close(kiln.jvp(lambda x: kiln.jvp(f, (x,), (v,))[1], (x,), (u,)),
                 torch.func.jvp(lambda x: torch.func.jvp(f, (x,), (as_torch(v),))[1], as_torch((x,)), as_torch((u,))))


def test_values_computed_outside_fn_are_constants_to_it():
    """``fn`` closes over ``y = 2 x``, computed from the primal before the product: torch.func and JAX take it as a
    constant, so J v = y * v, not 3 y v."""
    x, v = draws([(3,), (3,)], 0)

    def traced(x, v):
        y = x * 2
        return kiln.jvp(lambda x: x * y, (x,), (v,))[1], kiln.vjp(lambda x: x * y, x)[1](v)[0]

    got = kiln.compile(traced, batch_dim=None)(x, v)
    np.testing.assert_allclose(got[0], 2 * x * v, **TIGHT)
    np.testing.assert_allclose(got[1], 2 * x * v, **TIGHT)


def test_vjp_fn_of_an_output_is_not_differentiated_through_the_cotangent():
    x = rng().normal(size=3)

    def traced(x):
        out, vjp_fn = kiln.vjp(lambda x: x.sin(), x)
        return vjp_fn(out)[0]

    np.testing.assert_allclose(kiln.compile(traced, batch_dim=None)(x), np.cos(x) * np.sin(x), **TIGHT)


@pytest.mark.parametrize("primals, tangents, message", [
    ((np.ones(3),), (np.ones(4),), r"tangent 0 is \(4,\) f64, but its primal is \(3,\) f64"),
    ((np.ones(3),), (np.ones(3, np.float32),), r"tangent 0 is \(3,\) f32, but its primal is \(3,\) f64"),
    ((np.ones(3), np.ones(2)), (np.ones(3),), "tangents must nest as the primals do"),
    ((np.arange(3),), (np.ones(3),), "floating-point inputs only, but primal 0 is"),
])
def test_jvp_errors(primals, tangents, message):
    with pytest.raises(kiln.KilnError, match=message):
        kiln.jvp(lambda *xs: sum(x.sum() for x in xs), primals, tangents)


def test_vjp_and_argument_errors():
    with pytest.raises(kiln.KilnError, match="primals as a tuple or list"):
        kiln.jvp(lambda x: x, np.ones(3), np.ones(3))
    with pytest.raises(kiln.KilnError, match="floating-point inputs only, but primal 1 is"):
        kiln.vjp(lambda x, i: x * i, np.ones(3), np.arange(3))
    _, vjp_fn = kiln.vjp(lambda x: x.sin(), np.ones(3))
    with pytest.raises(kiln.KilnError, match=r"cotangent 0 is \(2,\) f64, but its output is \(3,\) f64"):
        vjp_fn(np.ones(2))
    with pytest.raises(kiln.KilnError, match="needs fn to return a pair"):
        kiln.vjp(lambda x: x.sin(), np.ones(3), has_aux=True)
