"""``kiln.autograd.Function`` as an LRU's (or mamba.py's) parallel scan writes it, against torch 2.13 in float64:

- ``forward`` writes views of its clones in place (``Xa[:, :, 1].add_(Aa[:, :, 1].mul(Xa[:, :, 0]))``): torch runs
  forward without grad, so nothing it reads is saved; kiln recorded forward's ops eagerly and ``backward()`` refused
  with 'modified by an inplace operation' though only the Function's own backward is used. forward now runs under
  ``no_grad`` eagerly (``frontend/custom_function.py``).
- complex arguments, outputs and ctx attributes (``frontend/custom_function_complex.py``): the Function runs over the
  real and imaginary parts, with torch's complex gradients in ``backward``; ``apply`` refused complex tensors.
"""

from __future__ import annotations

import numpy as np

import kiln
from oracles import require_torch

RNG = np.random.default_rng(0)


def _pscan(lib):
    """The LRU port's ``PScan`` (mamba.py's is the same), as written."""

    class PScan(lib.autograd.Function):
        @staticmethod
        def expand_(A, X):
            if A.size(1) == 1:
                return
            T = 2 * (A.size(1) // 2)
            Aa = A[:, :T].view(A.size(0), T // 2, 2, -1)
            Xa = X[:, :T].view(X.size(0), T // 2, 2, -1)
            Xa[:, :, 1].add_(Aa[:, :, 1].mul(Xa[:, :, 0]))
            Aa[:, :, 1].mul_(Aa[:, :, 0])
            PScan.expand_(Aa[:, :, 1], Xa[:, :, 1])
            Xa[:, 1:, 0].add_(Aa[:, 1:, 0].mul(Xa[:, :-1, 1]))
            Aa[:, 1:, 0].mul_(Aa[:, :-1, 1])
            if T < A.size(1):
                X[:, -1].add_(A[:, -1].mul(X[:, -2]))
                A[:, -1].mul_(A[:, -2])

        @staticmethod
        def acc_rev_(A, X):
            if X.size(1) == 1:
                return
            T = 2 * (X.size(1) // 2)
            Aa = A[:, -T:].view(A.size(0), T // 2, 2, -1)
            Xa = X[:, -T:].view(X.size(0), T // 2, 2, -1)
            Xa[:, :, 0].add_(Aa[:, :, 1].mul(Xa[:, :, 1]))
            B = Aa[:, :, 0].clone()
            B[:, 1:].mul_(Aa[:, :-1, 1])
            PScan.acc_rev_(B, Xa[:, :, 0])
            Xa[:, :-1, 1].add_(Aa[:, 1:, 0].mul(Xa[:, 1:, 0]))
            if T < A.size(1):
                X[:, 0].add_(A[:, 1].mul(X[:, 1]))

        @staticmethod
        def forward(ctx, A, X, Y_init):
            ctx.A = A[:, :, None].clone()
            ctx.Y_init = Y_init[:, None, :].clone()
            ctx.A_star = ctx.A.clone()
            ctx.X_star = X.clone()
            PScan.expand_(ctx.A_star, ctx.X_star)
            return ctx.A_star * ctx.Y_init + ctx.X_star

        @staticmethod
        def backward(ctx, grad_output):
            U = grad_output * ctx.A_star
            A = ctx.A.clone()
            R = grad_output.clone()
            PScan.acc_rev_(A, R)
            Q = ctx.Y_init.expand_as(ctx.X_star).clone()
            Q[:, 1:].mul_(ctx.A_star[:, :-1]).add_(ctx.X_star[:, :-1])
            return (Q * R).sum(-1), R, U.sum(dim=1)

    return PScan


def _scan_results(lib, values):
    leaves = [lib.tensor(value, requires_grad=True) for value in values]
    out = _pscan(lib).apply(*leaves)
    ((out * out.conj()).real.sum() if out.is_complex() else (out ** 2).sum()).backward()
    grads = [leaf.grad for leaf in leaves]  # kiln's .grad of a complex leaf is a NumPy array, torch's a tensor
    return [np.asarray(t.detach() if hasattr(t, "detach") else t) for t in (out, *grads)]


def _assert_same(ours, theirs):
    for mine, expected in zip(ours, theirs):
        np.testing.assert_allclose(mine, expected, rtol=1e-12, atol=1e-13)


def test_a_forward_writing_views_in_place_differentiates_as_torchs():
    torch = require_torch()
    values = (RNG.uniform(0.5, 0.9, (4, 5)), RNG.standard_normal((4, 5, 2)), RNG.standard_normal((4, 2)))
    _assert_same(_scan_results(kiln, values), _scan_results(torch, values))


def test_a_function_over_complex_tensors_differentiates_as_torchs():
    torch = require_torch()
    values = (np.exp(RNG.uniform(-1, 0, (4, 5)) + 1j * RNG.uniform(0, 6, (4, 5))),
              RNG.standard_normal((4, 5, 2)) + 1j * RNG.standard_normal((4, 5, 2)), np.zeros((4, 2), complex))
    _assert_same(_scan_results(kiln, values), _scan_results(torch, values))


def _twisted(lib):
    class Twisted(lib.autograd.Function):
        """A complex and a real output of complex inputs; complex tensors saved and kept on ctx."""

        @staticmethod
        def forward(ctx, z, w, scale):
            ctx.save_for_backward(z, None)
            ctx.w, ctx.scale = w.clone(), scale
            return z * w * scale, (z * z).real

        @staticmethod
        def backward(ctx, g, h):
            z, _ = ctx.saved_tensors
            return (g * ctx.w.conj() * ctx.scale + 2 * h * z.conj(), g * z.conj() * ctx.scale, None)

    return Twisted


def test_complex_and_real_outputs_and_a_compiled_step_as_torch():
    torch = require_torch()
    z0, w0 = (RNG.standard_normal((3, 2)) + 1j * RNG.standard_normal((3, 2)) for _ in range(2))
    results = []
    for lib in (kiln, torch):
        re, im = lib.nn.Parameter(lib.tensor(z0.real.copy())), lib.nn.Parameter(lib.tensor(z0.imag.copy()))
        optimizer = lib.optim.SGD([re, im], lr=0.1)

        def step():
            optimizer.zero_grad()
            product, square = _twisted(lib).apply(lib.complex(re, im), lib.tensor(w0), 0.5)
            loss = (product.abs() ** 2).sum() + square.sum()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if lib is kiln else step
        losses = [run().item() for _ in range(2)]
        results.append([np.asarray(losses), np.asarray(re.detach()), np.asarray(im.detach())])
    _assert_same(*results)
