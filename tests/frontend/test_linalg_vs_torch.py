"""``kiln.linalg`` and the linear-algebra ``Tensor`` methods against ``torch.linalg`` in float64.

Values and gradients to rtol 1e-10 (``tensor_parity._check``) on well-conditioned batched matrices: ``inv``,
``solve`` (matrices, vectors, ``left=False``, broadcast batches), ``det``, ``slogdet``, ``logdet`` (NaN for negative
determinants), ``cholesky`` (lower and upper, of ``M M^T + I``), ``solve_triangular`` (upper/lower, left/right,
unitriangular), the norms; one graph over a symbolic batch; float32 to float32 accuracy; the errors.
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

RNG = np.random.default_rng(23)
A = RNG.standard_normal((2, 3, 3)) * 0.5 + 2 * np.eye(3) * np.array([1.0, -1.0])[:, None, None]  # det > 0 and < 0
B = RNG.standard_normal((2, 3, 2))
V = RNG.standard_normal(3)
M = RNG.standard_normal((4, 3))


def _lib(name):
    return kiln if name == "kiln" else require("torch")


def _spd(a):
    """``A A^T``: symmetric positive definite, as ``A`` is well conditioned."""
    return a @ a.mT


FUNCTIONS = {  # name: (function of (library, x, y), inputs)
    "inv": (lambda lib, a, b: (lib.linalg.inv(a) * 2, a.inverse()), (A, B)),
    "solve": (lambda lib, a, b: (lib.linalg.solve(a, b), lib.linalg.solve(a[0], b), lib.linalg.solve(a, b[0])), (A, B)),
    "solve_vector": (lambda lib, a, v: (lib.linalg.solve(a, v), lib.linalg.solve(a[1], v), lib.linalg.solve(a.mT, v)), (A, V)),
    "solve_right": (lambda lib, a, b: (lib.linalg.solve(a, b.mT, left=False),), (A, B)),
    "det": (lambda lib, a, b: (lib.linalg.det(a) + a.det() * 2, lib.linalg.det(a[0])), (A, B)),
    "slogdet": (lambda lib, a, b: (lib.linalg.slogdet(a).logabsdet, lib.linalg.slogdet(a).sign, a.slogdet()[0], a.slogdet()[1]), (A, B)),
    "logdet": (lambda lib, a, b: (a[:1].logdet(), a.logdet()), (A, B)),
    "cholesky": (lambda lib, a, b: (lib.linalg.cholesky(_spd(a)), lib.linalg.cholesky(_spd(a), upper=True), _spd(a).cholesky()), (A, B)),
    "cholesky_upper": (lambda lib, a, b: (lib.linalg.cholesky(_spd(a), upper=True),), (A, B)),
    "solve_triangular": (lambda lib, a, b: tuple(lib.linalg.solve_triangular(a, b, upper=upper, unitriangular=unit)
                                                 for upper in (False, True) for unit in (False, True)), (A, B)),
    "solve_triangular_sum": (lambda lib, a, b: (sum(lib.linalg.solve_triangular(a, b * (1 + upper + 2 * unit), upper=upper, unitriangular=unit)
                                                    for upper in (False, True) for unit in (False, True)),), (A, B)),
    "solve_triangular_right": (lambda lib, a, b: (lib.linalg.solve_triangular(a, b.mT, upper=True, left=False)
                                                  + lib.linalg.solve_triangular(a, b.mT, upper=False, left=False, unitriangular=True),), (A, B)),
    "vector_norm": (lambda lib, m, v: (lib.linalg.vector_norm(m), lib.linalg.vector_norm(m, 1, dim=0), lib.linalg.vector_norm(m, math.inf, dim=1),
                                       lib.linalg.vector_norm(m, -math.inf, dim=-1, keepdim=True), lib.linalg.vector_norm(m, 0),
                                       lib.linalg.vector_norm(m, 3.5, dim=(0, 1))), (M, V)),
    "matrix_norm": (lambda lib, a, b: tuple(lib.linalg.matrix_norm(a, ord) for ord in ("fro", 1, -1, math.inf, -math.inf))
                    + (lib.linalg.matrix_norm(b, 1, dim=(0, 2), keepdim=True),), (A, B)),
    "matrix_norm_inf": (lambda lib, a, b: (lib.linalg.matrix_norm(a, math.inf) + lib.linalg.matrix_norm(a, -1) * 2,), (A, B)),
    "norm": (lambda lib, m, v: (lib.linalg.norm(m), lib.linalg.norm(v, 1), lib.linalg.norm(m, math.inf), lib.linalg.norm(m, "fro"),
                                lib.linalg.norm(m, dim=1), lib.linalg.norm(m, -1, dim=(1, 0))), (M, V)),
}


@pytest.mark.filterwarnings("ignore:torch.cholesky is deprecated")  # PyTorch's own Tensor.cholesky, the oracle of ours
@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_and_methods_match_torch(name):
    fn, arrays = FUNCTIONS[name]
    _check(lambda *xs: fn(kiln, *xs), lambda *xs: fn(_lib("torch"), *xs), *arrays, grad_rtol=1e-9)


def test_one_graph_serves_every_batch_size():
    torch = require("torch")
    graph = kiln.trace(lambda a, b: (kiln.linalg.solve(a, b), kiln.linalg.slogdet(a).logabsdet),
                       kiln.TensorSpec(("N", 3, 3), "float64"), kiln.TensorSpec((3, 2), "float64"))
    run = NumpyBackend().compile(graph)
    for batch in (1, 4):
        a = RNG.standard_normal((batch, 3, 3)) + 3 * np.eye(3)
        solved, logabsdet = run(a, B[0])
        np.testing.assert_allclose(solved, torch.linalg.solve(torch.tensor(a), torch.tensor(B[0])).numpy(), rtol=1e-12)
        np.testing.assert_allclose(logabsdet, torch.linalg.slogdet(torch.tensor(a)).logabsdet.numpy(), rtol=1e-12)


def test_float32_stays_float32():
    torch = require("torch")
    a = A.astype(np.float32)
    graph = kiln.trace(lambda x: (x.inverse(), x.det(), kiln.linalg.cholesky(x @ x.mT + 1e-3)), kiln.TensorSpec(a.shape, "float32"))
    outputs = NumpyBackend().compile(graph)(a)
    t = torch.tensor(a)
    for got, want in zip(outputs, (torch.linalg.inv(t), torch.linalg.det(t), torch.linalg.cholesky(t @ t.mT + 1e-3))):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("fn", "spec", "message"), [
    (lambda a: kiln.linalg.inv(a), ((3, 4), "float64"), "square matrices"),
    (lambda a: a.det(), ((3, 3), "int64"), "cast it to float32 or float64"),
    (lambda a: kiln.linalg.solve(a, a[:2]), ((3, 3), "float64"), r"\(\.\.\., 3, k\)"),
    (lambda a: kiln.linalg.matrix_norm(a, 3), ((3, 3), "float64"), "ord must be 'fro', 'nuc', 2, -2, 1, -1, inf or -inf"),
    (lambda a: kiln.linalg.vector_norm(a, "fro"), ((3, 3), "float64"), "matrix_norm"),
])
def test_errors_name_the_line_and_say_what_to_do(fn, spec, message):
    with pytest.raises(kiln.TraceError, match=message) as error:
        kiln.trace(fn, kiln.TensorSpec(*spec))
    assert "test_linalg_vs_torch.py" in str(error.value)


def test_a_singular_matrix_raises_linalg_error_when_run():
    run = NumpyBackend().compile(kiln.trace(lambda a: a.inverse(), kiln.TensorSpec((3, 3), "float64")))
    with pytest.raises(kiln.linalg.LinAlgError, match="linalg.inv: a matrix is singular"):
        run(np.ones((3, 3)))
