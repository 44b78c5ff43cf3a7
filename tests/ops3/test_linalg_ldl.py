"""``kiln.linalg.ldl_factor``, ``ldl_factor_ex`` and ``ldl_solve`` (``frontend/linalg_ldl.py``) against
``torch.linalg`` and LAPACK.

PyTorch 2.13's ``LD`` and ``pivots`` are LAPACK's ``sytrf`` (lower, MKL on CPU); SciPy's ``dsytrf`` (OpenBLAS) is a
second oracle. Matrices of up to 64 rows run LAPACK's unblocked ``sytf2``, which kiln's kernel follows step for step:
the pivots and ``info`` (the decisions) must be equal, in float64 and float32, batched, with 1x1 and 2x2 blocks and
interchanges. ``LD`` is not bit-portable: vendor LAPACKs contract the rank-1 and rank-2 updates into FMAs and vectorise
them per CPU (kiln with only OpenBLAS's FMA ``syr`` emulated gives SciPy's ``ssytrf`` bit for bit; MKL also fuses the
2x2 update), so ``LD`` is compared to a rounding bound (``_assert_equal_to_rounding``) and kiln's factors must rebuild
``A`` to a backward error of ``n eps``; so are larger ones (the blocked ``sytrf``), with the same pivots.
``info`` and the raising forms on singular and NaN matrices; ``ldl_solve`` against torch (broadcast batches,
float32), eager, compiled with a symbolic batch; the refused derivatives (torch has none); bad arguments, bad pivots
when run, ONNX export, the IR text round trip."""

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
from ops3.ldl_reference import rebuilt, symmetric_indefinite
from oracles import require

RNG = np.random.default_rng(41)
F64 = dict(rtol=1e-12, atol=1e-12)


def _symmetric(shape, rng=RNG):
    """Standard normal ``M + M^T`` with a diagonal scaled by 0.1: 2x2 blocks and interchanges in most matrices."""
    m = rng.standard_normal(shape)
    a = m + np.swapaxes(m, -1, -2)
    return a - np.eye(shape[-1]) * a * 0.9


def _torch_factor(torch, a):
    LD, pivots, info = torch.linalg.ldl_factor_ex(torch.tensor(a))
    return LD.numpy(), pivots.numpy(), info.numpy()


def _kiln_factor(a):
    return tuple(t.numpy() for t in kiln.linalg.ldl_factor_ex(kiln.tensor(a)))


def _assert_equal_to_rounding(LD, expected_LD):
    """``|LD - expected| <= 8 n eps max|expected|`` per matrix: two ``sytf2`` runs that round differently (FMA or not)
    differ by at most two roundings an entry a step in each, ``4 n eps`` of the largest entry the steps meet
    (``max|LD|`` holds the growth of the 2x2 blocks, so the small entries they produce are judged on that scale),
    doubled for errors carried into later steps. Measured on an AVX-512 Xeon (kiln vs torch/MKL and SciPy/OpenBLAS,
    1000 matrices of 3 rows to 12 of 64, both dtypes): at most 1.5 (n = 3 to 13) and 2.2 (n = 64) ``n eps max|LD|``."""
    n = LD.shape[-1]
    scale = np.abs(expected_LD).max(axis=(-1, -2), keepdims=True)
    bound = 8 * n * np.finfo(LD.dtype).eps * scale
    excess = np.abs(LD.astype(np.float64) - expected_LD) - bound
    assert (excess <= 0).all(), f"LD differs by more than rounding at {np.argwhere(excess > 0)[:5].tolist()}"


def _assert_rebuilds(a, LD, pivots):
    """Backward error: ``max|A - L D L^T| <= n eps max(|A| + |L| |D| |L^T|)`` for each matrix (Higham's bound for
    Bunch-Kaufman with ``p(n) = n``; measured at most 0.27 of it for n = 3, 0.005 for n = 64)."""
    eps = np.finfo(LD.dtype).eps
    for index in np.ndindex(*a.shape[:-2]):
        ld, rows, matrix = LD[index].astype(np.float64), pivots[index], a[index].astype(np.float64)
        bound = matrix.shape[-1] * eps * (np.abs(matrix) + rebuilt(np.abs(ld), rows)).max()
        assert np.abs(rebuilt(ld, rows) - matrix).max() <= bound, f"matrix {index} is not rebuilt from its factors"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(1, 1), (2, 2), (3, 3, 3), (40, 5, 5), (8, 13, 13), (2, 64, 64)])
def test_factor_matches_torch_and_lapack_with_the_same_pivots(shape, dtype):
    torch = require("torch")
    lapack = require("scipy.linalg.lapack")
    a = _symmetric(shape).astype(dtype)
    LD, pivots, info = _kiln_factor(a)
    expected_LD, expected_pivots, expected_info = _torch_factor(torch, a)
    assert LD.dtype == expected_LD.dtype and pivots.dtype == np.int32 and info.dtype == np.int32
    np.testing.assert_array_equal(pivots, expected_pivots)
    np.testing.assert_array_equal(info, expected_info)
    _assert_equal_to_rounding(LD, expected_LD)
    _assert_rebuilds(a, LD, pivots)
    sytrf = lapack.dsytrf if dtype == "float64" else lapack.ssytrf
    for index in np.ndindex(*shape[:-2]):
        lapack_LD, lapack_pivots, _ = sytrf(a[index], lower=1)
        np.testing.assert_array_equal(lapack_pivots, pivots[index])
        _assert_equal_to_rounding(LD[index], np.tril(lapack_LD))
    if shape[-1] >= 5:
        assert (pivots < 0).any() and (np.abs(pivots) != np.arange(1, shape[-1] + 1)).any(), "no 2x2 block or interchange"


def test_blocked_sizes_match_torch_to_rounding_with_the_same_pivots():
    torch = require("torch")
    a = _symmetric((2, 90, 90))
    LD, pivots, _ = _kiln_factor(a)
    expected_LD, expected_pivots, _ = _torch_factor(torch, a)
    np.testing.assert_array_equal(pivots, expected_pivots)
    _assert_equal_to_rounding(LD, expected_LD)  # measured at most 1.7 n eps max|LD| (n = 90, 130) vs torch and SciPy
    _assert_rebuilds(a, LD, pivots)


def test_factor_reads_only_the_lower_triangle_and_hermitian_changes_nothing():
    torch = require("torch")
    a = _symmetric((3, 4, 4))
    lower_only = np.tril(a) + np.triu(RNG.standard_normal((3, 4, 4)), 1)
    symmetric_LD, symmetric_pivots = (t.numpy() for t in kiln.linalg.ldl_factor(kiln.tensor(a)))
    for hermitian in (False, True):
        LD, pivots = kiln.linalg.ldl_factor(kiln.tensor(lower_only), hermitian=hermitian)
        np.testing.assert_array_equal(LD.numpy(), symmetric_LD)
        np.testing.assert_array_equal(pivots.numpy(), symmetric_pivots)
        expected = torch.linalg.ldl_factor(torch.tensor(lower_only), hermitian=hermitian)
        np.testing.assert_array_equal(pivots.numpy(), expected.pivots.numpy())
        _assert_equal_to_rounding(LD.numpy(), expected.LD.numpy())


def _singular_batch():
    """Fine, all ones (D[2, 2] = 0 after one step), a zero first column, a zero matrix."""
    a = np.zeros((4, 4, 4))
    a[0] = _symmetric((4, 4))
    a[1] = np.ones((4, 4))
    a[2, 1:, 1:] = _symmetric((3, 3))
    return a


def test_info_and_factors_of_singular_matrices_match_torch():
    torch = require("torch")
    a = _singular_batch()
    LD, pivots, info = _kiln_factor(a)
    expected_LD, expected_pivots, expected_info = _torch_factor(torch, a)
    np.testing.assert_array_equal(info, expected_info)
    assert info.tolist() == [0, 2, 1, 1]
    np.testing.assert_array_equal(pivots, expected_pivots)
    _assert_equal_to_rounding(LD, expected_LD)
    _assert_rebuilds(a, LD, pivots)


def test_a_nan_sets_info_where_reference_lapack_meets_it():
    """Reference LAPACK's ``sytf2`` (3.2 on, SciPy's) stops pivoting at a NaN diagonal entry and sets ``info`` there;
    torch's CPU build (MKL) pivots past it instead (``info = 4`` here), so the oracle is SciPy's ``dsytrf``."""
    lapack = require("scipy.linalg.lapack")
    a = _symmetric((4, 4))
    a[2, 2] = np.nan
    LD, pivots, info = _kiln_factor(a)
    lapack_LD, lapack_pivots, lapack_info = lapack.dsytrf(a, lower=1)
    assert info == lapack_info == 3
    np.testing.assert_array_equal(pivots, lapack_pivots)
    np.testing.assert_array_equal(np.isnan(LD), np.isnan(np.tril(lapack_LD)))
    _assert_equal_to_rounding(np.nan_to_num(LD), np.nan_to_num(np.tril(lapack_LD)))


def test_singular_matrices_raise_when_run_unless_ex_without_check_errors():
    a = _singular_batch()[:2]
    with pytest.raises(kiln.linalg.LinAlgError, match=r"linalg.ldl_factor: D\[2,2\] is zero .*ldl_factor_ex .*batch index \(1,\)"):
        kiln.linalg.ldl_factor(kiln.tensor(a))
    with pytest.raises(kiln.linalg.LinAlgError, match=r"linalg.ldl_factor_ex: D\[2,2\] is zero"):
        kiln.linalg.ldl_factor_ex(kiln.tensor(a), check_errors=True)
    assert kiln.linalg.ldl_factor_ex(kiln.tensor(a)).info.numpy().tolist() == [0, 2]


@pytest.mark.parametrize(("ld_shape", "b_shape"), [((4, 4), (4, 3)), ((3, 5, 5), (5, 2)), ((5, 5), (2, 5, 1)), ((2, 1, 4, 4), (3, 4, 2))])
def test_solve_matches_torch(ld_shape, b_shape):
    torch = require("torch")
    a, b = _symmetric(ld_shape), RNG.standard_normal(b_shape)
    LD, pivots = kiln.linalg.ldl_factor(kiln.tensor(a))
    X = kiln.linalg.ldl_solve(LD, pivots, kiln.tensor(b)).numpy()
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    expected_LD, expected_pivots = torch.linalg.ldl_factor(torch.tensor(np.broadcast_to(a, batch + a.shape[-2:]).copy()))
    # the batches broadcast by hand: torch 2.13's ldl_solve crashes (SIGSEGV) on LD (2, 1, 4, 4) with B (3, 4, 2)
    expected = torch.linalg.ldl_solve(expected_LD, expected_pivots, torch.tensor(np.broadcast_to(b, batch + b.shape[-2:]).copy())).numpy()
    assert X.shape == expected.shape
    np.testing.assert_allclose(X, expected, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(np.broadcast_to(a, np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + a.shape[-2:]) @ X,
                               np.broadcast_to(b, X.shape), rtol=1e-9, atol=1e-9)


def test_solve_in_float32_and_with_int64_pivots():
    torch = require("torch")
    a, b = _symmetric((3, 6, 6)).astype(np.float32), RNG.standard_normal((3, 6, 2)).astype(np.float32)
    LD, pivots = torch.linalg.ldl_factor(torch.tensor(a))
    expected = torch.linalg.ldl_solve(LD, pivots, torch.tensor(b)).numpy()
    for given in (pivots.numpy(), pivots.numpy().astype(np.int64)):
        X = kiln.linalg.ldl_solve(kiln.tensor(LD.numpy()), kiln.tensor(given), kiln.tensor(b)).numpy()
        assert X.dtype == np.float32
        np.testing.assert_allclose(X, expected, rtol=1e-5, atol=1e-5)


def test_solve_agrees_with_the_factorization_rebuilt_by_lapacks_definition():
    a = symmetric_indefinite(RNG, 6, (4,))
    LD, pivots = (t.numpy() for t in kiln.linalg.ldl_factor(kiln.tensor(a)))
    for index in range(4):
        np.testing.assert_allclose(rebuilt(LD[index], pivots[index]), a[index], rtol=1e-12, atol=1e-13)


def test_one_compiled_graph_serves_every_batch_size():
    torch = require("torch")

    def factor_and_solve(a, b):
        LD, pivots, info = kiln.linalg.ldl_factor_ex(a)
        return kiln.linalg.ldl_solve(LD, pivots, b), info

    compiled = kiln.compile(factor_and_solve)  # batch dim "N"
    for count in (3, 1):
        a, b = _symmetric((count, 5, 5)), RNG.standard_normal((count, 5, 2))
        X, info = compiled(a, b)
        LD, pivots = torch.linalg.ldl_factor(torch.tensor(a))
        np.testing.assert_allclose(X, torch.linalg.ldl_solve(LD, pivots, torch.tensor(b)).numpy(), **F64)
        assert np.asarray(info).tolist() == [0] * count


def test_derivatives_are_refused_as_torch_refuses_them():
    torch = require("torch")
    a, b = _symmetric((4, 4)), RNG.standard_normal((4, 2))
    A = torch.tensor(a, requires_grad=True)
    with pytest.raises(RuntimeError, match="derivative for aten::linalg_ldl_factor_ex is not implemented"):
        torch.linalg.ldl_factor(A).LD.sum().backward()
    with pytest.raises(AutodiffError, match=r"linalg.ldl_factor \(from .*test_linalg_ldl.py:\d+.*\) has no derivative") as error:
        kiln.grad(lambda x: kiln.linalg.ldl_factor(x).LD.sum())(a)
    assert "kiln.linalg.solve" in str(error.value)
    LD, pivots = kiln.linalg.ldl_factor(kiln.tensor(a))
    with pytest.raises(AutodiffError, match=r"linalg.ldl_solve .*has no derivative"):
        kiln.grad(lambda rhs: kiln.linalg.ldl_solve(LD, pivots, rhs).sum())(b)
    eager = kiln.tensor(a, requires_grad=True)
    with pytest.raises(AutodiffError, match="linalg.ldl_factor .*has no derivative"):
        kiln.linalg.ldl_factor(eager).LD.sum().backward()


@pytest.mark.parametrize(("fn", "message"), [
    (lambda a: kiln.linalg.ldl_factor(a[:, :3]), "A must be batches of square matrices"),
    (lambda a: kiln.linalg.ldl_factor(a.int()), "A must be floating point"),
    (lambda a: kiln.linalg.ldl_solve(a, a[0, :3].int(), a), r"expected LD.shape\[:-1\] and pivots.shape to be the same"),
    (lambda a: kiln.linalg.ldl_solve(a, a[0], a), "expected integer pivots"),
    (lambda a: kiln.linalg.ldl_solve(a, a[0].int(), a[0]), r"expected B \(\.\.\., 4, k\)"),
    (lambda a: kiln.linalg.ldl_solve(a, a[0].int(), a.float()), "of LD's dtype"),
])
def test_bad_arguments_raise_naming_the_line(fn, message):
    with pytest.raises(kiln.TraceError, match=message) as error:
        kiln.trace(fn, kiln.TensorSpec((4, 4), "float64"))
    assert "test_linalg_ldl.py" in str(error.value)


@pytest.mark.parametrize(("pivots", "message"), [([1, 5, 3, 4], r"pivots must lie in \[1, 4\] or \[-4, -1\]"),
                                                 ([1, 0, 3, 4], r"pivots must lie in"),
                                                 ([1, 2, 3, -4], "pivot 4 is negative .* but pivot 5 does not repeat it"),
                                                 ([-3, 2, 3, 4], "pivot 1 is negative .* but pivot 2 does not repeat it")])
def test_bad_pivots_raise_when_run(pivots, message):
    graph = kiln.trace(lambda ld, p, b: kiln.linalg.ldl_solve(ld, p, b), kiln.TensorSpec((4, 4), "float64"),
                       kiln.TensorSpec((4,), "int32"), kiln.TensorSpec((4, 1), "float64"))
    with pytest.raises(kiln.linalg.LinAlgError, match=message):
        NumpyBackend().compile(graph)(np.eye(4), np.array(pivots, np.int32), np.ones((4, 1)))


def _ldl_graph() -> Graph:
    graph = Graph("g")
    a = graph.add_input(TensorType(("N", 3, 3), DType.f32), "a")
    b = graph.add_input(TensorType(("N", 3, 2), DType.f32), "b")
    builder = Builder(graph)
    graph.outputs = [builder.op("linalg.ldl_solve", builder.op("linalg.ldl_factor", a), builder.op("linalg.ldl_pivots", a), b)]
    return graph


def test_onnx_export_refuses_naming_the_op():
    from kiln.backends.onnx.export import graph_to_onnx

    with pytest.raises(LoweringError, match=r"linalg.ldl_(factor|pivots|solve).*has no ONNX operator"):
        graph_to_onnx(_ldl_graph())


def test_print_parse_round_trip():
    text = print_graph(_ldl_graph())
    assert '"linalg.ldl_pivots"' in text and "tensor<Nx3xi32>" in text
    assert print_graph(parse(text)) == text


def test_vmap_factors_each_matrix():
    a = _symmetric((3, 4, 4))
    LD, pivots = kiln.vmap(kiln.linalg.ldl_factor)(a)
    expected = kiln.linalg.ldl_factor(kiln.tensor(a))
    np.testing.assert_array_equal(np.asarray(LD), expected.LD.numpy())
    np.testing.assert_array_equal(np.asarray(pivots), expected.pivots.numpy())


def test_empty_matrices_match_torch():
    torch = require("torch")
    for shape in ((0, 0), (2, 0, 0), (0, 3, 3)):
        ours, theirs = _kiln_factor(np.zeros(shape)), _torch_factor(torch, np.zeros(shape))
        assert [o.shape for o in ours] == [t.shape for t in theirs] and ours[2].tolist() == theirs[2].tolist()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_inputs_factor_and_solve_in_float32_rounded_once(dtype):
    """torch's CPU kernel refuses half dtypes; kiln computes in float32 and rounds, so the oracle is torch in float32
    on the same (half) values, rounded to the half dtype."""
    torch = require("torch")
    half = getattr(torch, dtype)
    a = torch.tensor(_symmetric((2, 5, 5))).to(half)
    b = torch.tensor(RNG.standard_normal((2, 5, 2))).to(half)
    LD, pivots = kiln.linalg.ldl_factor(kiln.tensor(a.float().numpy(), dtype=getattr(kiln, dtype)))
    expected_LD, expected_pivots = torch.linalg.ldl_factor(a.float())
    np.testing.assert_array_equal(pivots.numpy(), expected_pivots.numpy())
    np.testing.assert_array_equal(LD.float().numpy(), expected_LD.to(half).float().numpy())
    X = kiln.linalg.ldl_solve(LD, pivots, kiln.tensor(b.float().numpy(), dtype=getattr(kiln, dtype)))
    expected = torch.linalg.ldl_solve(expected_LD.to(half).float(), expected_pivots, b.float()).to(half)
    np.testing.assert_array_equal(X.float().numpy(), expected.float().numpy())


def test_vmap_solves_with_batched_or_shared_factors_and_right_hand_sides():
    a, rhs = _symmetric((4, 3, 3)), RNG.standard_normal((4, 3, 2))
    LD, pivots = (t.numpy() for t in kiln.linalg.ldl_factor(kiln.tensor(a)))
    np.testing.assert_allclose(np.asarray(kiln.vmap(kiln.linalg.ldl_solve)(LD, pivots, rhs)), np.linalg.solve(a, rhs), **F64)
    shared = kiln.vmap(lambda b: kiln.linalg.ldl_solve(kiln.tensor(LD[0]), kiln.tensor(pivots[0]), b))(rhs)
    np.testing.assert_allclose(np.asarray(shared), np.linalg.solve(a[0], rhs), **F64)
    stacked = kiln.vmap(lambda ld, p: kiln.linalg.ldl_solve(ld, p, kiln.tensor(rhs[:2])))(LD, pivots)  # B (2, 3, 2) per example
    np.testing.assert_allclose(np.asarray(stacked), np.linalg.solve(a[:, None], rhs[None, :2]), **F64)
