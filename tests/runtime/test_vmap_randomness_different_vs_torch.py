"""``torch.func.vmap(..., randomness="different")`` around a function with dropout in training mode (per-sample
gradients of a model with ``nn.Dropout``, DP-SGD's usual case): each example draws its own mask, and the gradient
of each example goes through that example's mask, as torch's. kiln refused every random op inside vmap ("vmap does
not batch random ops"), and ``torch.func.grad`` of a function with dropout on eager tensors ("traced random ops
(dropout in training mode); call model.eval() first"). The draws themselves differ between the libraries, so each
is checked against its own masks: ``d(h @ w2).sum() / dw1 = outer(x, w2 * mask / (1 - p))`` with the mask read off
``h`` (returned as ``aux``). ``randomness="same"`` (one mask for every example) is still refused: a strict xfail."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

RNG = np.random.default_rng(0)
W1, W2, XS = RNG.uniform(0.5, 1, (3, 16)), RNG.standard_normal(16), RNG.uniform(0.5, 1, (64, 3))
P = 0.5


def loss_with_dropout(lib):
    F = lib.nn.functional

    def loss(w1, x):
        h = F.dropout(x @ w1, p=P, training=True)  # x, w1 positive: h is zero exactly where dropped
        return (h @ lib.tensor(W2)).sum(), h
    return loss


def expected_gradients(xs, hs):
    return np.einsum("ni,nj->nij", xs, W2 * (hs != 0) / (1 - P))


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_per_example_gradients_through_per_example_masks(float64_default, name):
    lib = libraries(name)[0]
    vmapped = lib.func.vmap(lib.func.grad(loss_with_dropout(lib), has_aux=True), in_dims=(None, 0),
                            randomness="different")
    grads, hs = vmapped(lib.tensor(W1), lib.tensor(XS))
    hs = hs.numpy()
    np.testing.assert_allclose(grads.numpy(), expected_gradients(XS, hs), rtol=1e-12, atol=1e-14)
    kept = hs != 0
    assert 0.4 < kept.mean() < 0.6
    assert len({row.tobytes() for row in kept}) > 32  # the examples' masks differ


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_grad_of_dropout_on_eager_tensors(float64_default, name):
    lib = libraries(name)[0]
    grads, h = lib.func.grad(loss_with_dropout(lib), has_aux=True)(lib.tensor(W1), lib.tensor(XS[0]))
    np.testing.assert_allclose(grads.numpy(), expected_gradients(XS[:1], h.numpy()[None])[0], rtol=1e-12, atol=1e-14)


def test_draws_repeat_after_manual_seed_and_change_between_calls(float64_default):
    vmapped = kiln.func.vmap(kiln.func.grad(loss_with_dropout(kiln), has_aux=True), in_dims=(None, 0),
                             randomness="different")
    masks = []
    for _ in range(2):
        kiln.manual_seed(3)
        masks += [vmapped(kiln.tensor(W1), kiln.tensor(XS))[1].numpy() != 0 for _ in range(2)]
    np.testing.assert_array_equal(masks[0], masks[2])
    assert (masks[0] != masks[1]).any()


def test_compiled_per_example_gradients_through_their_masks(float64_default):
    """Inside ``kiln.compile(fullgraph=True)``: the mapped draws are the compiled graph's, streams apart from a draw
    of the enclosing function (its own dropout), fresh at each call."""
    F = kiln.nn.functional
    vmapped = kiln.func.vmap(kiln.func.grad(loss_with_dropout(kiln), has_aux=True), in_dims=(None, 0),
                             randomness="different")

    def step(w1, xs):
        grads, hs = vmapped(w1, xs)
        return grads, hs, F.dropout(xs @ w1, p=P, training=True)

    run = kiln.compile(step, fullgraph=True)
    first, second = run(kiln.tensor(W1), kiln.tensor(XS)), run(kiln.tensor(W1), kiln.tensor(XS))
    for grads, hs, outer in (first, second):
        np.testing.assert_allclose(grads.numpy(), expected_gradients(XS, hs.numpy()), rtol=1e-12, atol=1e-14)
        assert ((hs.numpy() != 0) != (outer.numpy() != 0)).any()  # the outer draw is not the mapped one
    assert ((first[1].numpy() != 0) != (second[1].numpy() != 0)).any()


@pytest.mark.parametrize("name", ["torch", pytest.param("kiln", marks=pytest.mark.xfail(strict=True, raises=kiln.TraceError, reason=(
    "vmap(randomness='same') is not implemented: the mapped draws batch as one draw per example (a batched "
    "tensor.random_uniform), and the batching rule has no way to draw one per-example-shaped sample and share it, so "
    "kiln refuses random ops in this mode ('does not batch random ops')")))])
def test_same_randomness_shares_one_mask(float64_default, name):
    lib = libraries(name)[0]
    vmapped = lib.func.vmap(lib.func.grad(loss_with_dropout(lib), has_aux=True), in_dims=(None, 0), randomness="same")
    grads, hs = vmapped(lib.tensor(W1), lib.tensor(XS))
    kept = hs.numpy() != 0
    assert (kept == kept[0]).all() and 0 < kept.mean() < 1
    np.testing.assert_allclose(grads.numpy(), expected_gradients(XS, hs.numpy()), rtol=1e-12, atol=1e-14)


def test_error_randomness_refuses_random_ops():
    vmapped = kiln.func.vmap(kiln.func.grad(loss_with_dropout(kiln), has_aux=True), in_dims=(None, 0))
    with pytest.raises(kiln.TraceError, match="does not batch random ops.*randomness='error'"):
        vmapped(kiln.tensor(W1), kiln.tensor(XS))
