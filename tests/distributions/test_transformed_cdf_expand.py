"""``TransformedDistribution.cdf``/``icdf``/``expand`` as ``torch.distributions``' (2.13, float64): the base's cdf
pulled back through the transforms and flipped where they decrease (a negative affine scale, a negative power, a
tensor of signs); ``mean``/``variance`` raise ``NotImplementedError`` as torch's (``LogNormal`` has them); ``expand``
pulls the batch shape back to the base's and keeps the class."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

LOC, SCALE = np.array([-0.5, 0.2, 1.0]), np.array([0.5, 1.5, 2.0])
SIGNS = np.array([1.0, -1.0, 2.0])

FLOWS = {  # (transforms, values for cdf)
    "exp": (lambda T, p: [T.ExpTransform()], [0.3, 1.0, 4.0]),
    "negative affine": (lambda T, p: [T.AffineTransform(0.3, -2.0)], [-1.0, 0.5, 2.0]),
    "affine with signed tensor scale": (lambda T, p: [T.AffineTransform(0.1, p[2])], [-1.0, 0.5, 2.0]),
    "exp then negative affine": (lambda T, p: [T.ExpTransform(), T.AffineTransform(0.0, -1.5)], [-3.0, -1.0, -0.2]),
    "composed, with a tensor sign": (lambda T, p: [T.ComposeTransform([T.ExpTransform(), T.AffineTransform(0.0, p[2])])],
                                     [0.5, -1.0, 3.0]),
    "negative power on exp": (lambda T, p: [T.ExpTransform(), T.PowerTransform(p[3])], [0.2, 1.0, 3.0]),
    "negative number power on exp": (lambda T, p: [T.ExpTransform(), T.PowerTransform(-2.0)], [0.2, 1.0, 3.0]),
    "sigmoid": (lambda T, p: [T.SigmoidTransform()], [0.1, 0.5, 0.8]),
    "tanh": (lambda T, p: [T.TanhTransform()], [-0.5, 0.2, 0.9]),
    "softplus": (lambda T, p: [T.SoftplusTransform()], [0.1, 1.0, 3.0]),
}


def _flow(lib, name):
    D = lib.distributions
    p = [lib.tensor(a, dtype=lib.float64) for a in (LOC, SCALE, SIGNS, -1.5)]  # torch's number exponent is float32
    return D.TransformedDistribution(D.Normal(p[0], p[1]), FLOWS[name][0](D.transforms, p))


@pytest.mark.parametrize("name", FLOWS)
def test_cdf_and_icdf_are_torchs(name):
    torch = require_torch()
    ours, theirs = _flow(kiln, name), _flow(torch, name)
    values, quantiles = FLOWS[name][1], [0.1, 0.5, 0.85]
    np.testing.assert_allclose(ours.cdf(kiln.tensor(values, dtype=kiln.float64)).numpy(),
                               theirs.cdf(torch.tensor(values, dtype=torch.float64)).numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.icdf(kiln.tensor(quantiles, dtype=kiln.float64)).numpy(),
                               theirs.icdf(torch.tensor(quantiles, dtype=torch.float64)).numpy(), rtol=1e-12)


def test_lognormal_cdf_icdf_and_a_missing_mean_as_torchs():
    torch = require_torch()
    ours = kiln.distributions.LogNormal(kiln.tensor(LOC), kiln.tensor(SCALE))
    theirs = torch.distributions.LogNormal(torch.tensor(LOC), torch.tensor(SCALE))
    for method, values in (("cdf", [0.5, 1.0, 3.0]), ("icdf", [0.2, 0.5, 0.7])):
        np.testing.assert_allclose(getattr(ours, method)(kiln.tensor(values, dtype=kiln.float64)).numpy(),
                                   getattr(theirs, method)(torch.tensor(values, dtype=torch.float64)).numpy(), rtol=1e-12)
    for lib, flow in ((torch, _flow(torch, "exp")), (kiln, _flow(kiln, "exp"))):
        for what in ("mean", "variance"):
            with pytest.raises(NotImplementedError):
                getattr(flow, what)


def test_a_value_the_inverses_take_outside_the_bases_support_is_refused_as_by_torch():
    torch = require_torch()
    with pytest.raises(ValueError):
        _flow(torch, "exp then negative affine").cdf(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="after the inverse transforms"):
        _flow(kiln, "exp then negative affine").cdf(kiln.tensor([1.0, 2.0, 3.0], dtype=kiln.float64))


def test_a_flow_over_a_base_without_a_cdf_has_none_as_in_torch():
    torch = require_torch()
    for lib in (torch, kiln):
        D = lib.distributions
        flow = D.TransformedDistribution(D.Independent(D.Normal(lib.tensor(LOC), lib.tensor(SCALE)), 1), D.transforms.ExpTransform())
        with pytest.raises(NotImplementedError):
            flow.cdf(lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64))


@pytest.mark.parametrize("name", ["exp", "affine with signed tensor scale", "negative power on exp"])
def test_expand_gives_torchs_shapes_and_scores(name):
    torch = require_torch()
    ours, theirs = _flow(kiln, name).expand((2, 3)), _flow(torch, name).expand((2, 3))
    assert type(ours).__name__ == "TransformedDistribution" and tuple(ours.batch_shape) == tuple(theirs.batch_shape) == (2, 3)
    assert tuple(ours.base_dist.batch_shape) == tuple(theirs.base_dist.batch_shape)
    assert tuple(ours.sample((4,)).shape) == tuple(theirs.sample((4,)).shape) == (4, 2, 3)
    values = np.abs(np.linspace(0.2, 2.0, 6)).reshape(2, 3)
    np.testing.assert_allclose(ours.log_prob(kiln.tensor(values)).numpy(), theirs.log_prob(torch.tensor(values)).numpy(), rtol=1e-12)


def test_expanded_lognormal_and_vector_flow_as_torchs():
    torch = require_torch()
    ours = kiln.distributions.LogNormal(kiln.tensor(LOC), kiln.tensor(SCALE)).expand((4, 3))
    theirs = torch.distributions.LogNormal(torch.tensor(LOC), torch.tensor(SCALE)).expand((4, 3))
    assert isinstance(ours, kiln.distributions.LogNormal)
    np.testing.assert_allclose(ours.mean.numpy(), theirs.mean.numpy(), rtol=1e-12)
    flows = []
    for lib in (kiln, torch):
        D = lib.distributions
        flows.append(D.TransformedDistribution(D.Independent(D.Normal(lib.tensor(LOC), lib.tensor(SCALE)), 1),
                                               D.transforms.AffineTransform(lib.tensor(LOC), 2.0, event_dim=1)).expand((5,)))
    assert tuple(flows[0].batch_shape) == tuple(flows[1].batch_shape) == (5,)
    assert tuple(flows[0].event_shape) == tuple(flows[1].event_shape) == (3,)
    values = np.linspace(-1, 1, 15).reshape(5, 3)
    np.testing.assert_allclose(flows[0].log_prob(kiln.tensor(values)).numpy(), flows[1].log_prob(torch.tensor(values)).numpy(), rtol=1e-12)


def test_expand_to_a_batch_the_base_cannot_take_is_refused_as_by_torch():
    torch = require_torch()
    with pytest.raises(RuntimeError):
        _flow(torch, "exp").expand((2,))
    with pytest.raises(kiln.KilnError, match="Normal.expand: batch shape"):
        _flow(kiln, "exp").expand((2,))
