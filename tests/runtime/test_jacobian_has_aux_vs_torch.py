"""``kiln.func.jacrev`` / ``jacfwd`` with ``has_aux=True`` as torch.func's: ``func`` returns ``(output, aux)`` and the
transform ``(jacobian of output, aux)`` (a PINN's ``jacrev(lambda x: (u(x), u(x)), has_aux=True)`` gets the
derivatives and the value together); kiln raised "not supported". Also under ``vmap`` (per-point Jacobians), and
a ``func`` that returns no pair refused with what it must return. float64 against torch 2.13."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.compiler.errors import KilnError
from oracles import libraries

X = np.random.default_rng(0).standard_normal((4, 2))
W = np.random.default_rng(1).standard_normal((2, 3))


def _u(lib):
    w = lib.tensor(W)
    return lambda x: lib.tanh(x @ w)


@pytest.mark.parametrize("transform", ["jacrev", "jacfwd"])
def test_jacobian_and_aux_as_torch(float64_default, transform):
    results = []
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        u = _u(lib)
        jacobian, (value, doubled) = getattr(lib.func, transform)(lambda x: (u(x), (u(x), 2 * x)), has_aux=True)(
            lib.tensor(X[0]))
        per_point, values = lib.func.vmap(getattr(lib.func, transform)(lambda x: (u(x), u(x)), has_aux=True))(
            lib.tensor(X))
        results.append([t.numpy() for t in (jacobian, value, doubled, per_point, values)])
    for ours, theirs in zip(*results):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def test_has_aux_needs_a_pair():
    lib = libraries("kiln")[0]
    with pytest.raises(KilnError, match=r"must return a pair \(output, aux\)"):
        lib.func.jacrev(_u(lib), has_aux=True)(lib.tensor(X[0]))
