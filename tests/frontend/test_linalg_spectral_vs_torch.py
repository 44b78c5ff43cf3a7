"""``kiln.linalg``'s spectral functions, the legacy ``svd``/``pinverse`` forms and the singular-value norms against
``torch.linalg`` in float64.

Values and gradients to rtol 1e-9 (``tensor_parity._check``: the gradient of a weighted sum of the first output,
``kiln.grad`` against autograd) on random batched matrices, whose eigen/singular values are distinct. Outputs made of
vectors are sign-invariant (``V * V``, ``V diag(c) V^T``, ``U diag(c) Vh``, reconstructions, the legacy ``V``'s
``U diag(S) V^T``), since a vector's sign is LAPACK's choice. Also: the named tuples' fields and types, one graph over
a symbolic batch, float32, and the errors, which name the user's line.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
import kiln.linalg
from kiln.backends.numpy import NumpyBackend
from oracles import require
from tensor_parity import _check

RNG = np.random.default_rng(31)
SQUARE = RNG.standard_normal((2, 3, 3))
TALL = RNG.standard_normal((2, 5, 3))
WIDE = RNG.standard_normal((3, 4))
B = RNG.standard_normal((2, 5, 2))
NEARLY_RANK_ONE = (np.linalg.qr(RNG.standard_normal((2, 2)))[0] * np.array([1.0, 5 * np.finfo(np.float64).eps])) @ np.linalg.qr(RNG.standard_normal((8, 8)))[0][:2]
"""Singular values 1 and 5 eps: cut by the default tolerance ``eps * max(m, n) = 8 eps``, not by ``eps * min(m, n)``."""
C = np.array([0.7, -1.3, 2.1])
"""Weights of the eigen/singular vectors' outer products in ``V diag(c) V^T``: sign-invariant, and mixing columns."""


def _lib(name):
    return kiln if name == "kiln" else require("torch")


def _vectors(V, c=C):
    """``V * V`` and ``V diag(c) V^T`` over the first ``len(c)`` columns: unchanged when a column flips sign."""
    V = V[..., : len(c)]
    return V * V + 0.5 * V[..., :1] * V[..., :1], (V * V.new_tensor(c)) @ V.mT


def _singular_pairs(U, Vh, c=C):
    """``U_k diag(c) Vh_k``: unchanged when ``u_j`` and ``v_j`` flip together."""
    k = min(U.shape[-1], Vh.shape[-2], len(c))
    return (U[..., :k] * U.new_tensor(c[:k])) @ Vh[..., :k, :]


def _pinned(lib, U, Vh):
    """``(..., m)``: row sums of the left vectors' squares and of the pair products, plus the right vectors' squares."""
    right = _vectors(Vh.mT)[0].sum(-1)
    return _vectors(U)[0].sum(-1) + _singular_pairs(U, Vh).sum(-1) + right.sum(-1, keepdim=True) * right[..., :1]


def _cond(lib, a, p):
    """``cond(a, p)``; PyTorch's oracle is its definition ``norm(A, p) norm(A^-1, p)``, as ``torch.linalg.cond``'s own
    backward fails for these ``p`` (it writes into ``inv``'s result in place); its values are checked in ``cond``."""
    return lib.linalg.cond(a, p) if lib is kiln else lib.linalg.matrix_norm(a, p) * lib.linalg.matrix_norm(lib.linalg.inv(a), p)


FUNCTIONS = {  # name: (function of (library, x, y), inputs)
    "eigh_values": (lambda lib, a, b: (lib.linalg.eigh(a).eigenvalues, lib.linalg.eigvalsh(a, UPLO="U"), lib.linalg.eigvalsh(a.mT)), (SQUARE, B)),
    "eigh_vectors": (lambda lib, a, b: _vectors(lib.linalg.eigh(a).eigenvectors) + _vectors(lib.linalg.eigh(a, UPLO="U")[1]), (SQUARE, B)),
    "eigh_both": (lambda lib, a, b: (sum(_vectors(lib.linalg.eigh(a @ a.mT, "U").eigenvectors)) * lib.linalg.eigh(a @ a.mT).eigenvalues.unsqueeze(-1),), (SQUARE, B)),
    "eigh_upper_of_a_symmetric_input": (lambda lib, a, b: _vectors(lib.linalg.eigh(a + a.mT, UPLO="U").eigenvectors)[::-1], (SQUARE, B)),
    "svd_reduced": (lambda lib, a, b: (_pinned(lib, *lib.linalg.svd(a, full_matrices=False)[::2]), lib.linalg.svd(a, False).S), (TALL, B)),
    "svd_square": (lambda lib, a, b: (_pinned(lib, *lib.linalg.svd(a)[::2]) * lib.linalg.svdvals(a),), (SQUARE, B)),
    "svd_wide": (lambda lib, w, b: (_singular_pairs(*lib.linalg.svd(w, full_matrices=False)[::2]), lib.linalg.svd(w, False).U.abs()), (WIDE, B)),
    "svd_wide_vh": (lambda lib, w, b: (_vectors(lib.linalg.svd(w, full_matrices=False).Vh.mT)[0],), (WIDE, B)),
    "svd_full_uses_the_first_k": (lambda lib, a, b: (_pinned(lib, *lib.linalg.svd(a)[::2]), lib.linalg.svd(a).U.shape[-1] + a[..., :1, :1]), (TALL, B)),
    "svdvals": (lambda lib, a, b: (lib.linalg.svdvals(a), lib.linalg.svdvals(a.mT)), (TALL, B)),
    "svd_reconstructs": (lambda lib, a, b: ((lambda U, S, Vh: (U * S.unsqueeze(-2)) @ Vh)(*lib.linalg.svd(a, full_matrices=False)),), (TALL, B)),
    "legacy_svd": (lambda lib, a, b: ((lambda U, S, V: (U * S.unsqueeze(-2)) @ V.mT + _vectors(V)[0].sum())(*a.svd()),
                                      (lambda r: r.U.shape[-1] + r.V.shape[-1] + r.S)(a.svd(some=False)),
                                      a.svd(compute_uv=False).U, a.svd(compute_uv=False).V), (TALL, B)),
    "legacy_svd_values": (lambda lib, a, b: (lib.svd(a, compute_uv=False).S, lib.svd(a, some=False).V.abs()), (TALL, B)),
    "pinv": (lambda lib, a, b: (lib.linalg.pinv(a), lib.linalg.pinv(a.mT), a.pinverse(), lib.pinverse(a, rcond=0.3)), (TALL, B)),
    "pinv_tolerances": (lambda lib, a, b: (lib.linalg.pinv(a, atol=0.5) + lib.linalg.pinv(a, rtol=0.2) + lib.linalg.pinv(a, atol=0.3, rtol=0.1),
                                           lib.linalg.pinv(a, atol=1.0), lib.linalg.pinv(a, rtol=0.4), lib.linalg.pinv(a, atol=0.8, rtol=0.1),
                                           lib.linalg.pinv(a, atol=a[:, 0, 0].abs().detach() * 4, rtol=a[:, 1, 1].abs().detach())), (TALL, B)),
    "pinv_and_rank_older_forms": (lambda lib, a, b: (lib.linalg.pinv(a, 0.2), lib.linalg.pinv(a, rcond=0.4), lib.linalg.pinv(a @ a.mT, 0.1, True),
                                                     lib.linalg.matrix_rank(a, 1.0), lib.linalg.matrix_rank(a, tol=0.8),
                                                     lib.linalg.matrix_rank(a @ a.mT, 1.0, True)), (TALL, B)),
    "pinv_hermitian": (lambda lib, a, b: (lib.linalg.pinv(a @ a.mT + a.mT @ a, hermitian=True), lib.linalg.pinv(a + a.mT, hermitian=True, atol=0.4)), (SQUARE, B)),
    "matrix_rank": (lambda lib, a, b: (lib.linalg.matrix_rank(a), lib.linalg.matrix_rank(a, atol=1.5), lib.linalg.matrix_rank(a, rtol=0.3),
                                       lib.linalg.matrix_rank(a @ a.mT), lib.linalg.matrix_rank(a @ a.mT, hermitian=True),
                                       lib.linalg.matrix_rank(a @ a.mT, hermitian=True, atol=0.5), lib.linalg.matrix_rank(a, atol=a[:, 0, 0].abs().detach())), (TALL, B)),
    "default_tolerances": (lambda lib, a, b: (lib.linalg.matrix_rank(a), lib.linalg.matrix_rank(a, atol=1e-30), lib.linalg.matrix_rank(a, atol=0.0),
                                              lib.linalg.matrix_rank(a, atol=(a[0, 0] * 0 + 1e-30).detach()), lib.linalg.pinv(a), lib.linalg.pinv(a, atol=1e-30).abs() > 1e10,
                                              lib.linalg.matrix_rank(a @ a.mT, hermitian=True), lib.linalg.matrix_rank(a, 0.0)), (NEARLY_RANK_ONE, B)),
    "matrix_norm": (lambda lib, a, b: tuple(lib.linalg.matrix_norm(a, ord) for ord in ("nuc", 2, -2))
                    + (lib.linalg.matrix_norm(a, "nuc", dim=(0, 2), keepdim=True), lib.linalg.matrix_norm(a, 2, dim=(-1, 1), keepdim=True),
                       lib.linalg.matrix_norm(a, -2, keepdim=True)), (TALL, B)),
    "matrix_norm_2": (lambda lib, a, b: (lib.linalg.matrix_norm(a, 2) * 3 + lib.linalg.matrix_norm(a, -2, dim=(2, 1)),), (TALL, B)),
    "norm": (lambda lib, a, b: (lib.linalg.norm(a[0], "nuc"), lib.linalg.norm(a[1], 2), lib.linalg.norm(a, -2, dim=(1, 2)), lib.nuclear_norm(a[0]),
                                lib.nuclear_norm(a, dim=(0, 1), keepdim=True)), (TALL, B)),
    "norm_p_nuc": (lambda lib, a, b: (a.norm(p="nuc", dim=(1, 2)), lib.norm(a[0], p="nuc"), a.norm("nuc", dim=(0, 2), keepdim=True)), (TALL, B)),
    "cond": (lambda lib, a, b: tuple(lib.linalg.cond(a, p) for p in (None, 2, -2, "fro", "nuc", math.inf, -math.inf, 1, -1)), (SQUARE, B)),
    "cond_rectangular": (lambda lib, a, b: (lib.linalg.cond(a) + lib.linalg.cond(a.mT, -2), lib.linalg.cond(a, 2)), (TALL, B)),
    "cond_by_norms": (lambda lib, a, b: (sum(_cond(lib, a, p) * (i + 1) for i, p in enumerate(("fro", "nuc", math.inf, -math.inf, 1, -1))),),
                      (SQUARE, B)),
    "lstsq": (lambda lib, a, b: tuple(lib.linalg.lstsq(a, b)) + tuple(lib.linalg.lstsq(a, b, driver="gelsd")), (TALL, B)),
    "lstsq_drivers": (lambda lib, a, b: tuple(value for driver in ("gels", "gelsy", "gelss") for value in lib.linalg.lstsq(a, b, driver=driver)), (TALL, B)),
    "lstsq_residuals": (lambda lib, a, b: (lib.linalg.lstsq(a, b, driver="gelsd").residuals, lib.linalg.lstsq(a, b[..., 0], driver="gelss").residuals), (TALL, B)),
    "lstsq_singular_values_have_no_gradient": (lambda lib, a, b: (lib.linalg.lstsq(a, b, driver="gelss").singular_values,), (TALL, B)),
    "lstsq_vector": (lambda lib, a, b: (lib.linalg.lstsq(a, b[..., 0]).solution, lib.linalg.lstsq(a[0], b[0, :, 1]).solution), (TALL, B)),
    "lstsq_underdetermined": (lambda lib, a, b: tuple(lib.linalg.lstsq(a.mT, b[:, :3], rcond=1e-8, driver="gelsd")), (TALL, B)),
    "lstsq_broadcast": (lambda lib, a, b: (lib.linalg.lstsq(a[:1], b).solution, lib.linalg.lstsq(a[:1], b).rank), (TALL, B)),
}


INTEGER_FIRST_OUTPUT = {"matrix_rank", "default_tolerances"}
"""No gradient to compare: the first output is an integer count."""


@pytest.mark.filterwarnings("ignore:.*nuclear_norm is deprecated:UserWarning")  # PyTorch's own torch.nuclear_norm, the oracle of ours
@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_and_methods_match_torch(name):
    fn, arrays = FUNCTIONS[name]
    _check(lambda *xs: fn(kiln, *xs), lambda *xs: fn(_lib("torch"), *xs), *arrays, grad=name not in INTEGER_FIRST_OUTPUT, grad_rtol=1e-9)


def test_a_truncating_pinv_has_the_exact_gradient():
    """Where the tolerance cuts a singular value, kiln differentiates ``V_r diag(1/S_r) U_r^T`` through the SVD: the
    exact derivative (central differences). PyTorch's ``pinv_backward`` is the constant-rank formula evaluated at the
    truncated result, which differs there (by 0.16 here); without a cut both agree (``pinv_tolerances``)."""
    from autodiff.test_vjp_finite_differences import finite_differences

    weights = RNG.standard_normal((3, 5))
    loss = lambda x: (kiln.linalg.pinv(x, atol=1.0) * x.new_tensor(weights)).sum()  # cuts s = 0.69 of TALL[0]
    value = NumpyBackend().compile(kiln.trace(loss, kiln.TensorSpec((5, 3), "float64")))
    expected = finite_differences(lambda moved: value(*moved)[0], [TALL[0].copy()], 0)
    np.testing.assert_allclose(kiln.grad(loss)(TALL[0]), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("matrix", [np.zeros((3, 3)), np.diag([1.0, 0.0, 0.0]), np.diag([2.0, 0.0, 0.0, 0.0])[:, :3]], ids=["zeros", "rank-1", "tall-rank-1"])
def test_pinv_of_a_rank_deficient_matrix_has_torchs_finite_gradient(matrix):
    """Exactly repeated zero singular values: their vectors get no cotangent (cut), so the 0/0 of the gap terms is 0."""
    torch = require("torch")
    weights = RNG.standard_normal(matrix.T.shape)
    ours = kiln.grad(lambda x: (kiln.linalg.pinv(x) * x.new_tensor(weights)).sum())(matrix)
    a = torch.tensor(matrix, requires_grad=True)
    (torch.linalg.pinv(a) * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(ours, a.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_a_simple_eigenvector_beside_a_repeated_eigenvalue_has_the_exact_gradient():
    """``diag(1, 1, 3)``: the top eigenvector's projector is smooth there, so central differences give its gradient;
    the repeated pair's vectors get no cotangent, where PyTorch's 0/0 makes NaN."""
    from autodiff.test_vjp_finite_differences import finite_differences

    weights = RNG.standard_normal((3, 3))
    loss = lambda x: ((lambda v: v[:, 2:] * v[:, 2:].mT)(kiln.linalg.eigh((x + x.mT) / 2).eigenvectors) * x.new_tensor(weights)).sum()
    value = NumpyBackend().compile(kiln.trace(loss, kiln.TensorSpec((3, 3), "float64")))
    point = np.diag([1.0, 1.0, 3.0])
    expected = finite_differences(lambda moved: value(*moved)[0], [point.copy()], 0)
    np.testing.assert_allclose(kiln.grad(loss)(point), expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("fn", "fields"), [
    (lambda lib, a: lib.linalg.eigh(a), ("eigenvalues", "eigenvectors")),
    (lambda lib, a: lib.linalg.svd(a), ("U", "S", "Vh")),
    (lambda lib, a: a.svd(), ("U", "S", "V")),
    (lambda lib, a: lib.svd(a), ("U", "S", "V")),
    (lambda lib, a: lib.linalg.lstsq(a, a), ("solution", "residuals", "rank", "singular_values")),
])
def test_results_are_named_tuples_with_torch_fields(fn, fields):
    torch = require("torch")
    theirs = fn(torch, torch.eye(3, dtype=torch.float64))
    assert all(hasattr(theirs, field) for field in fields)
    kiln.trace(lambda a: _assert_fields(fn(kiln, a), fields), kiln.TensorSpec((3, 3), "float64"))


def _assert_fields(result, fields):
    assert isinstance(result, tuple) and result._fields == fields
    return result[0]


def test_one_graph_serves_every_batch_size():
    torch = require("torch")
    graph = kiln.trace(lambda a: (kiln.linalg.eigvalsh(a @ a.mT), kiln.linalg.svdvals(a), kiln.linalg.pinv(a), kiln.linalg.matrix_rank(a)),
                       kiln.TensorSpec(("N", 4, 3), "float64"))
    run = NumpyBackend().compile(graph)
    for batch in (1, 4):
        a = RNG.standard_normal((batch, 4, 3))
        t = torch.tensor(a)
        for got, want in zip(run(a), (torch.linalg.eigvalsh(t @ t.mT), torch.linalg.svdvals(t), torch.linalg.pinv(t), torch.linalg.matrix_rank(t))):
            assert got.dtype == want.numpy().dtype
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)


def test_cond_of_a_singular_matrix_is_inf_as_torchs():
    """The LU's info marks a singular matrix (no LinAlgError); the others in the batch keep their values. torch's
    'nuc' is ``sum(s) * sum(1 / s)`` of its SVD instead, inf only where the SVD rounds the smallest singular value to
    exactly 0: MKL on an AVX-512 machine leaves 7e-49 for ``ones((3, 3))``, so 1.4e48. kiln's is inf whatever the
    rounding (the LU's zero pivot is exact); torch's is then inf or past ``1 / (n eps)``, as a backward-stable SVD's
    ``s_min <= n eps s_max`` makes it."""
    torch = require("torch")
    a = np.stack([SQUARE[0], np.ones((3, 3)), np.diag([1.0, 0.0, 2.0])])
    norms = ("fro", "nuc", math.inf, -math.inf, 1, -1)
    run = NumpyBackend().compile(kiln.trace(lambda x: tuple(kiln.linalg.cond(x, p) for p in norms), kiln.TensorSpec(("N", 3, 3), "float64")))
    for got, p in zip(run(a), norms):
        theirs = torch.linalg.cond(torch.tensor(a), p).numpy()
        np.testing.assert_allclose(got[0], theirs[0], rtol=1e-10)
        assert np.isinf(got[1:]).all()
        if p == "nuc":
            assert (theirs[1:] > 1 / (3 * np.finfo(np.float64).eps)).all()
        else:
            np.testing.assert_array_equal(theirs[1:], math.inf)


def test_forward_mode_and_the_hessian_match_torch():
    """``kiln.jvp`` and ``kiln.hessian`` run through the VJPs (a VJP of a VJP), against autograd's jvp and hessian."""
    torch = require("torch")
    tangent = RNG.standard_normal(TALL[0].shape)
    _, ours = kiln.jvp(lambda x: kiln.linalg.svdvals(x), (TALL[0],), (tangent,))
    _, theirs = torch.autograd.functional.jvp(torch.linalg.svdvals, torch.tensor(TALL[0]), torch.tensor(tangent))
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)
    largest = lambda lib: lambda x: lib.linalg.eigvalsh(x + x.mT)[..., -1] + (lib.linalg.eigh(x @ x.mT).eigenvectors ** 2)[0, 1]
    hessian = torch.autograd.functional.hessian(largest(torch), torch.tensor(SQUARE[1]))
    np.testing.assert_allclose(kiln.hessian(largest(kiln))(SQUARE[1]), hessian.numpy(), rtol=1e-9, atol=1e-11)


def test_cse_leaves_one_svd_for_every_function_of_one_matrix():
    from kiln.compiler.passes import PassManager

    graph = kiln.trace(lambda a: (kiln.linalg.svdvals(a), kiln.linalg.pinv(a), kiln.linalg.matrix_rank(a), kiln.linalg.cond(a),
                                  kiln.linalg.lstsq(a, a[..., :1]).solution, kiln.linalg.matrix_norm(a, "nuc")), kiln.TensorSpec((4, 3), "float64"))
    assert sum(op.name == "linalg.svd" for op in graph.ops) == 6
    PassManager("cse,dce").run(graph)
    assert sum(op.name == "linalg.svd" for op in graph.ops) == 1


def test_float32_stays_float32():
    torch = require("torch")
    a = TALL.astype(np.float32)

    def functions(lib, x):
        w, V = lib.linalg.eigh(x.mT @ x)
        U, S, Vh = lib.linalg.svd(x, full_matrices=False)
        return w, V * V, S, _singular_pairs(U, Vh), lib.linalg.pinv(x), lib.linalg.lstsq(x, x[..., :2]).solution, lib.linalg.cond(x)

    outputs = NumpyBackend().compile(kiln.trace(lambda x: functions(kiln, x), kiln.TensorSpec(a.shape, "float32")))(a)
    for got, want in zip(outputs, functions(torch, torch.tensor(a, dtype=torch.float64))):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want.numpy(), rtol=2e-4, atol=2e-5)


def test_float32_gradients_are_float32_and_within_float32_accuracy():
    torch = require("torch")
    a = TALL.astype(np.float32)

    def loss(lib):
        def function(x):
            U, S, Vh = lib.linalg.svd(x, full_matrices=False)
            V = lib.linalg.eigh(x.mT @ x).eigenvectors
            return (U * U).sum() + S.sum() + (Vh * Vh * S.unsqueeze(-1)).sum() + (V * V * V.new_tensor(C)).sum() + lib.linalg.pinv(x).sum()

        return function

    ours = kiln.grad(loss(kiln))(a)
    t = torch.tensor(TALL, requires_grad=True)
    loss(torch)(t).backward()
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, t.grad.numpy(), rtol=1e-4, atol=1e-5 * np.abs(t.grad.numpy()).max())


@pytest.mark.parametrize(("fn", "spec", "message"), [
    (lambda a: kiln.linalg.eigh(a), ((3, 4), "float64"), "linalg.eigh needs square matrices"),
    (lambda a: kiln.linalg.eigvalsh(a, UPLO="X"), ((3, 3), "float64"), "UPLO must be 'L'.*got 'X'"),
    (lambda a: kiln.linalg.svd(a.int()), ((3, 3), "float64"), "cast it to float32 or float64"),
    (lambda a: kiln.linalg.svdvals(a), ((3,), "float64"), r"needs matrices \(\.\.\., m, n\)"),
    (lambda a: kiln.linalg.svd(a, driver="gesvdj"), ((3, 3), "float64"), "driver='gesvdj'.*leave driver out"),
    (lambda a: kiln.linalg.cond(a, 3), ((3, 3), "float64"), "p must be None, 2, -2"),
    (lambda a: kiln.linalg.cond(a, "fro"), ((3, 4), "float64"), "needs square matrices.*p=None, 2 or -2"),
    (lambda a: kiln.linalg.matrix_norm(a, 3), ((3, 3), "float64"), "ord must be 'fro', 'nuc', 2"),
    (lambda a: kiln.linalg.lstsq(a, a, driver="gelsx"), ((3, 3), "float64"), "driver must be one of gels"),
    (lambda a: kiln.linalg.pinv(a, 0.1, rtol=0.2), ((3, 3), "float64"), "rcond= is the older form of rtol="),
    (lambda a: kiln.linalg.matrix_rank(a, 0.1, atol=0.2), ((3, 3), "float64"), "tol= is the older form of atol/rtol="),
    (lambda a: kiln.linalg.lstsq(a[0, 0], a), ((2, 3, 3), "float64"), "B must have A's number of dims"),
])
def test_errors_name_the_line_and_say_what_to_do(fn, spec, message):
    with pytest.raises(kiln.TraceError, match=message) as error:
        kiln.trace(fn, kiln.TensorSpec(*spec))
    assert "test_linalg_spectral_vs_torch.py" in str(error.value)
