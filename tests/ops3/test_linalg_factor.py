"""``kiln.linalg``'s factorizations and matrix functions (``frontend/linalg_factor.py``) against ``torch.linalg``.

PyTorch 2.13 in float64 is the oracle: every output's value (integer pivots and infos exactly, dtypes too) and the
gradient of a weighted sum of every float output, through kiln's own autodiff, to rtol 1e-9, on well-conditioned
batched matrices (square, tall and wide); second derivatives (``kiln.grad`` of ``kiln.grad``) against PyTorch's
double backward; float32 stays float32. The op rows (``op_rows_linalg.py``) check each IR op against textbook
loops and finite differences. The errors: a singular LU and an indefinite Cholesky when run (``check_errors``),
the gradients PyTorch refuses (QR mode ``'r'``, ``'complete'`` with m > n), ``eig``, a wrong mode, ONNX export.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.linalg
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import AutodiffError
from kiln.compiler.errors import LoweringError
from kiln.compiler.ir import Builder, DType, Graph, TensorType
from kiln.compiler.ir.parser import parse
from kiln.compiler.ir.printer import print_graph
from oracles import require

RNG = np.random.default_rng(31)


def _heavy(shape):
    """Entries of scale 0.5 with +-2 on the diagonal: well conditioned, square or not."""
    return RNG.standard_normal(shape) * 0.5 + np.eye(*shape[-2:]) * RNG.choice([-2.0, 2.0], shape[:-2] + (1, shape[-1]))


A = _heavy((2, 4, 4))
PIVOTED = A[:, [2, 0, 3, 1], :]  # rows in a 4-cycle: the pivots move rows, P is not its own transpose
B = RNG.standard_normal((2, 4, 2))
TALL = _heavy((2, 5, 3))
WIDE = _heavy((3, 5))
TAU = RNG.uniform(0.5, 1.5, (2, 3))


def _outputs(value):
    return tuple(value) if isinstance(value, tuple) else (value,)


def _weights(outputs):
    rng = np.random.default_rng(5)
    return [rng.standard_normal(tuple(o.shape)) for o in outputs]


def _floats(outputs, weights):
    """The float outputs (a torch or a kiln one) with their weights: integer pivots and infos have no gradient."""
    is_float = lambda o: getattr(o.dtype, "is_floating_point", None) or getattr(o.dtype, "is_float", False)
    return [(o, w) for o, w in zip(outputs, weights) if is_float(o)]


def _torch_values_and_grads(torch, fn, arrays):
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    outputs = _outputs(fn(torch, *tensors))
    weights = _weights(outputs)
    terms = [(o * torch.tensor(w)).sum() for o, w in _floats(outputs, weights) if o.requires_grad]
    grads = torch.autograd.grad(sum(terms), tensors, allow_unused=True) if terms else [None] * len(tensors)
    grads = [np.zeros_like(a) if g is None else g.numpy() for g, a in zip(grads, arrays)]
    return [o.detach().numpy() for o in outputs], weights, grads


def check(fn, *arrays, grad=True):
    """``fn(kiln, ...)`` against ``fn(torch, ...)``: every output, and the gradient of ``sum_k (out_k * w_k)`` over the
    float outputs w.r.t. every input."""
    torch = require("torch")
    expected, weights, grads = _torch_values_and_grads(torch, fn, arrays)
    graph = kiln.trace(lambda *xs: fn(kiln, *xs), *[kiln.TensorSpec(a.shape, "float64") for a in arrays])
    values = NumpyBackend().compile(graph)(*arrays)
    assert len(values) == len(expected)
    for got, want in zip(values, expected):
        assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, got.dtype, want.shape, want.dtype)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    if grad:
        loss = lambda *xs: sum((o * w).sum() for o, w in _floats(_outputs(fn(kiln, *xs)), weights))
        ours = _outputs(kiln.grad(loss, argnums=tuple(range(len(arrays))))(*arrays))
        for got, want in zip(ours, grads):
            np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-11)


FUNCTIONS = {  # name: (function of (library, *inputs), inputs)
    "qr_tall": (lambda lib, a: lib.linalg.qr(a), (TALL,)),
    "qr_square_batched": (lambda lib, a: lib.linalg.qr(a, mode="complete"), (A,)),
    "qr_wide": (lambda lib, a: lib.linalg.qr(a), (WIDE,)),
    "qr_wide_complete": (lambda lib, a: lib.linalg.qr(a, mode="complete"), (WIDE,)),
    "qr_r_values": (lambda lib, a: lib.linalg.qr(a.detach(), mode="r"), (TALL,)),  # no gradient: as PyTorch's (refused below)
    "qr_complete_tall_values": (lambda lib, a: lib.linalg.qr(a.detach(), mode="complete"), (TALL,)),
    "lu_factor": (lambda lib, a: lib.linalg.lu_factor(a), (PIVOTED,)),
    "lu_factor_ex": (lambda lib, a: lib.linalg.lu_factor_ex(a), (TALL,)),
    "lu_factor_wide": (lambda lib, a: lib.linalg.lu_factor(a), (WIDE,)),
    "lu": (lambda lib, a: lib.linalg.lu(a), (PIVOTED,)),
    "lu_tall": (lambda lib, a: lib.linalg.lu(a), (TALL,)),
    "lu_wide": (lambda lib, a: lib.linalg.lu(a), (WIDE,)),
    "lu_unpack": (lambda lib, a: lib.lu_unpack(*lib.linalg.lu_factor(a)), (TALL,)),
    "lu_solve": (lambda lib, a, b: tuple(lib.linalg.lu_solve(*lib.linalg.lu_factor(a), rhs, left=left, adjoint=adjoint)
                                         for rhs, left in ((b, True), (b.mT, False)) for adjoint in (False, True)), (PIVOTED, B)),
    "lu_solve_wrt_lu": (lambda lib, lu, b: tuple(lib.linalg.lu_solve(lu, lib.linalg.lu_factor(lu.detach()).pivots, b, adjoint=adjoint)
                                                 for adjoint in (False, True)), (PIVOTED, B)),  # the gradient w.r.t. the packed LU itself
    "lu_solve_broadcast": (lambda lib, a, b: lib.linalg.lu_solve(*lib.linalg.lu_factor(a[0]), b), (PIVOTED, B)),
    "matrix_exp": (lambda lib, a: (lib.linalg.matrix_exp(a), a.matrix_exp(), lib.matrix_exp(a[0] * 6)), (A,)),
    "matrix_power": (lambda lib, a: tuple(lib.linalg.matrix_power(a, n) for n in (0, 1, 2, 5, -1, -3)) + (a.matrix_power(3),), (A,)),
    "multi_dot": (lambda lib, a, b, c: (lib.linalg.multi_dot([a, b, c]), lib.linalg.multi_dot([a[0], b, c[:, 0]]), lib.linalg.multi_dot([a, b]),
                                        lib.chain_matmul(a, b, c)), (RNG.standard_normal((3, 4)), RNG.standard_normal((4, 6)), RNG.standard_normal((6, 2)))),
    "cross": (lambda lib, x, y: (lib.linalg.cross(x, y), lib.linalg.cross(x[0], y[0])), (RNG.standard_normal((1, 2, 3)), RNG.standard_normal((4, 2, 3)))),
    "diagonal": (lambda lib, a: (lib.linalg.diagonal(a), lib.linalg.diagonal(a, offset=-1, dim1=0, dim2=2)), (A,)),
    "matmul_vecdot": (lambda lib, a, b: (lib.linalg.matmul(a, b), lib.linalg.vecdot(a, a * 2), lib.linalg.vecdot(b, b, dim=-2)), (A, B)),
    "vander": (lambda lib, x: (lib.linalg.vander(x), lib.linalg.vander(x, N=5)), (np.array([[0.0, 1.5, -2.0], [0.5, -1.0, 3.0]]),)),
    "tensorinv": (lambda lib, a: (lib.linalg.tensorinv(a, ind=1), lib.linalg.tensorinv(a.reshape(2, 4, 2, 4))), (_heavy((8, 8)).reshape(8, 2, 4),)),
    "tensorsolve": (lambda lib, a, b: (lib.linalg.tensorsolve(a, b), lib.linalg.tensorsolve(a.permute(2, 0, 3, 1), b, dims=(0, 2))),
                    (_heavy((8, 8)).reshape(2, 4, 2, 4), RNG.standard_normal((2, 4)))),
    "householder_product": (lambda lib, a, tau: (lib.linalg.householder_product(a, tau), lib.linalg.householder_product(a, tau[..., :2]),
                                                 a.orgqr(tau), lib.orgqr(a, tau)), (TALL, TAU)),
    "cholesky_ex": (lambda lib, a: lib.linalg.cholesky_ex(a @ a.mT, upper=True), (A,)),
    "inv_ex": (lambda lib, a: lib.linalg.inv_ex(a), (A,)),
    "solve_ex": (lambda lib, a, b: lib.linalg.solve_ex(a, b) + lib.linalg.solve_ex(a, b[..., 0]) + lib.linalg.solve_ex(a, b.mT, left=False, check_errors=True), (A, B)),
    "cholesky_solve": (lambda lib, a, b: (lib.cholesky_solve(b, lib.linalg.cholesky(a @ a.mT)), b.cholesky_solve(a.tril()),
                                          lib.cholesky_solve(b, a.triu(), upper=True)), (A, B)),
    "cholesky_inverse": (lambda lib, a: (lib.cholesky_inverse(a.tril()), a.triu().cholesky_inverse(upper=True)), (A[0],)),
    "triangular_solve": (lambda lib, a, b: b.triangular_solve(a) + lib.triangular_solve(b, a, upper=False, transpose=True, unitriangular=True), (A, B)),
    "legacy_qr_lu": (lambda lib, a, b: (a.qr()[1], lib.qr(a, some=False)[0], *a.lu(), *lib.lu(a, get_infos=True), b.lu_solve(*a.lu()), lib.lu_solve(b, *a.lu())), (PIVOTED, B)),
    "top_level_determinants": (lambda lib, a: (lib.det(a), lib.logdet(a[:1] * a[:1].det().sign().unsqueeze(-1).unsqueeze(-1)), *lib.slogdet(a),
                                               lib.inverse(a), lib.cholesky(a @ a.mT), lib.cholesky(a @ a.mT, upper=True)), (A,)),
}


@pytest.mark.filterwarnings("ignore::UserWarning")  # PyTorch's deprecation notes on its legacy forms, the oracles of ours
@pytest.mark.parametrize("name", FUNCTIONS)
def test_values_and_gradients_match_torch(name):
    fn, arrays = FUNCTIONS[name]
    check(fn, *arrays)


@pytest.mark.parametrize("name", ["qr", "lu", "matrix_exp", "householder_product"])
def test_second_derivatives_match_torch_double_backward(name):
    torch = require("torch")
    fn = {"qr": lambda lib, a: lib.linalg.qr(a).R + lib.linalg.qr(a).Q[..., :3, :],
          "lu": lambda lib, a: lib.linalg.lu_factor(a).LU,
          "matrix_exp": lambda lib, a: lib.linalg.matrix_exp(a[..., :3, :]),
          "householder_product": lambda lib, a: lib.linalg.householder_product(a, a[..., 0, :] * 0.2 + 1)}[name]
    x = TALL if name != "lu" else PIVOTED
    w, v = RNG.standard_normal(tuple(fn(torch, torch.tensor(x)).shape)), RNG.standard_normal(x.shape)
    t = torch.tensor(x, requires_grad=True)
    (first,) = torch.autograd.grad((fn(torch, t) * torch.tensor(w)).sum(), t, create_graph=True)
    (expected,) = torch.autograd.grad((first * torch.tensor(v)).sum(), t)
    first_grad = kiln.grad(lambda a: (fn(kiln, a) * w).sum())
    got = kiln.grad(lambda a: (first_grad(a) * v).sum())(x)
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-8, atol=1e-10)


def test_one_graph_serves_every_batch_size_and_float32_stays_float32():
    torch = require("torch")
    graph = kiln.trace(lambda a: (*kiln.linalg.qr(a), kiln.linalg.lu_factor(a).LU, kiln.linalg.matrix_exp(a)),
                       kiln.TensorSpec(("N", 4, 4), "float32"))
    run = NumpyBackend().compile(graph)
    for batch in (1, 3):
        a = _heavy((batch, 4, 4)).astype(np.float32)
        t = torch.tensor(a)
        expected = (*torch.linalg.qr(t), torch.linalg.lu_factor(t).LU, torch.linalg.matrix_exp(t))
        for got, want in zip(run(a), expected):
            assert got.dtype == np.float32 and got.shape == tuple(want.shape)
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


def test_the_compositions_serve_a_symbolic_batch():
    torch = require("torch")

    def fn(lib, a, b):
        LU, pivots = lib.linalg.lu_factor(a)
        return (lib.linalg.inv_ex(a).inverse, lib.linalg.cholesky_ex(a @ a.mT).L, lib.linalg.lu_solve(LU, pivots, b),
                lib.linalg.solve_ex(a, b).result, lib.linalg.householder_product(a[..., :3], a[..., 0, :3] * 0.1 + 1),
                lib.linalg.matrix_power(a, 0), *lib.linalg.lu(a), lib.linalg.vander(a[..., 0, :]))

    run = NumpyBackend().compile(kiln.trace(lambda a, b: fn(kiln, a, b), kiln.TensorSpec(("N", 4, 4), "float64"),
                                            kiln.TensorSpec(("N", 4, 2), "float64")))
    for batch in (1, 3):
        a, b = PIVOTED[:1].repeat(batch, 0) + 0.1 * RNG.standard_normal((batch, 4, 4)), RNG.standard_normal((batch, 4, 2))
        for got, want in zip(run(a, b), fn(torch, torch.tensor(a), torch.tensor(b))):
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["qr", "lu_factor", "matrix_exp", "lu_solve"])
def test_float32_gradients_stay_float32_within_float32_accuracy(name):
    torch = require("torch")
    fn = {"qr": lambda lib, a: lib.linalg.qr(a).Q + lib.linalg.qr(a).R, "lu_factor": lambda lib, a: lib.linalg.lu_factor(a).LU,
          "matrix_exp": lambda lib, a: lib.linalg.matrix_exp(a), "lu_solve": lambda lib, a: lib.linalg.lu_solve(*lib.linalg.lu_factor(a), a.mT)}[name]
    weights = RNG.standard_normal(PIVOTED.shape)
    t = torch.tensor(PIVOTED, requires_grad=True)
    (fn(torch, t) * torch.tensor(weights)).sum().backward()
    got = kiln.grad(lambda a: (fn(kiln, a) * weights.astype(np.float32)).sum())(PIVOTED.astype(np.float32))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, t.grad.numpy(), rtol=0, atol=2e-5 * np.abs(t.grad.numpy()).max())


# Singular and indefinite matrices: info, NaN, and check_errors ----------------------------------------------------

SINGULAR = np.stack([np.eye(3), np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]]), np.zeros((3, 3))])
INDEFINITE = np.stack([np.eye(3) * 2, np.diag([1.0, 1.0, -1.0]), np.array([[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]])])


def _run(fn, *arrays):
    graph = kiln.trace(fn, *[kiln.TensorSpec(a.shape, "float64") for a in arrays])
    return NumpyBackend().compile(graph)(*arrays)


def test_infos_match_torch_on_singular_and_indefinite_matrices():
    torch = require("torch")
    lu, pivots, info = _run(lambda a: tuple(kiln.linalg.lu_factor_ex(a)), SINGULAR)
    expected = torch.linalg.lu_factor_ex(torch.tensor(SINGULAR))
    np.testing.assert_array_equal(info, expected.info.numpy())
    np.testing.assert_array_equal(pivots, expected.pivots.numpy())
    np.testing.assert_allclose(lu, expected.LU.numpy(), atol=1e-15)
    (_, cholesky_info), (_, inv_info) = _run(lambda a: tuple(kiln.linalg.cholesky_ex(a)), INDEFINITE), _run(lambda a: tuple(kiln.linalg.inv_ex(a)), SINGULAR)
    np.testing.assert_array_equal(cholesky_info, torch.linalg.cholesky_ex(torch.tensor(INDEFINITE)).info.numpy())
    np.testing.assert_array_equal(inv_info, torch.linalg.inv_ex(torch.tensor(SINGULAR)).info.numpy())


def test_failed_matrices_give_nan_or_torchs_partial_factor_and_the_others_their_values():
    torch = require("torch")
    inverse, info = _run(lambda a: tuple(kiln.linalg.inv_ex(a)), SINGULAR)
    np.testing.assert_array_equal(inverse[0], np.eye(3))
    assert np.isnan(inverse[1:]).all() and list(info) == [0, 3, 1]
    lower, _ = _run(lambda a: tuple(kiln.linalg.cholesky_ex(a)), INDEFINITE)
    np.testing.assert_allclose(lower[0], np.sqrt(2) * np.eye(3))
    np.testing.assert_array_equal(lower[1:], torch.linalg.cholesky_ex(torch.tensor(INDEFINITE[1:])).L.numpy())  # LAPACK's stop


@pytest.mark.parametrize(("fn", "matrices", "message"), [
    (lambda a: kiln.linalg.lu_factor(a).LU, SINGULAR, r"linalg.lu_factor: U\[3,3\] is zero .*batch index \(1,\)"),
    (lambda a: a.lu()[0], SINGULAR[2:], r"linalg.lu_factor: U\[1,1\] is zero .*lu_factor_ex"),
    (lambda a: kiln.linalg.lu_factor_ex(a, check_errors=True).LU, SINGULAR, r"lu_factor_ex: U\[3,3\] is zero"),
    (lambda a: kiln.linalg.cholesky_ex(a, check_errors=True).L, INDEFINITE, r"cholesky_ex: the leading minor of order 3 is not positive-definite"),
    (lambda a: kiln.linalg.inv_ex(a, check_errors=True).inverse, SINGULAR, r"linalg.inv_ex: the matrix is singular"),
    (lambda a: kiln.linalg.solve_ex(a, a, check_errors=True).result, SINGULAR, r"linalg.solve_ex: the matrix is singular"),
])
def test_check_errors_raise_linalg_error_when_run(fn, matrices, message):
    with pytest.raises(kiln.linalg.LinAlgError, match=message):
        _run(fn, matrices)


def test_without_check_errors_nothing_raises():
    info = _run(lambda a: kiln.linalg.lu_factor_ex(a).info, SINGULAR)[0]
    assert list(info) == [0, 3, 1]


# What PyTorch refuses, and what kiln cannot do --------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "shape", "message"), [
    ("r", (4, 3), "mode='r' computes no Q"),
    ("complete", (5, 3), r"mode='complete' and more rows than columns \(5 > 3\)"),
])
def test_qr_gradients_torch_refuses_are_refused_naming_the_line(mode, shape, message):
    with pytest.raises(AutodiffError, match=message) as error:
        kiln.grad(lambda a: kiln.linalg.qr(a, mode=mode).R.sum())(np.ones(shape))
    assert "test_linalg_factor.py" in str(error.value) and "mode='reduced'" in str(error.value)


@pytest.mark.parametrize(("fn", "message"), [
    (lambda a: kiln.linalg.qr(a, mode="full"), "mode must be 'reduced', 'complete' or 'r'"),
    (lambda a: kiln.linalg.eig(a), "eig of a traced tensor: kiln computes it eagerly.*eigh"),
    (lambda a: kiln.linalg.eigvals(a), "eigvals of a traced tensor.*eigh"),
    (lambda a: kiln.linalg.lu_factor(a, pivot=False), "pass pivot=True"),
    (lambda a: kiln.linalg.matrix_power(a, 1.5), "n must be an int"),
    (lambda a: kiln.linalg.multi_dot([a]), "at least 2 tensors"),
    (lambda a: kiln.linalg.vander(a[0], N=1), "N must be greater than 1"),
    (lambda a: kiln.linalg.householder_product(a, a), r"k <= n <= m"),
    (lambda a: kiln.linalg.lu_solve(a[:2], a[0].int(), a), "square matrices"),
    (lambda a: kiln.linalg.tensorinv(a, ind=1), "must equal"),
])
def test_bad_arguments_raise_naming_the_line(fn, message):
    with pytest.raises(kiln.TraceError, match=message) as error:
        kiln.trace(fn, kiln.TensorSpec((3, 4), "float64"))
    assert "test_linalg_factor.py" in str(error.value)


def test_bad_pivots_raise_when_run():
    graph = kiln.trace(lambda lu, pivots: kiln.lu_unpack(lu, pivots).P, kiln.TensorSpec((3, 3), "float64"), kiln.TensorSpec((3,), "int32"))
    with pytest.raises(kiln.linalg.LinAlgError, match=r"pivots must lie in \[1, 3\]"):
        NumpyBackend().compile(graph)(np.eye(3), np.array([1, 4, 3], np.int32))


def _one_op_graph(name: str, dtype: DType = DType.f32, **attrs) -> Graph:
    graph = Graph("g")
    a = graph.add_input(TensorType(("N", 3, 3), dtype), "a")
    b = Builder(graph)
    graph.outputs = [b.op(name, a if name != "linalg.pivots_to_permutation" else b.op("linalg.lu_pivots", a), **attrs)]
    return graph


@pytest.mark.parametrize(("name", "attrs"), [("linalg.qr_q", {}), ("linalg.qr_r", {"mode": "r"}), ("linalg.lu_factor", {}),
                                             ("linalg.pivots_to_permutation", {"size": 3}), ("linalg.matrix_exp", {}),
                                             ("linalg.cholesky_info", {})])
def test_onnx_export_refuses_naming_the_op(name, attrs):
    from kiln.backends.onnx.export import graph_to_onnx

    with pytest.raises(LoweringError, match="linalg.(lu_pivots|" + name.split(".")[1] + ").*has no ONNX operator"):
        graph_to_onnx(_one_op_graph(name, **attrs))


def test_print_parse_round_trip():
    graph = Graph("g")
    a = graph.add_input(TensorType(("N", 4, 3), DType.f64), "a")
    b = Builder(graph)
    info = b.op("linalg.cholesky_info", b.op("linalg.matrix_exp", b.matmul(b.transpose(a, perm=(0, 2, 1)), a)))
    graph.outputs = [b.op("linalg.qr_q", a, mode="complete"), b.op("linalg.pivots_to_permutation", b.op("linalg.lu_pivots", a), size=4),
                     b.op("linalg.checked", b.op("linalg.lu_factor", a), info, function="linalg.f", failure="order {info}")]
    text = print_graph(graph)
    assert 'mode = "complete"' in text and "size = 4" in text and 'failure = "order {info}"' in text
    assert print_graph(parse(text)) == text


def test_forwarded_names_are_torch_functions_and_kiln_functions():
    torch = require("torch")
    from kiln.frontend.linalg_factor import FACTOR_FORWARDED

    assert [name for name in FACTOR_FORWARDED if not (callable(getattr(torch, name, None)) and hasattr(torch.Tensor, name))] == []
    assert all(callable(getattr(kiln, name)) for name in (*FACTOR_FORWARDED, "chain_matmul", "lu_unpack"))
