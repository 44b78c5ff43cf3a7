"""``TransformedDistribution``, ``LogNormal`` and ``kiln.distributions.transforms`` against ``torch.distributions`` in
float64: each transform's forward, inverse and log-determinant (values and gradients), composed transforms' event-dim
bookkeeping, log_prob of flows over vectors, SAC's tanh-squashed Gaussian with a cached inverse, and draws' shapes."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

X = np.linspace(-1.5, 2.0, 12).reshape(3, 4)
LOC, SCALE = np.linspace(-0.5, 0.5, 4), np.linspace(0.5, 2.0, 4)

TRANSFORMS = {
    "exp": lambda D, p: D.transforms.ExpTransform(),
    "affine numbers": lambda D, p: D.transforms.AffineTransform(0.3, -2.0),
    "affine tensors": lambda D, p: D.transforms.AffineTransform(p[0], p[1]),
    "affine event_dim=1": lambda D, p: D.transforms.AffineTransform(p[0], p[1], event_dim=1),
    "sigmoid": lambda D, p: D.transforms.SigmoidTransform(),
    "tanh": lambda D, p: D.transforms.TanhTransform(),
    "softplus": lambda D, p: D.transforms.SoftplusTransform(),
    "compose affine exp": lambda D, p: D.transforms.ComposeTransform([D.transforms.AffineTransform(p[0], p[1]), D.transforms.ExpTransform()]),
    "compose event_dim": lambda D, p: D.transforms.ComposeTransform([D.transforms.TanhTransform(), D.transforms.AffineTransform(p[0], p[1], event_dim=1)]),
    "inverse of sigmoid": lambda D, p: D.transforms.SigmoidTransform().inv,
    "power on exp": lambda D, p: D.transforms.ComposeTransform([D.transforms.ExpTransform(), D.transforms.PowerTransform(1.5)]),
}


def _run(lib, function):
    """``function(lib, x, (loc, scale))`` with gradients to all three, as arrays."""
    x, loc, scale = (lib.tensor(a, requires_grad=True) for a in (X, LOC, SCALE))
    out = function(lib, x, (loc, scale))
    outs = out if isinstance(out, tuple) else (out,)
    sum(o.sin().sum() for o in outs).backward()
    return [o.detach().numpy() for o in outs], [np.asarray(t.grad) if t.grad is not None else None for t in (x, loc, scale)]


def _same(function):
    torch = require_torch()
    assert_same_values_and_grads(*(_run(lib, function) for lib in (kiln, torch)))


def assert_same_values_and_grads(ours_run, theirs_run):
    """Two ``(values, gradients)`` runs agree: shapes, values to 1e-12, the same gradients present, to 1e-11."""
    (ours, our_grads), (theirs, their_grads) = ours_run, theirs_run
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    for a, b in zip(our_grads, their_grads):
        assert (a is None) == (b is None)
        if b is not None:
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_forward_inverse_and_log_det_as_torch(name, float64_default):
    def apply(lib, x, params):
        transform = TRANSFORMS[name](lib.distributions, params)
        source = x.sigmoid() if name == "inverse of sigmoid" else x
        y = transform(source)
        back = transform.inv(y)
        return y, back, transform.log_abs_det_jacobian(source, y)

    _same(apply)


def test_composed_domains_count_event_dims_as_torch():
    torch = require_torch()
    for lib in (kiln, torch):
        T = lib.distributions.transforms
        composed = T.ComposeTransform([T.TanhTransform(), T.AffineTransform(0.0, 2.0, event_dim=2), T.ExpTransform()])
        assert (composed.domain.event_dim, composed.codomain.event_dim) == (2, 2)
        assert (composed.inv.domain.event_dim, composed.inv.codomain.event_dim) == (2, 2)


FLOWS = {
    "normal through affine+exp": lambda D, p: D.TransformedDistribution(D.Normal(p[0], p[1]), [D.transforms.AffineTransform(0.1, p[1]), D.transforms.ExpTransform()]),
    "vector flow (event_dim=1)": lambda D, p: D.TransformedDistribution(D.Normal(p[0] * 0, p[1] * 0 + 1), [D.transforms.AffineTransform(p[0], p[1], event_dim=1)]),
    "independent base": lambda D, p: D.TransformedDistribution(D.Independent(D.Normal(p[0], p[1]), 1), D.transforms.SigmoidTransform()),
    "log normal": lambda D, p: D.LogNormal(p[0], p[1]),
}


def test_composed_and_inverted_bijectivity_and_double_inverse_as_torch():
    results = []
    for lib in (kiln, require_torch()):
        t = lib.distributions.transforms
        composed = t.ComposeTransform([t.AbsTransform(), t.ExpTransform()])
        results.append((composed.bijective, composed.inv.bijective, t.AbsTransform().inv.bijective,
                        t.ComposeTransform([t.ExpTransform()]).bijective, composed.inv.inv is composed))
    assert results[0] == results[1] == (False, False, False, True, True)


@pytest.mark.parametrize("name", sorted(FLOWS))
def test_log_prob_and_shapes_as_torch(name, float64_default):
    def score(lib, x, params):
        dist = FLOWS[name](lib.distributions, params)
        value = x.exp() if name in ("normal through affine+exp", "log normal") else x.sigmoid() if "independent" in name else x
        assert tuple(dist.batch_shape) + tuple(dist.event_shape) == (4,)
        assert tuple(dist.sample((5,)).shape) == (5, 4) and tuple(dist.rsample((2, 3)).shape) == (2, 3, 4)
        return dist.log_prob(value)

    _same(score)
    torch = require_torch()
    shapes = [(tuple(d.batch_shape), tuple(d.event_shape)) for d in (FLOWS[name](lib.distributions, (lib.tensor(LOC), lib.tensor(SCALE))) for lib in (kiln, torch))]
    assert shapes[0] == shapes[1]


def test_log_normal_moments_as_torch(float64_default):
    _same(lambda lib, x, p: (lib.distributions.LogNormal(p[0], p[1]).mean, lib.distributions.LogNormal(p[0], p[1]).variance,
                             lib.distributions.LogNormal(p[0], p[1]).entropy(), lib.distributions.LogNormal(p[0], p[1]).mode))


def test_tanh_squashed_gaussian_uses_the_cached_draw_as_torch(float64_default):
    """SAC: ``rsample`` then ``log_prob`` of the same tensor reads the pre-tanh draw from the cache (no atanh), so a draw
    that tanh rounds to 1 still scores finitely; the reparameterized gradient reaches mu and std."""
    def sac(lib, x, params):
        mu, std = params[0] * 8, params[1]
        dist = lib.distributions.TransformedDistribution(lib.distributions.Normal(mu, std), [lib.distributions.transforms.TanhTransform(cache_size=1)])
        u = mu + std * x[0]               # the draw as rsample makes it, from fixed noise
        action = dist.transforms[0](u)
        return action, dist.log_prob(action)

    _same(sac)


def test_bad_transform_lists_are_refused():
    with pytest.raises(ValueError, match="Transform or a list"):
        kiln.distributions.TransformedDistribution(kiln.distributions.Normal(0.0, 1.0), [lambda x: x])
    with pytest.raises(ValueError, match="cache_size"):
        kiln.distributions.transforms.TanhTransform(cache_size=2)


def test_kl_of_two_flows_through_equal_transforms_is_the_bases_as_torch(float64_default):
    def kl(lib, x, params):
        D = lib.distributions
        p = D.TransformedDistribution(D.Normal(params[0], params[1]), [D.transforms.ExpTransform(), D.transforms.AffineTransform(0.5, 2.0)])
        q = D.TransformedDistribution(D.Normal(x[0], x[1].exp()), [D.transforms.ExpTransform(), D.transforms.AffineTransform(0.5, 2.0)])
        return D.kl_divergence(p, q), D.kl_divergence(D.LogNormal(params[0], params[1]), D.LogNormal(x[2], params[1]))

    _same(kl)
    D = kiln.distributions
    with pytest.raises(NotImplementedError, match="equal transforms"):
        D.kl_divergence(D.TransformedDistribution(D.Normal(0.0, 1.0), D.transforms.ExpTransform()),
                        D.TransformedDistribution(D.Normal(0.0, 1.0), D.transforms.SigmoidTransform()))
