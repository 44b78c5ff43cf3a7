"""In-place arithmetic on complex tensors (``frontend/complex_tensor.py``): ``add_``, ``sub_``, ``mul_``, ``div_``,
``neg_``, ``copy_``, ``fill_``, ``zero_`` and ``+=``/``-=``/``*=``/``/=`` write both parts in place, so views of the
tensor follow and gradients flow, as torch's. An LRU's parallel scan (``Xa[:, :, 1].add_(Aa[:, :, 1].mul(Xa[:, :,
0]))``, ``Aa[:, :, 1].mul_(Aa[:, :, 0])`` on ``.view``s of slices) refused each. Against torch 2.13 in float64."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

RNG = np.random.default_rng(0)
Z = RNG.standard_normal((2, 6, 3)) + 1j * RNG.standard_normal((2, 6, 3))
A = RNG.standard_normal((2, 6, 1)) + 1j * RNG.standard_normal((2, 6, 1))

IN_PLACE = {
    "add_ alpha": lambda z, w: z.add_(w, alpha=2),
    "sub_ number": lambda z, w: z.sub_(1 - 0.5j),
    "mul_": lambda z, w: z.mul_(w),
    "div_": lambda z, w: z.div_(w),
    "neg_": lambda z, w: z.neg_(),
    "copy_": lambda z, w: z.copy_(w * 2),
    "fill_": lambda z, w: z.fill_(3 - 2j),
    "zero_": lambda z, w: z.zero_(),
    "+=": lambda z, w: z.__iadd__(1j),
    "-=": lambda z, w: z.__isub__(w),
    "*=": lambda z, w: z.__imul__(2 - 1j),
    "/=": lambda z, w: z.__itruediv__(w),
}


@pytest.mark.parametrize("name", IN_PLACE)
def test_in_place_ops_on_complex_tensors_match_torch(name):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        z, w = lib.tensor(Z), lib.tensor(Z[::-1].copy() + 0.5)
        returned = IN_PLACE[name](z, w)
        assert returned is z
        results.append(np.asarray(z))
    np.testing.assert_allclose(*results, rtol=1e-13, atol=1e-14)


def _scan_expand_step(X, A):
    """The first level of the LRU's ``PScan.expand_``: in-place writes through views of slices."""
    T = 2 * (A.size(1) // 2)
    Aa = A[:, :T].view(A.size(0), T // 2, 2, -1)
    Xa = X[:, :T].view(X.size(0), T // 2, 2, -1)
    Xa[:, :, 1].add_(Aa[:, :, 1].mul(Xa[:, :, 0]))
    Aa[:, :, 1].mul_(Aa[:, :, 0])
    Xa[:, 1:, 0].add_(Aa[:, 1:, 0].mul(Xa[:, :-1, 1]))
    Aa[:, 1:, 0].mul_(Aa[:, :-1, 1])
    return X, A


def test_in_place_writes_through_views_reach_the_base_as_torchs():
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        with lib.no_grad():
            results.append([np.asarray(t) for t in _scan_expand_step(lib.tensor(Z), lib.tensor(A))])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-13, atol=1e-14)


def _chain(lib, z, w):
    y = z * 1.5
    y.add_(w, alpha=2)
    y.mul_(1 - 2j)
    y[0].sub_(w[0] * 1j)
    y += 1j
    return (y.abs() ** 2).sum()


def test_gradients_through_in_place_complex_ops_are_torchs():
    torch = require_torch()
    grads = []
    for lib in (kiln, torch):
        z = lib.tensor(Z, requires_grad=True)
        _chain(lib, z, lib.tensor(Z[::-1].copy())).backward()
        grads.append(np.asarray(z.grad))
    np.testing.assert_allclose(*grads, rtol=1e-12, atol=1e-12)


def test_in_place_complex_ops_in_a_compiled_training_step_as_torch():
    torch = require_torch()
    weights = []
    for lib in (kiln, torch):
        re, im = (lib.nn.Parameter(lib.tensor(part.copy())) for part in (Z.real, Z.imag))
        optimizer = lib.optim.SGD([re, im], lr=0.01)

        def step():
            optimizer.zero_grad()
            loss = _chain(lib, lib.complex(re, im), lib.tensor(Z[::-1].copy()))
            loss.backward()
            optimizer.step()
            return loss

        (kiln.compile(step, fullgraph=True) if lib is kiln else step)()
        weights.append(np.concatenate([np.asarray(re.detach()), np.asarray(im.detach())]))
    np.testing.assert_allclose(*weights, rtol=1e-12, atol=1e-12)
