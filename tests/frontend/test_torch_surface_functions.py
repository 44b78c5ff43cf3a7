"""``frontend/torch_more.py``, ``torch_dtypes.py``, ``torch_random.py`` and the grad modes: ``kiln.hstack``,
``kiln.tensordot``, ``kiln.hann_window``, ``kiln.std_mean``, ``kiln.exp_``... called as their ``torch.*`` twins, against
PyTorch in float64 (values and gradients through kiln's autodiff), creation functions outside a trace (NumPy arrays
of torch's values and dtypes), the dtype queries against torch's answers, the samplers by their statistics on kiln's
seed, and ``set_grad_enabled``/``enable_grad``/``inference_mode`` by the gradients they leave."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import kiln
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.errors import KilnError
from kiln.frontend import torch_more
from oracles import require
from tensor_parity import _check

RNG = np.random.default_rng(41)
X = RNG.standard_normal((3, 4))
Y = RNG.standard_normal((3, 4))
V = RNG.standard_normal(5)


def _lib(name):
    return kiln if name == "kiln" else require("torch")


def _constant(lib, values):
    return lib.tensor(np.asarray(values))


SHAPES = {  # name: (function of (library, x, y), inputs)
    "stacks": (lambda lib, x, y: (lib.hstack([x, y]), lib.hstack([x[0], y[1]]), lib.vstack([x, y[0]]), lib.row_stack((x, y)),
                                  lib.dstack([x, y]), lib.dstack([x[0], y[0]]), lib.column_stack([x[0, :3], y[:, :2]]), lib.column_stack([x[0, 0], y[1, 2]])), (X, Y)),
    "atleast": (lambda lib, x, y: (lib.atleast_1d(x[0, 0]), *lib.atleast_2d(x[0, 0], x[0]), lib.atleast_2d(x), *lib.atleast_3d([x[0, 0], x[0], x]),
                                   lib.atleast_3d(x.unsqueeze(0))), (X, Y)),
    "broadcast_tensors": (lambda lib, x, y: lib.broadcast_tensors(x[:, :1], y[0], x[0, 0]), (X, Y)),
    "block_diag": (lambda lib, x, y: (lib.block_diag(x, y[0], x[0, 0], y[:2, :1]), lib.block_diag(x)), (X, Y)),
    "cartesian_prod": (lambda lib, x, y: (lib.cartesian_prod(x[0], y[1, :2], x[2, :3]), lib.cartesian_prod(x[1])), (X, Y)),
    "combinations": (lambda lib, x, y: (lib.combinations(x[0]), lib.combinations(x[1], 3), lib.combinations(y[0], 2, True),
                                        lib.combinations(x[2], 1)), (X, Y)),
    "tensordot": (lambda lib, x, y: (lib.tensordot(x, y, 2), lib.tensordot(x, y.t(), 1), lib.tensordot(x, y, ([0], [0])),
                                     lib.tensordot(x.reshape(3, 2, 2), y.reshape(2, 2, 3), dims=([1, 2], [1, 0])), lib.tensordot(x, y, 0)), (X, Y)),
    "std_var_mean": (lambda lib, x, y: (*lib.std_mean(x, 0), *lib.var_mean(x, 1, keepdim=True), *lib.std_mean(x), *lib.var_mean(x, correction=0),
                                        *lib.std_mean(x, (0, 1), False, True)), (X, Y)),
    "rsub_clamps": (lambda lib, x, y: (lib.rsub(x, y), lib.rsub(x, y, alpha=2.5), lib.rsub(x, 3.0), lib.clamp_min(x, -0.2), lib.clamp_max(x, 0.3),
                                       lib.clamp_min(x, y), lib.fill(x, 2.5), lib.fill(x, y[0, 0])), (X, Y)),
    "cumulative_trapezoid": (lambda lib, x, y: (lib.cumulative_trapezoid(x), lib.cumulative_trapezoid(x, dx=0.5, dim=0),
                                                lib.cumulative_trapezoid(x, y[0].cumsum(0)), lib.cumulative_trapezoid(x, y, dim=0)), (X, Y)),
    "gradient": (lambda lib, x, y: (*lib.gradient(x), *lib.gradient(x, spacing=0.5, dim=1, edge_order=2), *lib.gradient(x, spacing=[2.0], dim=0),
                                    *lib.gradient(x[0] * x[0], edge_order=2)), (X, Y)),
    "aliases": (lambda lib, x, y: (*lib.unsafe_chunk(x, 2, 1), *lib.unsafe_split(x, 2), *lib.unsafe_split_with_sizes(x, [1, 3], 1),
                                   lib.adjoint(x), x.mH, x.H, lib.put(x, _constant(lib, [[0, 5], [11, 5]]), y[:2, :2] * 3, True),
                                   x.clone().put_(_constant(lib, [0, 7]), y[0, :2]), lib.put(x, _constant(lib, [-1, 2]), y[1, :2]),
                                   lib.detach_(x * 1.0) + x, lib.detach(x) * x, lib.index_put_(x * 1.0, (_constant(lib, [2, 0]),), y[0])), (X, Y)),
    "isin": (lambda lib, x, y: (x * lib.isin(x.round(), _constant(lib, [0.0, 1.0, -2.0])), lib.isin(x.round(), y.round(), invert=True),
                                lib.isin(x.round(), 1.0)), (X, Y)),
    "functional_methods": (lambda lib, x, y: (lib.renorm(x, 2, 0, 1.0), lib.polygamma(2, x.abs() + 1), lib.mvlgamma(x.abs() + 2, 2),
                                              lib.i0(x), lib.ldexp(x, y.round()), lib.nanmedian(x), lib.nanquantile(x, 0.3, 1),
                                              lib.mode(x.round(), 0)[0], lib.addbmm(x[:, :3], x.unsqueeze(0), y.t().unsqueeze(0)[:, :, :3]),
                                              lib.frexp(x)[0], lib.igamma(x.abs().detach() + 1, y.abs()), lib.igammac(x.abs().detach() + 1, y.abs()),
                                              lib.select_scatter(x, y[0], 0, 1), lib.slice_scatter(x, y[:, :2], 1, 2),
                                              lib.diagonal_scatter(x, y.diagonal(), 0), lib.scatter_reduce(x, 1, _constant(lib, [[0, 0, 1, 1]] * 3), y, "amax"),
                                              lib.index_reduce(x, 0, _constant(lib, [2, 2]), y[:2], "mean"), lib.moveaxis(x, 0, 1),
                                              lib.index_put(x, (_constant(lib, [1, 0]),), y[:2])), (X, Y)),
    "in_place_functions": (lambda lib, x, y: (lib.exp_(x * 1.0), lib.sin_(x * 1.0) + lib.sqrt_(x.abs() + 1) + lib.log1p_(x.abs())
                                              + lib.clamp_(x * 1.0, -0.5, 0.5) + lib.clamp_min_(x * 1.0, 0.1) + lib.clamp_max_(x * 1.0, 0.1)
                                              + lib.xlogy_(x.abs() + 1, y.abs() + 1) + lib.sigmoid_(x * 1.0) + lib.tanh_(x * 1.0)
                                              + lib.neg_(x * 1.0) + lib.square_(x * 1.0) + lib.abs_(x * 1.0) + lib.nan_to_num_(x * 1.0)
                                              + lib.reciprocal_(x.abs() + 1) + lib.rsqrt_(x.abs() + 1) + lib.atan_(x * 1.0) + lib.erf_(x * 1.0)
                                              + lib.cosh_(x * 0.5) + lib.round_(x * 1.0) + lib.trunc_(x * 3.0) + lib.zero_(x * 1.0)
                                              + lib.fill_(x * 1.0, 2.0) + lib.deg2rad_(x * 1.0) + lib.frac_(x * 3.0) + lib.floor_(x * 2.0)
                                              + lib.ceil_(x * 2.0) + lib.exp2_(x * 1.0) + lib.expm1_(x * 1.0) + lib.log_(x.abs() + 1)
                                              + lib.log2_(x.abs() + 1) + lib.log10_(x.abs() + 1) + lib.logit_(x.sigmoid()) + lib.erfc_(x * 1.0)
                                              + lib.sinc_(x * 1.0) + lib.sinh_(x * 1.0) + lib.cos_(x * 1.0) + lib.tan_(x * 0.5)
                                              + lib.asin_(x.tanh() * 0.9) + lib.acos_(x.tanh() * 0.9) + lib.atanh_(x.tanh() * 0.9)
                                              + lib.asinh_(x * 1.0) + lib.acosh_(x.abs() + 1.5) + lib.negative_(x * 1.0) + lib.fix_(x * 3.0)
                                              + lib.rad2deg_(x * 1.0) + lib.clip_(x * 1.0, -0.1, 0.2) + lib.arcsin_(x.tanh() * 0.5)
                                              + lib.arccos_(x.tanh() * 0.5) + lib.arctan_(x * 1.0) + lib.arcsinh_(x * 1.0)
                                              + lib.arccosh_(x.abs() + 2) + lib.arctanh_(x.tanh() * 0.5) + lib.i0_(x * 1.0)
                                              + lib.ldexp_(x * 1.0, y.round()), lib.addmv_(x[:, 0] * 1.0, x, y[0])), (X, Y)),
}


@pytest.mark.parametrize("name", SHAPES)
def test_function_matches_torch(name):
    fn, arrays = SHAPES[name]
    _check(lambda *xs: fn(kiln, *xs), lambda *xs: fn(_lib("torch"), *xs), *arrays)


def test_integer_functions_match_torch():
    torch = require("torch")
    a, b = np.array([[12, -18, 7, 0]]), np.array([[8, 27, 0, 5]])
    kiln_fns = lambda lib, x, y: (lib.gcd(x, y), lib.lcm(x, y), lib.gcd_(x * 1, y), lib.lcm_(x * 1, y), lib.bitwise_left_shift(x, 2),
                                  lib.bitwise_right_shift(x, 1), lib.isin(x, y), lib.nextafter(x.double(), y.double()),
                                  *lib.unravel_index(_constant(lib, [0, 5, 11, 7]), (3, 4)), lib.vander(x[0], 3),
                                  lib.rsub(x, 5), lib.fill(x, 3))
    graph = kiln.trace(lambda x, y: kiln_fns(kiln, x, y), kiln.TensorSpec(a.shape, "int64"), kiln.TensorSpec(b.shape, "int64"))
    got = NumpyBackend().compile(graph)(a, b)
    want = kiln_fns(torch, torch.tensor(a), torch.tensor(b))
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.numpy().dtype, (g.dtype, w.dtype)
        np.testing.assert_array_equal(g, w.numpy())


CREATIONS = {
    "logspace": lambda lib: lib.logspace(-2, 3, 7),
    "logspace_base": lambda lib: lib.logspace(0, 4, 5, base=2.0, dtype=lib.float64),
    "scalar_tensor": lambda lib: lib.scalar_tensor(2.5),
    "scalar_tensor_f64": lambda lib: lib.scalar_tensor(3, dtype=lib.float64),
    "tril_indices": lambda lib: lib.tril_indices(4, 3),
    "tril_indices_offset": lambda lib: lib.tril_indices(3, 5, 1),
    "triu_indices": lambda lib: lib.triu_indices(4, 4, -1),
    "triu_indices_int32": lambda lib: lib.triu_indices(3, 3, dtype=lib.int32),
    "hann": lambda lib: lib.hann_window(10, dtype=lib.float64),
    "hann_symmetric": lambda lib: lib.hann_window(9, False, dtype=lib.float64),
    "hann_float32": lambda lib: lib.hann_window(12),
    "hamming": lambda lib: lib.hamming_window(8, dtype=lib.float64),
    "hamming_coefficients": lambda lib: lib.hamming_window(7, False, 0.5, 0.4, dtype=lib.float64),
    "blackman": lambda lib: lib.blackman_window(11, dtype=lib.float64),
    "bartlett": lambda lib: lib.bartlett_window(9, dtype=lib.float64),
    "bartlett_symmetric": lambda lib: lib.bartlett_window(6, False, dtype=lib.float64),
    "kaiser": lambda lib: lib.kaiser_window(10, dtype=lib.float64),
    "kaiser_beta": lambda lib: lib.kaiser_window(9, False, 5.0, dtype=lib.float64),
    "window_one": lambda lib: lib.hann_window(1),
    "window_empty": lambda lib: lib.blackman_window(0),
}


@pytest.mark.parametrize("name", CREATIONS)
def test_creation_outside_a_trace_matches_torch(name):
    torch = require("torch")
    ours, theirs = CREATIONS[name](kiln), CREATIONS[name](torch).numpy()
    ours = ours if isinstance(ours, np.ndarray) else ours.numpy()
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-6 if theirs.dtype == np.float32 else 1e-14, atol=1e-7 if theirs.dtype == np.float32 else 1e-15)


def test_creation_inside_a_trace_is_a_constant():
    torch = require("torch")
    window = np.hanning(11)[1:-1]
    _check(lambda x: x * kiln.hann_window(9, False, dtype=kiln.float64) + kiln.logspace(0, 1, 9, dtype=kiln.float64).take(kiln.tril_indices(3, 3)[1]).sum(),
           lambda x: x * torch.hann_window(9, False, dtype=torch.float64) + torch.logspace(0, 1, 9, dtype=torch.float64).take(torch.tril_indices(3, 3)[1]).sum(),
           window)


def test_vander_matches_torch_and_differentiates_at_zero():
    torch = require("torch")
    fn = lambda lib, x: (lib.vander(x), lib.vander(x, 3), lib.vander(x * 0, 4, True))  # noqa: E731
    _check(lambda x: fn(kiln, x), lambda x: fn(torch, x.detach()), V, grad=False)  # torch's vander backward fails (a saved tensor modified)
    weights = RNG.standard_normal((5, 4))
    got = kiln.grad(lambda x: (kiln.vander(x * 1.0, 4, True) * weights).sum())(np.append(V[:4], 0.0))
    powers = np.append(V[:4], 0.0)[:, None] ** np.array([0, 0, 1, 2]) * np.array([0, 1, 2, 3])
    np.testing.assert_allclose(got, (powers * weights).sum(1), rtol=1e-13)


def test_cumulative_trapezoid_along_a_symbolic_dim_is_an_error():
    with pytest.raises(KilnError, match="dim 0 of tensor<Nx4xf32> is symbolic") as error:
        kiln.trace(lambda x: kiln.cumulative_trapezoid(x, dim=0), kiln.TensorSpec(("N", 4)))
    assert "test_torch_surface_functions.py" in str(error.value)


def test_gradient_refuses_coordinates_and_short_dims():
    with pytest.raises(KilnError, match="coordinates as tensors are not supported"):
        kiln.trace(lambda x: kiln.gradient(x, spacing=(x[0],)), kiln.TensorSpec((3, 4)))
    with pytest.raises(KilnError, match="needs at least 3 samples"):
        kiln.trace(lambda x: kiln.gradient(x, edge_order=2), kiln.TensorSpec((2, 4)))


def test_broadcast_shapes_and_symbolic_dims():
    torch = require("torch")
    for shapes in [((2, 1, 3), (4, 1), (3,)), ((5,), ()), ((1,), (1, 1))]:
        assert kiln.broadcast_shapes(*shapes) == tuple(torch.broadcast_shapes(*shapes))
    assert kiln.broadcast_shapes(("N", 1), (1, 4), (4,)) == ("N", 4)
    with pytest.raises(KilnError, match="do not broadcast"):
        kiln.broadcast_shapes((2, 3), (4, 3))
    graph = kiln.trace(lambda x, y: kiln.broadcast_tensors(x, y)[1], kiln.TensorSpec(("N", 1)), kiln.TensorSpec((3,)))
    assert graph.outputs[0].type.shape == ("N", 3)


# dtypes ------------------------------------------------------------------------------------------------------------------


def test_dtype_queries_give_torchs_answers():
    torch = require("torch")
    pairs = [("bool", "int32"), ("int32", "int64"), ("int64", "float32"), ("float32", "float64"), ("bool", "float64"), ("int32", "int32")]
    for a, b in pairs:
        for first, second in ((a, b), (b, a)):
            ours, theirs = getattr(kiln, first), getattr(kiln, second)
            assert str(kiln.promote_types(ours, theirs).numpy) == str(torch.promote_types(getattr(torch, first), getattr(torch, second))).split(".")[1]
            assert kiln.can_cast(ours, theirs) == torch.can_cast(getattr(torch, first), getattr(torch, second)), (first, second)
    for name in ("float32", "float64"):
        ours, theirs = kiln.finfo(getattr(kiln, name)), torch.finfo(getattr(torch, name))
        assert (ours.bits, ours.eps, ours.max, ours.min, ours.tiny, ours.smallest_normal, ours.resolution) == \
            (theirs.bits, theirs.eps, theirs.max, theirs.min, theirs.tiny, theirs.smallest_normal, theirs.resolution)
    for name in ("int32", "int64"):
        assert (kiln.iinfo(getattr(kiln, name)).max, kiln.iinfo(getattr(kiln, name)).min, kiln.iinfo(getattr(kiln, name)).bits) == \
            (torch.iinfo(getattr(torch, name)).max, torch.iinfo(getattr(torch, name)).min, torch.iinfo(getattr(torch, name)).bits)
    assert kiln.finfo().eps == torch.finfo().eps


def test_result_type_and_queries_inside_a_trace():
    torch = require("torch")
    seen = {}

    def body(x, n):
        seen["kiln"] = _queries(kiln, x, n)
        return x

    kiln.trace(body, kiln.TensorSpec((3,), "float32"), kiln.TensorSpec((3,), "int32"))
    x, n = torch.zeros(3), torch.zeros(3, dtype=torch.int32)
    theirs = _queries(torch, x, n)
    ours = seen["kiln"]
    assert [str(o).split(".")[-1] if not isinstance(o, bool) else o for o in theirs] == \
        [o.numpy.name if isinstance(o, kiln.DType) else o for o in ours]


def _queries(lib, x, n):
    return (lib.result_type(n, 2.5), lib.result_type(n, 2), lib.result_type(x, n), lib.result_type(n, x.double().sum()),
            lib.result_type(x, x.double().sum()), lib.result_type(n.long().sum(), n), lib.result_type(n > 0, True), lib.result_type(n > 0, 3),
            lib.is_tensor(x), lib.is_tensor(3.0), lib.is_floating_point(x), lib.is_floating_point(n), lib.is_complex(x),
            lib.is_signed(n), lib.is_signed(n > 0), lib.is_same_size(x, n), lib.is_same_size(x, x[:2]))


def test_set_default_dtype_changes_created_floats():
    torch = require("torch")
    assert kiln.get_default_dtype() == kiln.float32 and torch.get_default_dtype() == torch.float32
    try:
        kiln.set_default_dtype(kiln.float64)
        assert kiln.get_default_dtype() == kiln.float64
        for make in (lambda lib: lib.tensor([1.5]), lambda lib: lib.zeros(2), lambda lib: lib.arange(0.0, 1.0, 0.5),
                     lambda lib: lib.hann_window(4), lambda lib: lib.full((2,), 1.5)):
            torch.set_default_dtype(torch.float64)
            assert np.asarray(make(kiln)).dtype == make(torch).numpy().dtype == np.float64
            torch.set_default_dtype(torch.float32)
        assert kiln.result_type(kiln.tensor([1, 2]), 1.5) == kiln.float64
        with pytest.raises(KilnError, match="float32 or float64"):
            kiln.set_default_dtype(kiln.int64)
    finally:
        kiln.set_default_dtype(kiln.float32)
        torch.set_default_dtype(torch.float32)
    assert np.asarray(kiln.tensor([1.5])).dtype == np.float32


# grad modes --------------------------------------------------------------------------------------------------------------


def _modes(x):
    with kiln.set_grad_enabled(False):
        frozen = x * x
        with kiln.enable_grad():
            live = x * 3
            assert kiln.is_grad_enabled()
        assert not kiln.is_grad_enabled()
    with kiln.inference_mode():
        inferred = x.exp()
        assert kiln.is_inference_mode_enabled() and not kiln.is_grad_enabled()
    with kiln.inference_mode(False):
        kept = x.sin()
    kiln.set_grad_enabled(False)
    off = x * 5
    kiln.set_grad_enabled(True)
    with kiln.no_grad():
        enabled, inferred_bare = _bare_enabled(x), _bare_inference(x)
    bare = enabled + inferred_bare
    return (frozen + live + inferred + kept + off + _decorated(x) + bare).sum()


@kiln.set_grad_enabled(False)
def _decorated(x):
    return x.cos()


@kiln.enable_grad
def _bare_enabled(x):
    return x * 2


@kiln.inference_mode
def _bare_inference(x):
    assert kiln.is_inference_mode_enabled()
    return x * 7


def test_grad_modes_leave_torchs_gradients():
    torch = require("torch")
    got = kiln.grad(_modes)(X)
    t = torch.tensor(X, requires_grad=True)
    with torch.set_grad_enabled(False):
        frozen = t * t
        with torch.enable_grad():
            live = t * 3
    with torch.inference_mode():
        inferred = t.detach().exp()  # torch's inference tensors cannot mix with autograd ones
    with torch.inference_mode(False):
        kept = t.sin()
    bare = t * 2 + t.detach() * 7  # enable_grad inside no_grad: a gradient; inference_mode: none
    (frozen + live + inferred + kept + t.detach() * 5 + t.detach().cos() + bare).sum().backward()
    np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-14)
    assert kiln.is_grad_enabled() and not kiln.is_inference_mode_enabled()


# random ------------------------------------------------------------------------------------------------------------------


def _draw(fn, array=np.full((200, 300), 0.3), seed=5):
    graph = kiln.trace(fn, kiln.TensorSpec(array.shape, "float64"))
    return NumpyBackend().compile(graph)(array, np.int64(seed))


def test_samplers_have_torchs_distributions():
    bern, normal, normal_sized, like, perm = _draw(lambda p: (kiln.bernoulli(p), kiln.normal(p * 0 + 2.0, p * 0 + 0.5),
                                                                  kiln.normal(1.0, 2.0, size=(4000,)), kiln.randint_like(p, 3, 7),
                                                                  kiln.randperm(50)))
    assert set(np.unique(bern)) == {0.0, 1.0} and abs(bern.mean() - 0.3) < 0.01
    assert abs(normal.mean() - 2.0) < 0.01 and abs(normal.std() - 0.5) < 0.01
    assert normal_sized.shape == (4000,) and abs(normal_sized.mean() - 1.0) < 0.15 and abs(normal_sized.std() - 2.0) < 0.1
    assert like.dtype == np.float64 and set(np.unique(like)) == {3.0, 4.0, 5.0, 6.0}
    assert perm.dtype == np.int64 and sorted(perm) == list(range(50)) and list(perm) != list(range(50))
    (method,) = _draw(lambda p: p.bernoulli())
    assert abs(method.mean() - 0.3) < 0.01


def test_multinomial_frequencies_follow_the_weights():
    weights = np.array([[1.0, 0.0, 3.0, 6.0], [5.0, 5.0, 0.0, 0.0]])
    with_replacement, without = _draw(lambda w: (kiln.multinomial(w, 4000, True), w.multinomial(2)), weights)
    assert with_replacement.shape == (2, 4000) and with_replacement.dtype == np.int64
    np.testing.assert_allclose(np.bincount(with_replacement[0], minlength=4) / 4000, weights[0] / 10, atol=0.03)
    np.testing.assert_allclose(np.bincount(with_replacement[1], minlength=4) / 4000, weights[1] / 10, atol=0.03)
    assert sorted(without[1]) == [0, 1] and 1 not in without[0] and len(set(without[0])) == 2
    firsts = np.concatenate([_draw(lambda w: kiln.multinomial(w, 1), weights, seed)[0][:1, 0] for seed in range(300)])
    np.testing.assert_allclose(np.bincount(firsts, minlength=4) / 300, weights[0] / 10, atol=0.08)


def test_poisson_draws_eagerly_with_the_rates_moments_reproducibly():
    rates = kiln.tensor([[0.5], [4.0], [60.0]]).expand(3, 20000)
    kiln.manual_seed(5)
    counts = kiln.poisson(rates)
    kiln.manual_seed(5)
    again = kiln.poisson(rates)
    values = counts.numpy()
    assert counts.dtype == kiln.float32 and tuple(counts.shape) == (3, 20000)
    np.testing.assert_array_equal(values, again.numpy())
    assert np.all(values == np.round(values)) and values.min() >= 0
    np.testing.assert_allclose(values.mean(1), [0.5, 4.0, 60.0], rtol=0.03)
    np.testing.assert_allclose(values.var(1), [0.5, 4.0, 60.0], rtol=0.06)
    seeded = [kiln.poisson(kiln.full((4,), 3.0), generator=kiln.Generator().manual_seed(2)).numpy() for _ in range(2)]
    np.testing.assert_array_equal(*seeded)
    with pytest.raises(RuntimeError, match="invalid Poisson rate, expected rate to be non-negative"):
        kiln.poisson(kiln.tensor([1.0, -1.0]))


def test_samplers_refuse_what_cannot_trace():
    with pytest.raises(KilnError, match="Poisson count comes from a loop.*draw it outside the compiled") as error:
        kiln.trace(lambda x: kiln.poisson(x), kiln.TensorSpec((3,)))
    assert "test_torch_surface_functions.py" in str(error.value)
    with pytest.raises(KilnError, match=r"cannot sample n_sample > prob_dist.size\(-1\) samples without replacement "
                                         r"\(multinomial: 5 samples of 4"):
        kiln.trace(lambda x: kiln.multinomial(x, 5), kiln.TensorSpec((2, 4)))
    with pytest.raises(KilnError, match="needs a size"):
        kiln.trace(lambda x: kiln.normal(0.0, 1.0), kiln.TensorSpec((2, 4)))


@pytest.mark.parametrize("call, message", [
    (lambda x: kiln.argwhere(x), "data-dependent shape"),
    (lambda x: kiln.nonzero(x), "data-dependent shape"),
    (lambda x: kiln.masked_select(x, x > 0), r"masked_select\(\) has a data-dependent shape"),
    (lambda x: kiln.is_nonzero(x[0, 0]), r"is_nonzero\(\) returns a Python bool"),
])
def test_what_cannot_trace_says_why_and_what_instead(call, message):
    with pytest.raises(KilnError, match=message) as error:
        kiln.trace(call, kiln.TensorSpec((3, 4)))
    assert "test_torch_surface_functions.py" in str(error.value)


def test_every_export_is_a_torch_name_and_is_called_in_these_tests():
    torch = require("torch")
    exported = torch_more.exports()
    assert not [name for name in exported if not hasattr(torch, name)]
    assert all(getattr(kiln, name) is value for name, value in exported.items())
    source = "".join(path.read_text() for path in pathlib.Path(__file__).parent.glob("test_torch_surface*.py"))
    assert not [name for name in exported if not re.search(rf"\b(lib|kiln)\.{name}\b", source)]


def test_in_place_samplers_have_torchs_distributions():
    uniform, normal, lognormal, bern, expo, cauchy, geometric, below, ints, default = _draw(lambda z: (
        z.clone().uniform_(-1.0, 3.0), z.clone().normal_(2.0, 0.5), z.clone().log_normal_(0.5, 0.25), z.clone().bernoulli_(0.3),
        z.clone().exponential_(4.0), z.clone().cauchy_(1.0, 2.0), z.clone().geometric_(0.25), z.clone().random_(5),
        z.long().random_(2, 6), z.clone().random_()))
    assert -1 <= uniform.min() and uniform.max() < 3 and abs(uniform.mean() - 1.0) < 0.02
    assert abs(normal.mean() - 2.0) < 0.01 and abs(normal.std() - 0.5) < 0.01
    assert abs(np.median(lognormal) - np.exp(0.5)) < 0.01 and abs(np.log(lognormal).std() - 0.25) < 0.005
    assert set(np.unique(bern)) == {0.0, 1.0} and abs(bern.mean() - 0.3) < 0.01
    assert expo.min() >= 0 and abs(expo.mean() - 0.25) < 0.005
    assert abs(np.median(cauchy) - 1.0) < 0.05 and abs(np.percentile(cauchy, 75) - 3.0) < 0.1  # quartiles at median +- sigma
    assert geometric.min() == 1 and abs(geometric.mean() - 4.0) < 0.05 and np.array_equal(geometric, np.round(geometric))
    assert set(np.unique(below)) == {0.0, 1.0, 2.0, 3.0, 4.0}
    assert ints.dtype == np.int64 and set(np.unique(ints)) == {2, 3, 4, 5}
    assert default.min() >= 0 and default.max() <= 2**53 and default.max() > 2**52 + 1 and np.array_equal(default, np.round(default))


def test_in_place_samplers_on_a_parameter_outside_a_trace_follow_manual_seed():
    weight = kiln.nn.Parameter(np.zeros((200, 100), np.float32))
    kiln.manual_seed(7)
    with kiln.no_grad():  # as PyTorch requires of a parameter that requires grad
        weight.normal_(0.0, 0.02)
    first = np.array(weight.data).copy()
    kiln.manual_seed(7)
    with kiln.no_grad():
        weight.normal_(0.0, 0.02)
    np.testing.assert_array_equal(np.array(weight.data), first)
    assert first.dtype == np.float32 and abs(first.std() - 0.02) < 0.001
    with kiln.no_grad():
        weight.uniform_(-0.1, 0.1)
    assert -0.1 <= np.array(weight.data).min() and np.array(weight.data).max() < 0.1 and np.array(weight.data).std() > 0.05
    with kiln.no_grad():
        weight.bernoulli_(0.25)
    assert abs(np.array(weight.data).mean() - 0.25) < 0.01


def _batched(lib, x):
    index = _constant(lib, [[0, 1, 1, 3]]).expand(x.shape[0], 4)
    return (lib.hstack([x, x * 2]), lib.std_mean(x, 1)[0], x.renorm(2, 0, 1.0), lib.tensordot(x, x[:, :2], ([0], [0])),
            x.scatter_reduce(1, index, x * 3, "amax"), x.index_reduce(1, _constant(lib, [0, 0, 2, 2]), x, "mean"),
            x.nanmedian(1).values, x.nanquantile(0.4, 1), x.i0(), x.round().mode(1).values, lib.cumulative_trapezoid(x, dim=1),
            lib.gradient(x, dim=1)[0], lib.isin(x.round(), 0.0) * x, lib.atleast_3d(x), lib.column_stack([x[:, 0], x]))


def test_a_symbolic_batch_runs_at_every_size():
    torch = require("torch")
    graph = kiln.trace(lambda x: _batched(kiln, x), kiln.TensorSpec(("N", 4), "float64"))
    run = NumpyBackend().compile(graph)
    for rows in (2, 5):
        x = RNG.standard_normal((rows, 4))
        for got, want in zip(run(x), _batched(torch, torch.tensor(x)), strict=True):
            np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-14)
