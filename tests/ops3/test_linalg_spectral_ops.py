"""``linalg.eigh`` and ``linalg.svd`` (``compiler/ops/linalg_spectral.py``) in the IR and on the NumPy backend.

Values against textbook algorithms in float64, one matrix at a time (``np.linalg`` is the kernel, so it is not the
reference): cyclic Jacobi rotations for the symmetric eigenproblem (Golub & Van Loan 8.5), Hestenes' one-sided
Jacobi for the SVD; vectors compared after a sign fix (a vector's sign is LAPACK's choice), the SVD's ``u`` and ``v``
flipped together. Gradients of sign-invariant losses against central finite differences, first and second order
(``eigh`` of ``(X + X^T) / 2``: its gradient is the symmetric one, PyTorch's). PyTorch's autograd as the gradient
oracle: ``tests/frontend/test_linalg_spectral_vs_torch.py``; the CuPy table:
``tests/backends_cupy/test_linalg_spectral_on_fake_cupy.py``. Also: shape rules, print/parse, ONNX refusal, a matrix
with a NaN.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from autodiff.test_vjp_finite_differences import check_against_finite_differences
from kiln.backends.numpy import NumpyBackend
from kiln.backends.numpy.lowering_linalg import LinAlgError
from kiln.compiler.autodiff import differentiate
from kiln.compiler.errors import LoweringError, ShapeError
from kiln.compiler.ir import Builder, DType, Graph, TensorType
from kiln.compiler.ir.core import Value
from kiln.compiler.ir.parser import parse
from kiln.compiler.ir.printer import print_graph

EIGH_SHAPES = ((3, 3), (2, 4, 4), (1, 1), ("N", 3, 3))
SVD_SHAPES = ((3, 3), (5, 3), (3, 5), (2, 4, 3), ("N", 2, 5), (1, 1), (4, 1))
TOLERANCES = {"f64": {"rtol": 1e-10, "atol": 1e-12}, "f32": {"rtol": 1e-4, "atol": 1e-5}}


# References, one matrix at a time.


def _rotation(x: float, y: float, z: float) -> tuple[float, float]:
    # (c, s) of the Jacobi rotation zeroing the coupling z of diagonal entries x, y: t = sign(r) / (|r| + sqrt(1 + r^2)),
    # r = (y - x) / 2z, c = 1 / sqrt(1 + t^2), s = t c
    ratio = (y - x) / (2 * z)
    t = math.copysign(1.0, ratio) / (abs(ratio) + math.sqrt(1 + ratio * ratio))
    c = 1 / math.sqrt(1 + t * t)
    return c, t * c


def _jacobi_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # cyclic Jacobi: A <- J^T A J zeroes A[p, q], V <- V J, until the off-diagonal part vanishes; w = diag(A) sorted
    a, n = np.array(a, np.float64), len(a)
    vectors = np.eye(n)
    for _ in range(60):
        if np.sum(np.tril(a, -1) ** 2) <= 1e-30 * np.sum(a * a):
            break
        for p in range(n - 1):
            for q in range(p + 1, n):
                if a[p, q] != 0:
                    c, s = _rotation(a[p, p], a[q, q], a[p, q])
                    rotation = np.eye(n)
                    rotation[[p, p, q, q], [p, q, p, q]] = c, s, -s, c
                    a, vectors = rotation.T @ a @ rotation, vectors @ rotation
    order = np.argsort(np.diag(a))
    return np.diag(a)[order], vectors[:, order]


def _hestenes_svd(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # one-sided Jacobi on the columns of A (m >= n): rotate pairs until orthogonal; S = column norms, U = columns / S,
    # V = the rotations; A^T = V S U^T for m < n
    if a.shape[0] < a.shape[1]:
        u, s, vh = _hestenes_svd(a.T)
        return vh.T, s, u.T
    columns, n = np.array(a, np.float64), a.shape[1]
    v = np.eye(n)
    for _ in range(60):
        rotated = False
        for p in range(n - 1):
            for q in range(p + 1, n):
                alpha, beta, gamma = columns[:, p] @ columns[:, p], columns[:, q] @ columns[:, q], columns[:, p] @ columns[:, q]
                if abs(gamma) > 1e-15 * math.sqrt(alpha * beta):
                    rotated = True
                    c, s = _rotation(alpha, beta, gamma)
                    for matrix in (columns, v):
                        matrix[:, [p, q]] = matrix[:, [p, q]] @ np.array([[c, s], [-s, c]])
        if not rotated:
            break
    s = np.linalg.norm(columns, axis=0)
    order = np.argsort(-s)
    return columns[:, order] / s[order], s[order], v[:, order].T


def _triangle_as_symmetric(a: np.ndarray, uplo: str) -> np.ndarray:
    triangle = np.tril(a) if uplo == "L" else np.triu(a)
    return triangle + triangle.T - np.diag(np.diag(a))


def _signs_like(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per column, +1 or -1 so that ``ours * signs`` points as ``reference``."""
    return np.where(np.sum(ours * reference, axis=0) < 0, -1.0, 1.0)


# Graphs.


def _graph(name: str, shape, dtype: str, **attrs) -> tuple[Graph, Value, tuple]:
    graph = Graph(name.replace(".", "_"))
    a = graph.add_input(TensorType(shape, DType.of(dtype)), "a")
    results = Builder(graph).op(name, a, **attrs)
    graph.outputs = list(results)
    return graph, a, results


def _concrete(shape, n: int) -> tuple[int, ...]:
    return tuple(n if d == "N" else d for d in shape)


def _batch_sizes(shape) -> tuple[int, ...]:
    return (2, 5) if "N" in shape else (0,)


@pytest.mark.parametrize("dtype", ["f64", "f32"])
@pytest.mark.parametrize("uplo", ["L", "U"])
@pytest.mark.parametrize("shape", EIGH_SHAPES, ids=str)
def test_eigh_matches_jacobi_rotations(shape, uplo, dtype):
    graph, _, (w, v) = _graph("linalg.eigh", shape, dtype, UPLO=uplo)
    assert (w.type.shape, v.type.shape) == (shape[:-1], shape)
    run = NumpyBackend().compile(graph)
    for n in _batch_sizes(shape):
        a = np.random.default_rng(n).standard_normal(_concrete(shape, n)).astype(DType.of(dtype).numpy)
        values, vectors = run(a)
        assert values.dtype == vectors.dtype == a.dtype
        for index in np.ndindex(*a.shape[:-2]):
            want_values, want_vectors = _jacobi_eigh(_triangle_as_symmetric(a[index].astype(np.float64), uplo))
            np.testing.assert_allclose(values[index], want_values, **TOLERANCES[dtype])
            ours = vectors[index] * _signs_like(vectors[index], want_vectors)
            np.testing.assert_allclose(ours, want_vectors, **TOLERANCES[dtype])


@pytest.mark.parametrize("dtype", ["f64", "f32"])
@pytest.mark.parametrize("full_matrices", [False, True])
@pytest.mark.parametrize("shape", SVD_SHAPES, ids=str)
def test_svd_matches_one_sided_jacobi(shape, full_matrices, dtype):
    graph, _, (u, s, vh) = _graph("linalg.svd", shape, dtype, full_matrices=full_matrices)
    m, n = shape[-2:]
    k = min(m, n)
    left, right = (m, n) if full_matrices else (k, k)
    assert (u.type.shape[-2:], s.type.shape[-1], vh.type.shape[-2:]) == ((m, left), k, (right, n))
    run = NumpyBackend().compile(graph)
    for size in _batch_sizes(shape):
        a = np.random.default_rng(size).standard_normal(_concrete(shape, size)).astype(DType.of(dtype).numpy)
        got_u, got_s, got_vh = run(a)
        assert got_u.dtype == got_s.dtype == got_vh.dtype == a.dtype
        for index in np.ndindex(*a.shape[:-2]):
            want_u, want_s, want_vh = _hestenes_svd(a[index].astype(np.float64))
            np.testing.assert_allclose(got_s[index], want_s, **TOLERANCES[dtype])
            signs = _signs_like(got_u[index][:, :k], want_u)  # u_j and v_j flip together
            np.testing.assert_allclose(got_u[index][:, :k] * signs, want_u, **TOLERANCES[dtype])
            np.testing.assert_allclose(got_vh[index][:k] * signs[:, None], want_vh, **TOLERANCES[dtype])
            for orthogonal in (got_u[index], got_vh[index].T):  # the full factors' extra columns complete a basis
                np.testing.assert_allclose(orthogonal.T @ orthogonal, np.eye(orthogonal.shape[1]), atol=1e-5 if dtype == "f32" else 1e-12)


# Gradients: sign-invariant losses, central differences.


def _symmetrized(b: Builder, x: Value) -> Value:
    perm = tuple(range(x.type.rank - 2)) + (x.type.rank - 1, x.type.rank - 2)
    return b.mul(b.add(x, b.transpose(x, perm=perm)), b.scalar_like(0.5, x))


def _weighted(b: Builder, value: Value, seed: int) -> Value:
    """``sum(value * W)``, ``W`` fixed random weights (one per element; shared along a symbolic dim)."""
    weights = np.random.default_rng(seed).standard_normal(tuple(1 if isinstance(d, str) else d for d in value.type.shape))
    return b.reduce_sum(b.mul(value, b.constant(weights)))


def _total(b: Builder, terms: list[Value]) -> Value:
    total = terms[0]
    for term in terms[1:]:
        total = b.add(total, term)
    return total


def _eigh_loss(b: Builder, x: Value, uplo: str, parts: tuple[str, ...]) -> Value:
    # <W1, w> + <W2, V*V> + <W3, V diag(c) V^T>: each unchanged by flipping an eigenvector
    w, v = b.op("linalg.eigh", _symmetrized(b, x), UPLO=uplo)
    c = b.constant(np.random.default_rng(9).standard_normal(v.type.shape[-1:]))
    terms = {"values": [_weighted(b, w, 1)],
             "vectors": [_weighted(b, b.mul(v, v), 2), _weighted(b, b.matmul(b.mul(v, c), _swap(b, v)), 3)]}
    return _total(b, [t for part in parts for t in terms[part]])


def _svd_loss(b: Builder, x: Value, full_matrices: bool, parts: tuple[str, ...]) -> Value:
    # <W1, U*U> + <W2, S> + <W3, Vh*Vh> + <W4, U_k diag(c) Vh_k>: each unchanged by flipping u_j and v_j together
    u, s, vh = b.op("linalg.svd", x, full_matrices=full_matrices)
    k = s.type.shape[-1]
    u_k, vh_k = b.slice(u, axis=u.type.rank - 1, start=0, stop=k), b.slice(vh, axis=vh.type.rank - 2, start=0, stop=k)
    c = b.constant(np.random.default_rng(9).standard_normal((k,)))
    terms = {"U": [_weighted(b, b.mul(u_k, u_k), 1)], "S": [_weighted(b, s, 2)], "Vh": [_weighted(b, b.mul(vh_k, vh_k), 3)],
             "pairs": [_weighted(b, b.matmul(b.mul(u_k, c), vh_k), 4)]}
    return _total(b, [t for part in parts for t in terms[part]])


def _swap(b: Builder, x: Value) -> Value:
    return b.transpose(x, perm=tuple(range(x.type.rank - 2)) + (x.type.rank - 1, x.type.rank - 2))


def _gradient_graph(shape, loss) -> Graph:
    """``(loss(x), d loss / dx)`` of a float64 input ``x`` of ``shape``."""
    graph = Graph("loss")
    x = graph.add_input(TensorType(shape, DType.f64), "x")
    value = loss(Builder(graph), x)
    graph.outputs = [value, *differentiate(graph, value, [x])]
    return graph


def _second_order_graph(shape, loss) -> Graph:
    """``(<d loss / dx, W>, its gradient)``: the backward graph differentiated again."""
    graph = _gradient_graph(shape, loss)
    b = Builder(graph)
    inner = _weighted(b, graph.outputs[1], 11)
    graph.outputs = [inner, *differentiate(graph, inner, [graph.inputs[0]])]
    return graph


def _check_finite_differences(graph: Graph, shape) -> None:
    x = np.random.default_rng(4).standard_normal(_concrete(shape, 2))
    check_against_finite_differences(graph, [0], [x], lambda outputs, inputs: outputs[0])


EIGH_PARTS = (("values",), ("vectors",), ("values", "vectors"))
SVD_PARTS = (("S",), ("U",), ("Vh",), ("pairs",), ("U", "S", "Vh", "pairs"))


@pytest.mark.parametrize("parts", EIGH_PARTS, ids="+".join)
@pytest.mark.parametrize(("shape", "uplo"), [((3, 3), "L"), ((2, 4, 4), "U"), (("N", 3, 3), "L")], ids=str)
def test_eigh_gradient_matches_finite_differences(shape, uplo, parts):
    _check_finite_differences(_gradient_graph(shape, lambda b, x: _eigh_loss(b, x, uplo, parts)), shape)


@pytest.mark.parametrize("parts", SVD_PARTS, ids="+".join)
@pytest.mark.parametrize(("shape", "full_matrices"), [((3, 3), False), ((4, 3), False), ((2, 3, 4), False), ((4, 3), True),
                                                      (("N", 2, 4), True), ((3, 3), True)], ids=str)
def test_svd_gradient_matches_finite_differences(shape, full_matrices, parts):
    _check_finite_differences(_gradient_graph(shape, lambda b, x: _svd_loss(b, x, full_matrices, parts)), shape)


@pytest.mark.parametrize(("shape", "loss"), [
    ((3, 3), lambda b, x: _eigh_loss(b, x, "L", ("values", "vectors"))),
    (("N", 3, 3), lambda b, x: _eigh_loss(b, x, "U", ("values",))),
    ((3, 3), lambda b, x: _svd_loss(b, x, False, ("U", "S", "Vh", "pairs"))),
    ((4, 3), lambda b, x: _svd_loss(b, x, False, ("U", "S", "pairs"))),
    ((2, 3, 4), lambda b, x: _svd_loss(b, x, False, ("S", "Vh", "pairs"))),
], ids=["eigh", "eigvalsh-batch", "svd-square", "svd-tall", "svd-wide"])
def test_second_order_matches_finite_differences(shape, loss):
    _check_finite_differences(_second_order_graph(shape, loss), shape)


def test_full_matrices_extra_columns_get_no_gradient_as_in_pytorch():
    """The last ``m - k`` columns of a full ``U`` are any basis of the complement: PyTorch differentiates through the
    first ``k`` only, and so does kiln, so a loss on the rest alone has a zero gradient."""
    def loss(b, x):
        u, _, _ = b.op("linalg.svd", x, full_matrices=True)
        return _weighted(b, b.slice(u, axis=1, start=3, stop=5), 1)

    _, gradient = NumpyBackend().compile(_gradient_graph((5, 3), loss))(np.random.default_rng(0).standard_normal((5, 3)))
    np.testing.assert_array_equal(gradient, np.zeros((5, 3)))


# The IR: shape rules, text, export, failures.


@pytest.mark.parametrize(("name", "type_", "attrs", "message"), [
    ("linalg.eigh", TensorType((3, 4), DType.f64), {}, "square matrices"),
    ("linalg.eigh", TensorType((3, 3), DType.f64), {"UPLO": "lower"}, "UPLO must be 'L'.*got 'lower'"),
    ("linalg.eigh", TensorType((3, 3), DType.i64), {}, "cast it to float32"),
    ("linalg.eigh", TensorType(("N", "M", "M"), DType.f64), {}, "static matrix size"),
    ("linalg.svd", TensorType((3,), DType.f64), {}, r"needs matrices \(\.\.\., m, n\)"),
    ("linalg.svd", TensorType((3, 2), DType.i32), {}, "cast it to float32"),
    ("linalg.svd", TensorType(("N", 3), DType.f32), {}, "static matrix size"),
])
def test_shape_rules_refuse_with_a_message(name, type_, attrs, message):
    graph = Graph("g")
    with pytest.raises(ShapeError, match=message):
        Builder(graph).op(name, graph.add_input(type_, "a"), **attrs)


def test_print_parse_round_trip():
    graph = Graph("g")
    a = graph.add_input(TensorType(("N", 4, 3), DType.f64), "a")
    b = Builder(graph)
    u, s, vh = b.op("linalg.svd", a, full_matrices=True)
    w, v = b.op("linalg.eigh", b.matmul(_swap(b, a), a), UPLO="U")
    graph.outputs = [u, s, vh, w, v]
    text = print_graph(graph)
    assert 'UPLO = "U"' in text and "full_matrices = true" in text
    assert "-> (tensor<Nx4x4xf64>, tensor<Nx3xf64>, tensor<Nx3x3xf64>)" in text
    assert print_graph(parse(text)) == text


@pytest.mark.parametrize("name", ["linalg.eigh", "linalg.svd"])
def test_onnx_export_refuses_naming_the_op(name):
    from kiln.backends.onnx.export import graph_to_onnx

    graph, _, _ = _graph(name, (3, 3), "f32")
    with pytest.raises(LoweringError, match=f"{name}.*has no ONNX operator.*NumPy or CuPy backend"):
        graph_to_onnx(graph)


@pytest.mark.parametrize("name", ["linalg.eigh", "linalg.svd"])
def test_a_matrix_with_nan_raises_one_kiln_error(name):
    graph, _, _ = _graph(name, ("N", 3, 3), "f64")
    with pytest.raises(LinAlgError, match=f"{name}: the iteration did not converge"):
        NumpyBackend().compile(graph)(np.stack([np.eye(3), np.full((3, 3), np.nan)]))
