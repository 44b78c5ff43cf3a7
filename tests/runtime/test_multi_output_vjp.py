"""Products of functions with several outputs (``kiln.vjp``, ``kiln.jvp``, ``kiln.jacrev``, ``kiln.hessian``), whose
backward is ONE walk from every output (``differentiate_outputs``), against torch.func in float64.

The outputs share subexpressions and composites (layer_norm, softmax, cross_entropy, and gradients made by
``nn.layer_norm_grad`` / ``nn.softmax_grad`` / ``nn.cross_entropy_grad``, which autodiff expands while it walks), one
output lies on another's path, and one is returned twice, so the walk must sum cotangents where outputs meet.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as KF
from oracles import require_torch
from test_jvp import as_torch, assert_close, rng  # the shared float64 comparison helpers

torch = require_torch()
TF = torch.nn.functional
LABELS = np.array([0, 3, 1])


def shared_layer_norm(lib, F):
    """Three outputs of one layer-norm: elementwise, reduced, and through a softmax."""
    def fn(x, w, b):
        h = F.layer_norm(x @ w, (4,), None, b)
        return h.tanh(), (h * h).sum(-1), F.softmax(h * 2, dim=-1)

    return fn


def softmax_and_cross_entropy(lib, F):
    """The probabilities, the loss and a log-softmax sum of the same logits."""
    def fn(x, w, b):
        logits = x @ w + b
        return F.softmax(logits, dim=-1), F.cross_entropy(logits, lib.tensor(LABELS)), F.log_softmax(logits, dim=-1).sum()

    return fn


def overlapping(lib, F):
    """An output on another's path (``h`` feeds the second) and the same output twice."""
    def fn(x, w, b):
        h = (x @ w + b).sin()
        return h, (h.exp() * x.sum(-1, keepdim=True)).sum(), h

    return fn


def composite_gradients(lib, F):
    """A gradient as the outputs: autodiff's own composites (layer_norm_grad, softmax_grad, cross_entropy_grad) make
    them, and differentiating them expands those composites during the walk."""
    transform = torch.func if lib is torch else kiln

    def loss(x, w, b):
        h = F.layer_norm(x @ w, (4,), b.tanh() + 1, b)
        return F.cross_entropy(h * 2, lib.tensor(LABELS)) + (F.softmax(h, dim=0) ** 2).sum()

    return transform.grad(loss, argnums=(0, 1, 2))


FUNCTIONS = {"shared layer_norm": shared_layer_norm, "softmax and cross-entropy": softmax_and_cross_entropy,
             "overlapping outputs": overlapping, "composite gradients": composite_gradients}
SHAPES = [(3, 5), (5, 4), (4,)]


def primals(seed: int = 0) -> tuple[np.ndarray, ...]:
    return tuple(rng(seed + index).normal(size=shape) for index, shape in enumerate(SHAPES))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_vjp_of_several_outputs_matches_torch_func(name):
    make = FUNCTIONS[name]
    out, vjp_fn = kiln.vjp(make(kiln, KF), *primals())
    expected_out, expected_vjp = torch.func.vjp(make(torch, TF), *as_torch(primals()))
    assert_close(out, expected_out)
    cotangents = tuple(rng(10 + index).normal(size=np.shape(o)) for index, o in enumerate(out))
    assert_close(vjp_fn(cotangents), expected_vjp(as_torch(cotangents)))
    ones_on_the_second = tuple(np.zeros_like(o) if index != 1 else np.ones_like(o) for index, o in enumerate(out))
    assert_close(vjp_fn(ones_on_the_second), expected_vjp(as_torch(ones_on_the_second)))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_jacrev_of_several_outputs_matches_torch_func(name):
    make, argnums = FUNCTIONS[name], (0, 1, 2)
    assert_close(kiln.jacrev(make(kiln, KF), argnums)(*primals()), torch.func.jacrev(make(torch, TF), argnums)(*as_torch(primals())))


@pytest.mark.parametrize("name", ["shared layer_norm", "composite gradients"])
def test_jvp_of_several_outputs_matches_torch_func(name):
    """jvp transposes a several-output VJP: both of its backward walks seed several outputs."""
    make = FUNCTIONS[name]
    got = kiln.jvp(make(kiln, KF), primals(), primals(20))
    assert_close(got, torch.func.jvp(make(torch, TF), as_torch(primals()), as_torch(primals(20))))


def cross_entropy_loss(lib, F):
    def loss(x, w, b):
        return F.cross_entropy(F.layer_norm(x @ w, (4,), None, b) * 3, lib.tensor(LABELS)) + (x @ w).tanh().sum()

    return loss


@pytest.mark.parametrize("argnums", [(1, 2), (0, 1, 2)])
def test_hessian_over_several_arguments_matches_torch_func(argnums):
    """``jacrev(grad(fn, argnums))``: a Jacobian of several outputs (the gradients, made by the composites' gradient
    ops), nested ``H[i][j]`` as JAX's and torch.func's."""
    got = kiln.hessian(cross_entropy_loss(kiln, KF), argnums)(*primals())
    assert_close(got, torch.func.hessian(cross_entropy_loss(torch, TF), argnums)(*as_torch(primals())))


def test_grad_of_a_several_output_vjp_and_jacrev_of_jacrev():
    make = FUNCTIONS["softmax and cross-entropy"]
    cotangents = (rng(30).normal(size=(3, 4)), np.array(0.7), np.array(-1.3))

    def pulled(lib, F):
        transform = torch.func if lib is torch else kiln
        return lambda x, w, b: sum((g * g).sum() for g in transform.vjp(make(lib, F), x, w, b)[1](as_lib(lib, cotangents)))

    got = kiln.grad(pulled(kiln, KF), (0, 1, 2))(*primals())
    assert_close(got, torch.func.grad(pulled(torch, TF), (0, 1, 2))(*as_torch(primals())))
    twice = kiln.jacrev(kiln.jacrev(shared_layer_norm(kiln, KF), 2), 2)(*primals())
    assert_close(twice, torch.func.jacrev(torch.func.jacrev(shared_layer_norm(torch, TF), 2), 2)(*as_torch(primals())))


def as_lib(lib, tree):
    return as_torch(tree) if lib is torch else tree


def test_vmap_of_a_several_output_vjp_and_jacrev_inside_compile():
    make = FUNCTIONS["overlapping outputs"]
    xs, (_, w, b) = rng(40).normal(size=(6, 3, 5)), primals()
    us = (rng(41).normal(size=(6, 3, 4)), rng(42).normal(size=6), rng(43).normal(size=(6, 3, 4)))

    def per_example(lib, F):
        transform = torch.func if lib is torch else kiln
        return lambda x, u, w, b: transform.vjp(make(lib, F), x, w, b)[1](u)

    got = kiln.vmap(per_example(kiln, KF), in_axes=(0, 0, None, None))(xs, us, w, b)
    assert_close(got, torch.func.vmap(per_example(torch, TF), in_dims=(0, 0, None, None))(*as_torch((xs, us, w, b))))
    compiled = kiln.compile(lambda x, w, b: kiln.jacrev(make(kiln, KF), 1)(x, w, b), batch_dim=None)
    assert_close(compiled(xs[0], w, b), torch.func.jacrev(make(torch, TF), 1)(*as_torch((xs[0], w, b))))


def test_the_outputs_stay_valid_after_vjp_fn_expands_the_composite_that_made_them():
    """fn's outputs are made by ``nn.layer_norm_grad`` (no VJP rule), which vjp_fn's walk expands in place: the outputs
    ``kiln.vjp`` returned, used after ``vjp_fn``, must still be values of the graph (they alias fn's results)."""
    x, w, u, v = (rng(50 + index).normal(size=shape) for index, shape in enumerate([(3, 4), (4,), (3, 4), (4,)]))

    def gradient(lib, F):
        transform = torch.func if lib is torch else kiln
        return transform.grad(lambda x, w: (F.layer_norm(x, (4,), w) ** 3).sum(), argnums=(0, 1))

    def products(x, w, u, v):
        out, vjp_fn = kiln.vjp(gradient(kiln, KF), x, w)
        pulled = vjp_fn((u, v))
        return out, pulled

    expected_out, expected_vjp = torch.func.vjp(gradient(torch, TF), *as_torch((x, w)))
    got = kiln.compile(products, batch_dim=None)(x, w, u, v)
    assert_close(tuple(got), (*expected_out, *expected_vjp(as_torch((u, v)))))  # compile returns the leaves, flat
