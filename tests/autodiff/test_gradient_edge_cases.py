"""Gradients at the edges of their formulas, against PyTorch in float64 (rtol 1e-10), eagerly and compiled.

Each case is one program written against torch-style names (``lib`` is kiln or torch), returning a value and its
derivatives; kiln runs it eagerly and under ``kiln.compile`` (some also in ``kiln.compile_train_step``), torch eagerly.

- ``pow`` where ``y x^(y-1)`` or ``x^y log x`` reads ``0 * inf``: PyTorch's zeros (``x ** 0`` at 0, ``0 ** y`` for
  ``y >= 0``, polynomial features ``x[..., None] ** arange(n)`` at 0), and its NaNs in the second derivative.
- forward over reverse (``jacfwd(jacrev(f))``, ``jvp(grad(f))``) through ``svd`` and ``eigh``: ``kiln.jvp`` transposes
  the VJP at a zero cotangent, where a mask on the cotangent's value zeroed every tangent.
- ``det`` of singular matrices: the transposed adjugate (PyTorch's SVD path under ``create_graph``, which these
  programs use; PyTorch's plain backward gives 0 at an exactly singular matrix), not a failed inverse; ``logdet`` there.
- ``erfinv``'s higher derivatives and ``xlogy``'s derivatives at 0 (both composed in ``frontend/``); at
  ``x == y == 0`` xlogy's slope in ``y`` is torch's ``0 / 0 = nan`` and kiln's 0 (its docstring says why).
"""

from __future__ import annotations

import numpy as np
import pytest

from oracles import require

import kiln

RTOL = 1e-10
ATOL = 1e-12
"""For entries that are 0 up to roundoff (an adjugate of rank <= n - 2, computed through an SVD)."""


def _numpy(value) -> np.ndarray:
    return np.asarray(value.detach().numpy() if hasattr(value, "detach") and hasattr(value, "grad_fn") else value)


def _assert_matches(got, want, atol: float = 0.0) -> None:
    assert len(got) == len(want)
    for index, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(_numpy(g), _numpy(w), rtol=RTOL, atol=atol, equal_nan=True,
                                   err_msg=f"output {index} (0: the value, then the derivatives)")


def _derivatives(lib, value, inputs, order: int) -> tuple:
    """``(value, d sum(value) / d inputs..., [d sum(first derivatives) / d inputs...])``."""
    first = lib.autograd.grad(value.sum(), inputs, create_graph=order > 1)
    if order == 1:
        return (value, *first)
    return (value, *first, *lib.autograd.grad(sum(g.sum() for g in first), inputs))


def _check(program, arrays, order: int = 2, atol: float = 0.0) -> None:
    """``program(lib, *inputs)``'s value and derivatives: kiln eager and compiled against torch eager."""
    torch = require("torch")

    def run(lib, *inputs):
        return _derivatives(lib, program(lib, *inputs), list(inputs), order)

    want = run(torch, *(torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in arrays))
    _assert_matches(run(kiln, *(kiln.tensor(a, dtype=kiln.float64, requires_grad=True) for a in arrays)), want, atol)
    compiled = kiln.compile(lambda *inputs: run(kiln, *(x.requires_grad_() for x in inputs)))
    _assert_matches(compiled(*(np.asarray(a, dtype=np.float64) for a in arrays)), want, atol)


# pow ----------------------------------------------------------------------------------------------------------------

POW_CASES = {
    "tensor exponent 0": (lambda lib, x: lib.pow(x, lib.zeros(3, dtype=lib.float64)), [[0.0, 2.0, -1.5]], 2),
    "int exponent 0": (lambda lib, x: x.pow(0), [[0.0, 2.0]], 1),
    "float exponent 0": (lambda lib, x: x ** 0.0, [[0.0, 2.0]], 1),
    "zero base": (lambda lib, e: lib.pow(lib.zeros(4, dtype=lib.float64), e), [[0.0, 1.0, -1.0, 2.5]], 2),
    "number zero base": (lambda lib, e: lib.pow(0.0, e), [[0.0, 1.0, -1.0, 2.5]], 2),
    "polynomial features": (lambda lib, x: x.unsqueeze(-1) ** lib.arange(4.), [[0.0, 2.0, -1.5]], 2),
    "both operands": (lambda lib, x, y: lib.pow(x, y), [[0.0, 0.0, 2.0, 0.0, -1.5, 0.0], [0.0, 1.0, 0.0, 2.0, 2.0, -1.0]],
                      2),
    "square": (lambda lib, x: x ** 2, [[0.0, -1.5, 2.0]], 2),
    "reciprocal": (lambda lib, x: x ** -1.0, [[0.0, -1.5, 2.0]], 2),
}


@pytest.mark.parametrize("name", POW_CASES)
def test_pow_gradients_at_zero_match_torch(name):
    program, arrays, order = POW_CASES[name]
    _check(program, arrays, order)


class _Power(kiln.nn.Module):
    """``sum(base ** exponent * x)`` with both operands parameters."""

    def __init__(self, base, exponent):
        super().__init__()
        self.base = kiln.nn.Parameter(kiln.tensor(base, dtype=kiln.float64))
        self.exponent = kiln.nn.Parameter(kiln.tensor(exponent, dtype=kiln.float64))

    def forward(self, x):
        return ((self.base ** self.exponent) * x).sum()


def test_pow_gradients_at_zero_in_a_compiled_training_step_match_torch():
    torch = require("torch")
    base, exponent, x = [0.0, 2.0, 0.0, 1.5, 0.0], [0.0, 0.0, 2.0, 1.0, 1.0], np.array([[1.0, 2.0, 3.0, 4.0, 5.0]])
    model = _Power(base, exponent)
    step = kiln.compile_train_step(model, lambda out, target: out, kiln.optim.SGD(model.parameters(), lr=1.0))
    step(x, np.zeros(1))
    twin_base = torch.tensor(base, dtype=torch.float64, requires_grad=True)
    twin_exponent = torch.tensor(exponent, dtype=torch.float64, requires_grad=True)
    ((twin_base ** twin_exponent) * torch.tensor(x)).sum().backward()
    _assert_matches([model.base.data, model.exponent.data],
                    [twin_base.detach() - twin_base.grad, twin_exponent.detach() - twin_exponent.grad])


# forward over reverse through svd and eigh ---------------------------------------------------------------------------

def _weighted_squares(lib, q):
    """``sum(w * q^2)``: a function of orthonormal vectors that their signs do not change (and that no 2 x 2
    rotation leaves constant)."""
    return (q ** 2 * lib.tensor([[1.0, 2.0], [4.0, 3.0]], dtype=lib.float64)).sum()


def _symmetric(v):
    return v.view(2, 2) + v.view(2, 2).mT


SPECTRAL_CASES = {
    "svdvals": lambda lib, v: lib.linalg.svdvals(v.view(2, 2)).sum(),
    "nuclear norm": lambda lib, v: lib.linalg.matrix_norm(v.view(2, 2), "nuc"),
    "spectral norm": lambda lib, v: lib.linalg.matrix_norm(v.view(2, 2), 2),
    "svd values": lambda lib, v: lib.linalg.svd(v.view(2, 2))[1].sum(),
    "svd vectors, wide": lambda lib, v: _weighted_squares(lib, lib.linalg.svd(lib.cat([v, v[:2] * 0.5]).view(2, 3),
                                                                              full_matrices=False)[0]),
    "eigvalsh": lambda lib, v: (lib.linalg.eigvalsh(_symmetric(v)) * lib.tensor([1.0, 3.0], dtype=lib.float64)).sum(),
    "eigh vectors": lambda lib, v: _weighted_squares(lib, lib.linalg.eigh(_symmetric(v))[1]),
}
POINT = [0.3, -0.2, 1.1, 0.7]


def _second_derivatives(lib, f):
    """``jacfwd(jacrev(f))``, ``jvp(grad(f))`` along ones, and ``hessian(f)`` at ``POINT``, as one tuple."""
    x = lib.tensor(POINT, dtype=lib.float64)
    f_of_x = lambda v: f(lib, v)  # noqa: E731
    tangent = lib.ones(4, dtype=lib.float64)
    return (lib.func.jacfwd(lib.func.jacrev(f_of_x))(x), lib.func.jvp(lib.func.grad(f_of_x), (x,), (tangent,))[1],
            lib.func.hessian(f_of_x)(x))


@pytest.mark.parametrize("name", SPECTRAL_CASES)
def test_forward_over_reverse_through_svd_and_eigh_matches_torch(name):
    torch = require("torch")
    f = SPECTRAL_CASES[name]
    want = _second_derivatives(torch, f)
    assert np.abs(want[1].numpy()).max() > 0.1  # a nonzero tangent: the bug gave zeros
    _assert_matches(_second_derivatives(kiln, f), want)
    tangent = np.ones(4)
    compiled = kiln.compile(lambda v, t: (kiln.func.jacfwd(kiln.func.jacrev(lambda u: f(kiln, u)))(v),
                                          kiln.func.jvp(kiln.func.grad(lambda u: f(kiln, u)), (v,), (t,))[1]))
    _assert_matches(compiled(np.array(POINT), tangent), want[:2])


# det of singular matrices --------------------------------------------------------------------------------------------

SINGULAR = {
    "2x2 rank 1": [[1.0, 2.0], [2.0, 4.0]],
    "3x3 rank 2": [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]],
    "3x3 rank 1": [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [3.0, 6.0, 9.0]],
    "3x3 rank 2, zero row": [[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [1.0, 3.0, -2.0]],
    "batch of singular and regular": [[[1.0, 2.0], [2.0, 4.0]], [[2.0, 1.0], [1.0, 3.0]], [[0.0, 0.0], [0.0, 5.0]]],
    "regular": [[2.0, -1.0, 0.5], [0.3, 1.0, 0.0], [1.0, 3.0, -2.0]],
}


@pytest.mark.parametrize("name", SINGULAR)
def test_det_gradients_of_singular_matrices_match_torch(name):
    _check(lambda lib, a: lib.linalg.det(a), [SINGULAR[name]], order=2, atol=ATOL)


def test_det_gradient_of_a_singular_matrix_is_its_transposed_adjugate():
    a = kiln.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=kiln.float64, requires_grad=True)
    kiln.linalg.det(a).backward()
    np.testing.assert_allclose(a.grad, [[4.0, -2.0], [-2.0, 1.0]], rtol=RTOL)


def test_det_of_a_singular_parameter_in_a_compiled_training_step_matches_torch():
    torch = require("torch")
    start = [[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]]

    class Det(kiln.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = kiln.nn.Parameter(kiln.tensor(start, dtype=kiln.float64))

        def forward(self, x):
            return (kiln.linalg.det(self.a) * x).sum()

    model = Det()
    step = kiln.compile_train_step(model, lambda out, target: out, kiln.optim.SGD(model.parameters(), lr=1.0))
    step(np.ones((1,)), np.zeros(1))
    twin = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    torch.linalg.det(twin).backward()
    _assert_matches([model.a.data], [twin.detach() - twin.grad], atol=ATOL)


@pytest.mark.parametrize("which", ["slogdet", "logdet"])
def test_log_determinant_gradients_match_torch_near_singular_and_are_infinite_at_singular(which):
    torch = require("torch")

    def log_det(lib, a):
        return lib.linalg.slogdet(a)[1] if which == "slogdet" else lib.logdet(a)

    _check(log_det, [[[1e-9, 0.0], [0.0, 1e-9]]], order=2)
    _check(log_det, [SINGULAR["regular"]], order=2)
    singular = kiln.tensor(SINGULAR["2x2 rank 1"], dtype=kiln.float64, requires_grad=True)
    log_det(kiln, singular).backward()  # raised LinAlgError (a failed inverse)
    twin = torch.tensor(SINGULAR["2x2 rank 1"], dtype=torch.float64, requires_grad=True)
    log_det(torch, twin).backward()
    assert np.isinf(singular.grad).all() and np.isinf(twin.grad.numpy()).all()


# erfinv and xlogy: composed in frontend/ -----------------------------------------------------------------------------

ERFINV_POINTS = [[-0.999, -0.9, -0.5, -0.1, 0.0, 0.1, 0.5, 0.9, 0.99]]


def test_erfinv_value_and_first_derivative_match_torch():
    _check(lambda lib, x: lib.erfinv(x), ERFINV_POINTS, order=1)


def test_erfinv_second_derivative_matches_torch():
    _check(lambda lib, x: lib.erfinv(x), ERFINV_POINTS, order=2)


XLOGY_X = [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0]
XLOGY_Y = [0.0, 1.0, 2.0, -1.0, float("nan"), 0.0, 3.0, 0.5]


def test_xlogy_value_matches_torch():
    torch = require("torch")
    got, want = (lib.xlogy(lib.tensor(XLOGY_X, dtype=lib.float64), lib.tensor(XLOGY_Y, dtype=lib.float64))
                 for lib in (kiln, torch))
    _assert_matches([got], [want])


@pytest.mark.parametrize("same", [True, False], ids=["xlogy(x, x)", "xlogy(x, y)"])
def test_xlogy_gradients_at_zero_match_torch(same):
    if same:
        _check(lambda lib, x: lib.xlogy(x, x), [[1.0, 2.0, 0.5]], order=1)
    else:  # every point but x == y == 0 (below)
        _check(lambda lib, x, y: lib.xlogy(x, y), [XLOGY_X[1:], XLOGY_Y[1:]], order=1)


def test_xlogy_slope_in_y_at_zero_zero_is_zero_where_torchs_is_nan():
    torch = require("torch")
    slopes = {}
    for lib in (kiln, torch):
        x, y = (lib.zeros(1, dtype=lib.float64, requires_grad=True) for _ in range(2))
        lib.xlogy(x, y).sum().backward()
        slopes[lib.__name__] = (float(x.grad[0]), float(y.grad[0]))
    assert slopes["kiln"] == (0.0, 0.0) and slopes["torch"][0] == 0.0 and np.isnan(slopes["torch"][1])
