"""``cummax``/``cummin``/``logcumsumexp`` as Tensor methods and ``kiln.*`` functions, against PyTorch in float64.

cummax/cummin: values and indices exactly, on lanes full of ties (torch takes the latest occurrence), signed zeros and
NaN (once one is seen the values stay NaN and the index follows the latest NaN), for floats, int64 and bool along every
dim; the gradient reaches the selected elements as torch's scatter-add. logcumsumexp: values and gradients to 1e-12 on
inputs spread over +-3e3 (a cumsum of exps would overflow, one of exps shifted by the global maximum would underflow to
log(0)), infinities and NaN in the values. Then a symbolic batch, vmap, jvp, and the exported ONNX graphs in
onnxruntime and onnx's reference evaluator.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from oracles import require_torch

torch = require_torch()
TIGHT = dict(rtol=1e-12, atol=1e-12)


def ties_and_nans(shape, seed=0, nans=True):
    """Integer-valued floats in [-2, 2] (ties everywhere), some -0.0 and NaN."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, size=shape).astype(np.float64)
    x[rng.random(shape) < 0.1] = -0.0
    if nans:
        x[rng.random(shape) < 0.06] = math.nan
    return x


def run(fn, *arrays, batch_dim=None):
    return kiln.compile(fn, batch_dim=batch_dim)(*arrays)


def assert_same(got, expected):
    expected = expected.detach().numpy()
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    if got.dtype.kind == "f":
        np.testing.assert_array_equal(np.signbit(got), np.signbit(expected))  # -0.0 where torch picked the -0.0


@pytest.mark.parametrize("name", ["cummax", "cummin"])
@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_values_and_indices_match_torch_with_ties_and_nans(name, dim):
    x = ties_and_nans((4, 9, 5), seed=dim + 3)
    values, indices = run(lambda t: tuple(getattr(t, name)(dim)), x)
    expected = getattr(torch, name)(torch.from_numpy(x), dim)
    assert_same(values, expected.values)
    assert_same(indices, expected.indices)


@pytest.mark.parametrize("name", ["cummax", "cummin"])
@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_integers_and_bools(name, dtype):
    x = np.random.default_rng(1).integers(-3, 4, size=(3, 11)).astype(dtype)
    values, indices = run(lambda t: tuple(getattr(kiln, name)(t, 1)), x)
    expected = getattr(torch, name)(torch.from_numpy(x), 1)
    assert_same(values, expected.values)
    assert_same(indices, expected.indices)


def test_results_name_their_fields_as_torch():
    def traced(x):
        result = kiln.cummax(x, 0)
        return result.values, result.indices, x.cummin(0)[1]

    got = run(traced, np.array([2.0, 1.0, 3.0, 3.0]))
    np.testing.assert_array_equal(got[0], [2.0, 2.0, 3.0, 3.0])
    np.testing.assert_array_equal(got[1], [0, 0, 2, 3])
    np.testing.assert_array_equal(got[2], [0, 1, 1, 1])


@pytest.mark.parametrize("name", ["cummax", "cummin"])
@pytest.mark.parametrize("nans", [False, True])
def test_gradients_reach_the_selected_elements(name, nans):
    x = ties_and_nans((3, 10), seed=7, nans=nans)
    weights = np.random.default_rng(8).normal(size=(3, 10))

    def loss(lib):
        return lambda x: (getattr(x, name)(1)[0] * lib.tensor(weights)).sum()

    got = kiln.grad(loss(kiln))(x)
    reference = torch.from_numpy(x).requires_grad_()
    loss(torch)(reference).backward()
    np.testing.assert_allclose(got, reference.grad.numpy(), **TIGHT)  # scatter-adds in another order


SPREAD = np.random.default_rng(2).normal(size=(3, 13, 4)) * 1e3


def exact_logcumsumexp_gradient(x, weights):
    """``sum_{i >= j} w_i exp(x_j - out_i)`` along the last axis, in 40-digit arithmetic."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    gradient = np.empty_like(x)
    for lane in np.ndindex(x.shape[:-1]):
        xs, ws = [mpmath.mpf(float(v)) for v in x[lane]], [mpmath.mpf(float(v)) for v in weights[lane]]
        out = [mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xs[: i + 1])) for i in range(len(xs))]
        gradient[lane] = [float(mpmath.fsum(ws[i] * mpmath.exp(xs[j] - out[i]) for i in range(j, len(xs)))) for j in range(len(xs))]
    return gradient


@pytest.mark.parametrize("dim", [0, 1, 2, -2])
def test_logcumsumexp_values_and_gradients_on_widely_spread_inputs(dim):
    """kiln's gradient (a decayed cumsum in logs, as torch's backward) is within 3e-12 of the exact one here: the logs of
    the weights are added to values near 3e3, whose ulp is 5e-13."""
    weights = np.random.default_rng(3).normal(size=SPREAD.shape)
    got = run(lambda t: kiln.logcumsumexp(t, dim), SPREAD)
    np.testing.assert_allclose(got, torch.logcumsumexp(torch.from_numpy(SPREAD), dim).numpy(), **TIGHT)
    grad = kiln.grad(lambda t: (t.logcumsumexp(dim) * kiln.tensor(weights)).sum())(SPREAD)
    reference = torch.from_numpy(SPREAD).requires_grad_()
    (reference.logcumsumexp(dim) * torch.from_numpy(weights)).sum().backward()
    np.testing.assert_allclose(grad, reference.grad.numpy(), rtol=1e-10, atol=1e-12)
    exact = exact_logcumsumexp_gradient(np.moveaxis(SPREAD, dim, -1), np.moveaxis(weights, dim, -1))
    np.testing.assert_allclose(np.moveaxis(grad, dim, -1), exact, rtol=1e-11, atol=1e-12)


def test_logcumsumexp_of_close_values_and_ties():
    x = np.array([[0.0, 0.0, 0.0, 1e-9, -1e-9, 5.0, 5.0, 5.0], [-745.0, -745.0, 709.0, 709.0, 0.0, -1e300, 1e-300, 1.0]])
    got = run(lambda t: t.logcumsumexp(1), x)
    np.testing.assert_allclose(got, torch.logcumsumexp(torch.from_numpy(x), 1).numpy(), rtol=1e-15, atol=0)
    grad = kiln.grad(lambda t: t.logcumsumexp(1).sum())(x)
    reference = torch.from_numpy(x).requires_grad_()
    reference.logcumsumexp(1).sum().backward()
    np.testing.assert_allclose(grad, reference.grad.numpy(), **TIGHT)


def test_logcumsumexp_of_infinities_and_nan_has_torchs_values():
    """Gradients differ there: torch's are NaN in every lane holding an infinity (exp(x - out) of inf - inf)."""
    x = np.array([-math.inf, -math.inf, 0.0, math.inf, 1.0, math.nan, 2.0])
    got = run(lambda t: t.logcumsumexp(0), x)
    np.testing.assert_array_equal(got, torch.logcumsumexp(torch.from_numpy(x), 0).numpy())


def test_a_symbolic_batch_and_vmap():
    def scans(x):
        values, indices = x.cummax(1)
        return values, indices, x.cummin(1).indices, x.logcumsumexp(1)

    compiled = kiln.compile(scans)  # batch dim 0 symbolic, the scanned dim static
    for rows in (2, 5):
        x = ties_and_nans((rows, 6), seed=rows) * 300.0
        got = compiled(x)
        t = torch.from_numpy(x)
        for ours, theirs in zip(got, (*torch.cummax(t, 1), torch.cummin(t, 1).indices, torch.logcumsumexp(t, 1))):
            np.testing.assert_allclose(ours, theirs.numpy(), **TIGHT)
    assert len(compiled.variants) == 1
    x = ties_and_nans((4, 3, 6), seed=9)
    got = kiln.vmap(scans)(x)
    for example, per_example in enumerate(zip(*[np.asarray(g) for g in got])):
        np.testing.assert_allclose(per_example[3], run(scans, x[example])[3], **TIGHT)
        np.testing.assert_array_equal(per_example[1], torch.cummax(torch.from_numpy(x[example]), 1).indices.numpy())


def test_forward_mode_through_the_scans():
    """Against torch's reverse-mode Jacobian: torch.func.jvp of logcumsumexp drops early prefixes when the inputs are
    spread out (pytorch/pytorch#196705: its forward formula rescales by the global maximum)."""
    x, v = np.random.default_rng(4).normal(size=(2, 7)) * 30, np.random.default_rng(5).normal(size=(2, 7))

    def f(x):
        return x.logcumsumexp(1) + x.cummax(1)[0] * x.cummin(0)[0]

    out, tangent = kiln.jvp(f, (x,), (v,))
    jacobian = torch.func.jacrev(f)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, f(torch.from_numpy(x)).numpy(), **TIGHT)
    np.testing.assert_allclose(tangent, np.einsum("abcd,cd->ab", jacobian, v), **TIGHT)


def test_errors_name_the_problem():
    with pytest.raises(kiln.KilnError, match="rank >= 1"):
        kiln.trace(lambda x: x.logcumsumexp(0), kiln.TensorSpec(()))
    with pytest.raises(kiln.KilnError, match="dim 2 is out of range"):
        kiln.trace(lambda x: x.cummin(2).values, kiln.TensorSpec((2, 3)))


def test_onnx_export_runs_in_onnxruntime_and_the_reference_evaluator():
    from onnx_nodes import exported_sessions

    def scans(x):
        values, indices = x.cummax(1)
        return values, indices, x.cummin(1).values, x.logcumsumexp(1)

    graph = kiln.trace(scans, kiln.TensorSpec(("N", 9), "float64"))
    _, names, oracles = exported_sessions(graph)
    for rows in (1, 4):
        x = ties_and_nans((rows, 9), seed=rows, nans=False) * 400.0
        t = torch.from_numpy(x)
        expected = (*torch.cummax(t, 1), torch.cummin(t, 1).values, torch.logcumsumexp(t, 1))
        for oracle, session in oracles.items():
            got = session.run(None, {names[0]: x})
            for ours, theirs in zip(got, expected):
                np.testing.assert_allclose(ours, theirs.numpy(), err_msg=oracle, **TIGHT)
