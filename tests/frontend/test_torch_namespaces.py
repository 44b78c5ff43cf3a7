"""``kiln.special``, ``kiln.testing``, ``kiln.Size``/``Generator``/``set_printoptions`` and ``kiln.amp`` against
PyTorch 2.13 (float64 values, and gradients through kiln's autodiff, eagerly and compiled), with mpmath for the far
tails where PyTorch's own kernels lose digits."""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
import kiln.special as special
from oracles import require

RNG = np.random.default_rng(11)
WIDE = np.concatenate([-np.logspace(2.5, -8, 60), [0.0], np.logspace(-8, 2.5, 60)])  # WIDE[k:-k]: the middle
POSITIVE = np.logspace(-6, 2, 50)
PROBABILITIES = np.concatenate([np.logspace(-300, -1, 40), np.linspace(0.1, 0.9, 17), 1 - np.logspace(-15, -1, 20)])

# name: (function of (special module, x), input, relative tolerance of values[, absolute tolerance of gradients])
UNARY = {
    "erfcx": (lambda s, x: s.erfcx(x), np.concatenate([np.linspace(-20, 2, 40), np.logspace(0.4, 12, 40)]), 1e-13, 1e-15),
    # torch's erfcx' is 2x erfcx(x) - 2/sqrt(pi), which cancels to 0 for large x (kiln's: the continued fraction's slope)
    "ndtr": (lambda s, x: s.ndtr(x), np.linspace(-3, 8, 45), 1e-12),  # torch: (1 + erf(x / sqrt 2)) / 2, which loses the lower tail
    "log_ndtr": (lambda s, x: s.log_ndtr(x), np.concatenate([-np.logspace(-3, 1.5, 30), np.linspace(-2, 6, 33)]), 1e-13),
    # beyond -30 torch's slope exp(-x^2/2 - log_ndtr(x)) / sqrt(2 pi) loses digits: mpmath checks kiln's there
    "ndtri": (lambda s, p: s.ndtri(p), PROBABILITIES, 1e-13),
    "i0e": (lambda s, x: s.i0e(x), WIDE, 1e-14),
    "i1": (lambda s, x: s.i1(x), np.concatenate([WIDE, [700.0, -705.0]]), 1e-13),
    "i1e": (lambda s, x: s.i1e(x), WIDE, 1e-14),
    "entr": (lambda s, x: s.entr(x), POSITIVE, 1e-14),
    "spherical_bessel_j0": (lambda s, x: s.spherical_bessel_j0(x), WIDE, 1e-13),
    "expit_logit_exp2": (lambda s, x: s.expit(x) + s.logit(s.expit(x * 0.1), eps=1e-6) + s.exp2(x * 0.01), WIDE[20:-20], 1e-12),
    "erf_family": (lambda s, x: s.erf(x) + s.erfc(x) * 2 + s.erfinv(s.erf(x * 0.1)) + s.expm1(x * 0.01) + s.log1p(x.abs()), WIDE[30:-30], 1e-12),
    "gamma_family": (lambda s, x: s.gammaln(x) + s.digamma(x) + s.psi(x) * 2 + s.polygamma(2, x) + s.multigammaln(x + 2, 3), POSITIVE[5:], 1e-11),
    "i0_sinc_round": (lambda s, x: s.i0(x) + s.sinc(x) + s.round(x * 100, decimals=1).detach(), WIDE[35:-35], 1e-12),
}
GRADIENT_FREE = {"i0_sinc_round", "spherical_bessel_j0"}  # torch's spherical_bessel_j0 has no gradient


def _weights(shape):
    return np.random.default_rng(5).standard_normal(shape)


def _torch_value_and_grad(fn, *arrays):
    torch = require("torch")
    tensors = [torch.tensor(a, requires_grad=True) for a in arrays]
    out = fn(torch.special, *tensors)
    if out.requires_grad:  # torch's spherical_bessel_j0 has none
        (out * torch.tensor(_weights(out.shape))).sum().backward()
    return out.detach().numpy(), [None if t.grad is None else t.grad.numpy() for t in tensors]


def _eager_value_and_grad(fn, *arrays):
    tensors = [kiln.tensor(a, requires_grad=True) for a in arrays]
    out = fn(special, *tensors)
    (out * kiln.tensor(_weights(tuple(out.shape)))).sum().backward()
    return np.asarray(out.detach().numpy()), [np.asarray(t.grad) for t in tensors]


def _compiled_value_and_grad(fn, *arrays):
    values = kiln.compile(lambda *xs: fn(special, *xs))(*arrays)
    weights = _weights(np.shape(values))
    grads = kiln.grad(lambda *xs: (fn(special, *xs) * weights).sum(), argnums=tuple(range(len(arrays))))(*arrays)
    return np.asarray(values), list(grads) if isinstance(grads, tuple) else [grads]


def _close(got, want, rtol):
    np.testing.assert_allclose(got, want, rtol=rtol, atol=1e-16)  # ndtri(1/2) is 7e-17 here


@pytest.mark.parametrize("name", UNARY)
def test_special_matches_torch_eager_and_compiled(name):
    fn, x, rtol, *grad_atol = UNARY[name]
    want, want_grads = _torch_value_and_grad(fn, x)
    for run in (_eager_value_and_grad, _compiled_value_and_grad):
        got, grads = run(fn, x)
        _close(got, want, rtol)
        if name not in GRADIENT_FREE:
            np.testing.assert_allclose(grads[0], want_grads[0], rtol=rtol * 100, atol=grad_atol[0] if grad_atol else 0)


def test_binary_special_functions_match_torch():
    a = np.abs(RNG.standard_normal(12)) * 3 + 0.2
    x = np.abs(RNG.standard_normal(12)) * 4 + 0.05
    y = np.concatenate([RNG.standard_normal(6) * 0.3, [-0.5, 0.0, 3.0, 1e-9, 50.0, 0.9]])

    def binary(s, a, x, y):
        return s.gammainc(a.detach(), x) + s.gammaincc(a.detach(), x) * 2 + s.xlogy(x, a) + s.xlog1py(x, y) * 3

    want, want_grads = _torch_value_and_grad(binary, a, x, y)
    for run in (_eager_value_and_grad, _compiled_value_and_grad):
        got, grads = run(binary, a, x, y)
        _close(got, want, 1e-12)
        for g, w in zip(grads[1:], want_grads[1:]):  # torch's gammainc has no gradient in a: a enters through xlogy alone
            _close(g, w, 1e-10)


def test_zeta_matches_torch_and_its_slope_in_s_finite_differences():
    torch = require("torch")
    s = np.array([1.0001, 1.5, 2.0, 3.0, 4.5, 10.0, 30.0, 2.0, 3.0, 1.0, 0.5, 2.5, 6.0])
    q = np.array([0.1, 0.5, 1.0, 2.0, 3.5, 100.0, 1e5, -2.5, -2.5, 1.0, 1.0, -1.5, 0.0])
    want = torch.special.zeta(torch.tensor(s), torch.tensor(q)).numpy()
    got = np.asarray(special.zeta(kiln.tensor(s), kiln.tensor(q)).numpy())
    np.testing.assert_allclose(got, want, rtol=1e-13)  # nan at s < 1 and at q < 0 with fractional s, inf at s = 1 and q = 0
    inside = slice(1, 7)  # at s = 1.0001 the finite difference is off (zeta''' ~ 6 / (s - 1)^4); q < 0 has no slope in s
    values, want_grads = _torch_value_and_grad(lambda m, q: m.zeta(torch.tensor(s[inside]), q), q[inside])
    _, grads = _eager_value_and_grad(lambda m, q: m.zeta(kiln.tensor(s[inside]), q), q[inside])
    _close(grads[0], want_grads[0], 1e-11)
    slope = kiln.grad(lambda s: special.zeta(s, kiln.tensor(q[inside])).sum())(s[inside])  # torch has none in s
    h = 1e-6
    finite = (special.zeta(kiln.tensor(s[inside] + h), kiln.tensor(q[inside])).numpy()
              - special.zeta(kiln.tensor(s[inside] - h), kiln.tensor(q[inside])).numpy()) / (2 * h)
    np.testing.assert_allclose(slope, finite, rtol=1e-6)


def test_far_tails_keep_their_digits_against_mpmath():
    mpmath = require("mpmath")
    mpmath.mp.dps = 50
    x = np.array([-40.0, -300.0, -1e5, -12.0])
    expected = [float(mpmath.log(mpmath.ncdf(mpmath.mpf(v)))) for v in x]
    np.testing.assert_allclose(special.log_ndtr(kiln.tensor(x)).numpy(), expected, rtol=1e-14)
    slopes = [float(mpmath.npdf(mpmath.mpf(v)) / mpmath.ncdf(mpmath.mpf(v))) for v in x]
    np.testing.assert_allclose(kiln.grad(lambda x: special.log_ndtr(x).sum())(x), slopes, rtol=1e-14)
    cdf = [float(mpmath.ncdf(mpmath.mpf(v))) for v in x[[0, 3]]]  # torch's ndtr is 0 below -8.3 here
    np.testing.assert_allclose(special.ndtr(kiln.tensor(x[[0, 3]])).numpy(), cdf, rtol=1e-12)
    big = np.array([1e3, 1e8, 1e150])
    np.testing.assert_allclose(special.erfcx(kiln.tensor(big)).numpy(), [float(mpmath.erfc(v) * mpmath.exp(mpmath.mpf(v) ** 2)) for v in big], rtol=1e-14)
    tiny = np.array([1e-300, 1e-100, 1e-20])
    np.testing.assert_allclose(special.ndtri(kiln.tensor(tiny)).numpy(), require("scipy.special").ndtri(tiny), rtol=1e-14)
    large = np.array([25.0, 500.0, 1e5])
    np.testing.assert_allclose(special.i1e(kiln.tensor(large)).numpy(), [float(mpmath.besseli(1, v) * mpmath.exp(-v)) for v in large], rtol=1e-14)
    np.testing.assert_allclose(special.i1(kiln.tensor(np.array([712.0]))).numpy(), [float(mpmath.besseli(1, 712))], rtol=1e-13)  # torch: inf


def test_edges_are_torchs():
    torch = require("torch")
    edges = np.array([0.0, 1.0, -0.5, 1.5, math.nan, math.inf, -math.inf])
    for name in ("ndtri", "entr", "erfcx", "log_ndtr", "ndtr", "i0e", "i1e", "spherical_bessel_j0"):
        want = getattr(torch.special, name)(torch.tensor(edges)).numpy()
        np.testing.assert_allclose(getattr(special, name)(kiln.tensor(edges)).numpy(), want, rtol=1e-14, err_msg=name)


def test_softmax_family_and_float32():
    torch = require("torch")
    x = RNG.standard_normal((3, 5))
    for name, args in (("softmax", (1,)), ("log_softmax", (0,)), ("logsumexp", (1,))):
        np.testing.assert_allclose(getattr(special, name)(kiln.tensor(x), *args).numpy(),
                                   getattr(torch.special, name)(torch.tensor(x), *args).numpy(), rtol=1e-12)
    single = (WIDE[10:-10] * 0.1).astype(np.float32)
    for name in ("erfcx", "log_ndtr", "i0e", "i1e"):
        got = getattr(special, name)(kiln.tensor(single))
        assert got.dtype == kiln.float32
        np.testing.assert_allclose(got.numpy(), getattr(torch.special, name)(torch.tensor(single)).numpy(), rtol=2e-6, err_msg=name)


@pytest.mark.parametrize("name", ["chebyshev_polynomial_t", "chebyshev_polynomial_u", "hermite_polynomial_h",
                                  "hermite_polynomial_he", "laguerre_polynomial_l", "legendre_polynomial_p"])
def test_orthogonal_polynomials_match_torch(name):
    torch = require("torch")
    x = np.linspace(-0.99, 0.99, 23)
    for n in (0, 1, 2, 5, 9):
        np.testing.assert_allclose(getattr(special, name)(kiln.tensor(x), n).numpy(), getattr(torch.special, name)(torch.tensor(x), n).numpy(),
                                   rtol=1e-11, atol=1e-12, err_msg=f"{name} n={n}")


def test_missing_bessel_functions_say_what_to_do():
    with pytest.raises(kiln.KilnError, match=r"bessel_j0 is not implemented.*scipy.special.j0"):
        special.bessel_j0(kiln.tensor([1.0]))
    with pytest.raises(kiln.KilnError, match="n must be a Python int"):
        special.legendre_polynomial_p(kiln.tensor([0.5]), kiln.tensor([2]))


# kiln.testing ---------------------------------------------------------------------------------------------------------

def _close_cases(lib):
    """(actual, expected, options) built by kiln or torch alike."""
    t = lib.tensor
    return [
        (t([1.0, 2.0, 3.0]), t([1.0, 2.5, 3.0]), {}),
        (t(np.array([[1.0, 2.0], [3.0, 4.0]])), t(np.array([[1.0, 2.0], [3.0, 4.1]])), {}),
        (t([1.0, 2.0, 3.0]), t([1.0, 2.0 + 1e-6, 3.0]), {}),
        (t([1.0, 2.0]), t([1.0, 2.5]), {"rtol": 0.0, "atol": 0.0}),
        (t([1.0, 2.0]), t([1.0, 2.5]), {"rtol": 0.3, "atol": 0.0}),
        (t([1, 2]), t([1, 3]), {}),
        (t([True, False]), t([True, True]), {}),
        (t([0.0, 2.0]), t([1.0, 2.0]), {}),
        (t([1.0, 0.0]), t([1.0, 1e-6]), {}),
        (t(np.array([1000.0, 0.0])), t(np.array([1000.0001, 1e-6])), {}),  # the greatest differences among mismatches only
        (t(1.0), t(2.0), {}),
        (t([1.0, 2.0]), t(np.array([1.0, 2.0])), {}),
        (t([1.0, 2.0]), t(np.array([1.0, 2.0])), {"check_dtype": False}),
        (t([1.0, 2.0]), t([1.0, 2.0, 3.0]), {}),
        (t([math.nan, 1.0]), t([math.nan, 1.0]), {}),
        (t([math.nan, 1.0]), t([math.nan, 1.0]), {"equal_nan": True}),
        (t([math.inf, 1.0]), t([math.inf, 1.0]), {}),
        (t([math.inf]), t([-math.inf]), {}),
        (t(np.arange(6.0).reshape(2, 3)), t(np.arange(6.0).reshape(2, 3) * 1.5), {}),
        (1.0, 1.5, {}), (1, 2, {}), (1, 1.0, {}), (1, 1.0, {"check_dtype": False}), (True, False, {}), (1.0, 1.0 + 1e-8, {}),
        ([1.0, 2.0], [1.0, 2.5], {}), ((1.0, 2.0), [1.0, 2.0], {}), ([[1.0, 2.0], [3.0]], [[1.0, 2.0], [3.5]], {}), ([1.0, 2.0], [1.0], {}),
        ([t([1.0, 2.0]), t(3.0)], [t([1.0, 2.0]), t(3.5)], {}), ({"a": t(1.0)}, {"a": t(2.0)}, {}),
        (t([1.0, 2.0]), t([1.0, 2.5]), {"msg": "custom"}), (t([1.0, 2.0]), t([1.0, 2.5]), {"msg": lambda m: "X" + m}),
        (t([1.0, 2.0]), t([1.0, 2.5]), {"rtol": 1e-3}),
        (np.array([1.0, 2.0]), np.array([1.0, 2.1]), {}), (np.array(1.0), np.array(1.1), {}), (np.float32(1.0), np.float32(1.1), {}),
    ]


def _outcome(assert_close, actual, expected, options):
    try:
        assert_close(actual, expected, **options)
    except (AssertionError, ValueError) as error:
        return type(error).__name__, str(error).replace("torch.", "kiln.")
    return "passed", ""


def test_assert_close_passes_and_fails_as_torchs_with_its_message():
    torch = require("torch")
    import kiln.testing

    for ours, theirs in zip(_close_cases(kiln), _close_cases(torch)):
        assert _outcome(kiln.testing.assert_close, *ours) == _outcome(torch.testing.assert_close, *theirs)


def test_assert_close_takes_grads_and_says_what_it_cannot_compare():
    import kiln.testing

    x = kiln.tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x).sum().backward()
    kiln.testing.assert_close(x.grad, kiln.tensor(np.array([2.0, 4.0])))  # .grad is an array: a tensor-like here
    with pytest.raises(AssertionError, match=r"Greatest absolute difference: 1.0 at index \(1,\) \(up to 1e-07 allowed\)"):
        kiln.testing.assert_close(x.grad, np.array([2.0, 5.0]))
    with pytest.raises(TypeError, match="compares tensors and NumPy arrays with each other"):
        kiln.testing.assert_close(x.detach(), [1.0, 2.0])
    with pytest.raises(TypeError, match="traced tensor"):
        kiln.trace(lambda h: kiln.testing.assert_close(h, h), kiln.TensorSpec((2,)))


def test_make_tensor_ranges_dtypes_and_errors_as_torchs():
    torch = require("torch")
    import kiln.testing

    kiln.manual_seed(3)
    first = kiln.testing.make_tensor((40, 50), dtype=kiln.float64, low=-2.0, high=3.0).numpy()
    kiln.manual_seed(3)
    np.testing.assert_array_equal(kiln.testing.make_tensor(40, 50, dtype=kiln.float64, low=-2.0, high=3.0).numpy(), first)
    assert first.shape == (40, 50) and first.min() >= -2.0 and first.max() < 3.0 and first.std() > 1.0
    ints = kiln.testing.make_tensor(2000, dtype=kiln.int64).numpy()
    assert ints.dtype == np.int64 and set(np.unique(ints)) == set(range(-9, 9))  # torch's: [-9, 9)
    assert kiln.testing.make_tensor(3, dtype=kiln.bool).dtype == kiln.bool
    assert (kiln.testing.make_tensor(50, dtype=kiln.float32, low=0, high=0, exclude_zero=True).numpy() > 0).all()
    grad = kiln.testing.make_tensor(3, dtype=kiln.float32, requires_grad=True)
    assert grad.requires_grad
    for dtype, options in (("float32", {"low": 5, "high": 2}), ("float32", {"low": math.nan}), ("int64", {"low": 2, "high": 2})):
        with pytest.raises(ValueError) as theirs:
            torch.testing.make_tensor(3, dtype=getattr(torch, dtype), device="cpu", **options)
        with pytest.raises(ValueError) as ours:
            kiln.testing.make_tensor(3, dtype=getattr(kiln, dtype), **options)
        assert str(ours.value) == str(theirs.value)


# kiln.Size --------------------------------------------------------------------------------------------------------------

def test_size_is_a_tuple_that_behaves_as_torch_size():
    torch = require("torch")
    ours, theirs = kiln.zeros(3, 4, 5), torch.zeros(3, 4, 5)
    for get in (lambda t: t.shape, lambda t: t.size(), lambda t: t.shape[1:], lambda t: t.size()[:-1] + (7,)):
        got, want = get(ours), get(theirs)
        assert isinstance(got, kiln.Size) and isinstance(got, tuple) and isinstance(want, torch.Size)
        assert got == tuple(want) and repr(got) == repr(want).replace("torch.", "kiln.") and got.numel() == want.numel()
    assert ours.shape == (3, 4, 5) and ours.size(1) == 4 and type(ours.shape[0]) is int
    assert np.zeros(ours.shape).shape == (3, 4, 5) and kiln.Size([]).numel() == 1
    symbolic = kiln.trace(lambda h: h.reshape(h.shape[0], -1), kiln.TensorSpec(("N", 2, 3)))  # a symbolic dim stays a name
    assert symbolic.outputs[0].type.shape == ("N", 6)


# kiln.set_printoptions --------------------------------------------------------------------------------------------------

@pytest.fixture
def restored_printoptions():
    from kiln.frontend import torch_printoptions

    saved = dict(torch_printoptions._options)
    yield
    torch_printoptions._options.clear()
    torch_printoptions._options.update(saved)


def _printed_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    cases = []
    for dtype in (np.float32, np.float64):
        cases += [rng.standard_normal(shape).astype(dtype) for shape in [(), (5,), (3, 4), (2, 3, 4), (7, 13), (1001,), (2, 0)]]
        cases += [np.array(values, dtype) for values in ([1.5, 2.25, -3.0], 0.1234567, [1e-5, 1e5], [1.0, 2.0, 3.0],
                                                         [np.nan, np.inf, -np.inf, 1.0], [0.0, 0.0], [123456789.0, 1.0],
                                                         [-0.0, 1.0], [1e-20])]
    cases += [rng.integers(-100, 100, shape).astype(dtype) for dtype in (np.int64, np.int32, np.uint8) for shape in [(), (3, 4), (2000,)]]
    return cases + [rng.random((3, 4)) > 0.5, np.array(True)]


def test_tensors_print_as_torchs_by_default(restored_printoptions):
    from kiln.frontend import torch_printoptions

    torch = require("torch")
    torch_printoptions._options.clear()
    for array in _printed_cases():
        assert repr(kiln.tensor(array)) == repr(torch.from_numpy(array.copy())).replace("torch.", "kiln."), (array.dtype, array.shape)
    assert str(kiln.nn.Parameter(kiln.tensor([0.5, 0.25]))) == str(torch.nn.Parameter(torch.tensor([0.5, 0.25])))


def test_printoptions_change_eager_repr_as_torchs(restored_printoptions):
    torch = require("torch")
    values = np.array([0.123456789, -2.5, 1234.5678])
    try:
        for options in ({"profile": "default"}, {"profile": "short"},
                        {"profile": "default", "precision": 3, "sci_mode": False}, {"profile": "default", "precision": 2}):
            kiln.set_printoptions(**options)
            torch.set_printoptions(**options)
            assert repr(kiln.tensor(values)) == repr(torch.tensor(values)).replace("torch.", "kiln."), options
        kiln.set_printoptions(profile="default", linewidth=30)
        torch.set_printoptions(profile="default", linewidth=30)  # the body wraps alike; torch then puts dtype= on a line of its own
        assert repr(kiln.tensor(values)).split("\n")[:2] == repr(torch.tensor(values)).split("\n")[:2]
    finally:
        torch.set_printoptions(profile="default")
    kiln.set_printoptions(profile="default", threshold=5, edgeitems=2)
    summary = repr(kiln.tensor(np.arange(100.0)))
    assert "..." in summary and "1.," in summary and "98." in summary and "2.," not in summary
    kiln.set_printoptions(sci_mode=True, precision=3)
    assert repr(kiln.tensor(np.array([1.0, 250.0]))) == "tensor([1.000e+00, 2.500e+02], dtype=kiln.float64)"
    assert kiln.get_printoptions() == {"precision": 3, "threshold": 5, "edgeitems": 2, "linewidth": 80, "sci_mode": True}
    with pytest.raises(ValueError, match="profile must be one of"):
        kiln.set_printoptions(profile="long")


# kiln.Generator ---------------------------------------------------------------------------------------------------------

SAMPLERS = {
    "rand": lambda g: kiln.rand(4, 3, generator=g),
    "randn": lambda g: kiln.randn(5, generator=g),
    "randint": lambda g: kiln.randint(0, 10, (6,), generator=g),
    "randperm": lambda g: kiln.randperm(7, generator=g),
    "normal": lambda g: kiln.normal(2.0, 3.0, size=(4,), generator=g),
    "bernoulli": lambda g: kiln.bernoulli(kiln.full((8,), 0.5), generator=g),
    "multinomial": lambda g: kiln.multinomial(kiln.tensor([0.2, 0.3, 0.5]), 6, replacement=True, generator=g),
    "Tensor.multinomial": lambda g: kiln.tensor([0.2, 0.3, 0.5]).multinomial(6, True, generator=g),
    "Tensor.bernoulli": lambda g: kiln.full((8,), 0.5).bernoulli(generator=g),
    **{f"Tensor.{name}": (lambda name, args: lambda g: getattr(kiln.zeros(6), name)(*args, generator=g))(name, args)
       for name, args in [("uniform_", ()), ("normal_", ()), ("log_normal_", ()), ("bernoulli_", (0.5,)),
                          ("exponential_", ()), ("cauchy_", ()), ("geometric_", (0.3,)), ("random_", (0, 100))]},
    "Parameter.normal_": lambda g: _under_no_grad(lambda: kiln.nn.Parameter(np.zeros(6)).normal_(generator=g)),
    "Parameter.uniform_": lambda g: _under_no_grad(lambda: kiln.nn.Parameter(np.zeros(6)).uniform_(-1.0, 1.0, generator=g)),
}


def _under_no_grad(write):
    """A parameter is written in place under no_grad, as PyTorch requires (test_inplace_leaf_checks_vs_torch.py)."""
    with kiln.no_grad():
        return write()


@pytest.mark.parametrize("name", SAMPLERS)
def test_generators_seeded_alike_draw_alike_and_leave_the_global_stream(name):
    draw = SAMPLERS[name]
    first = np.asarray(draw(kiln.Generator().manual_seed(7)).numpy())
    np.testing.assert_array_equal(np.asarray(draw(kiln.Generator().manual_seed(7)).numpy()), first)
    others = [np.asarray(draw(kiln.Generator().manual_seed(seed)).numpy()) for seed in (8, 9, 10)]
    assert any(not np.array_equal(other, first) for other in others)
    kiln.manual_seed(3)
    plain = np.asarray(draw(None).numpy())
    kiln.manual_seed(3)
    draw(kiln.Generator().manual_seed(1))
    np.testing.assert_array_equal(np.asarray(draw(None).numpy()), plain)  # the generator's draw took nothing from kiln's


def test_generator_seeds_and_state_as_torchs():
    torch = require("torch")
    assert kiln.Generator().initial_seed() == torch.Generator().initial_seed()
    g = kiln.Generator()
    assert g.manual_seed(5) is g and g.initial_seed() == torch.Generator().manual_seed(5).initial_seed() == 5
    seed = g.seed()
    assert isinstance(seed, int) and g.initial_seed() == seed
    state = g.get_state()
    a = kiln.randn(4, generator=g).numpy()
    np.testing.assert_array_equal(kiln.randn(4, generator=g.set_state(state)).numpy(), a)
    with pytest.raises(TypeError, match=r"kiln.Generator\(\).manual_seed"):
        kiln.randn(2, generator=np.random.default_rng(0))


def test_data_loader_and_random_split_shuffle_from_a_generator():
    from kiln.utils.data import DataLoader, TensorDataset, random_split

    data = TensorDataset(kiln.tensor(np.arange(20.0)))

    def order(seed):
        loader = DataLoader(data, batch_size=5, shuffle=True, generator=kiln.Generator().manual_seed(seed))
        return np.concatenate([np.asarray(batch[0].numpy()) for batch in loader])

    np.testing.assert_array_equal(order(4), order(4))
    assert not np.array_equal(order(4), order(5)) and sorted(order(4)) == list(range(20))
    split = [list(part.indices) for part in random_split(range(10), [0.5, 0.5], generator=kiln.Generator().manual_seed(2))]
    assert split == [list(part.indices) for part in random_split(range(10), [0.5, 0.5], generator=kiln.Generator().manual_seed(2))]


# kiln.autocast / kiln.amp -------------------------------------------------------------------------------------------------

def _warnings_of(action):
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = action()
    return result, [(w.category.__name__, str(w.message).replace("torch.", "kiln.")) for w in caught]


def _run_in_autocast(lib, *args, **kwargs):
    with lib.autocast(*args, **kwargs):
        return lib.tensor(np.array([[1.0, 2.0]])) @ lib.tensor(np.array([[3.0], [4.0]]))


@pytest.mark.parametrize("device, dtype, enabled", [("cuda", None, True), ("cuda", "float16", True), ("cuda", "float16", False),
                                                    ("cpu", "bfloat16", False), ("cpu", "float32", True)])
def test_autocast_is_a_no_op_where_torchs_is_one_here_with_its_warning(device, dtype, enabled):
    torch = require("torch")
    options = lambda lib: {"dtype": getattr(lib, dtype) if dtype else None, "enabled": enabled}  # noqa: E731
    if device == "cuda" and enabled and kiln.cuda.is_available():  # a GPU: kiln's region casts (float64 never), no warning
        ours, our_warnings = _warnings_of(lambda: _run_in_autocast(kiln, device, **options(kiln)))
        assert our_warnings == [] and ours.dtype == kiln.float64
        return
    ours, our_warnings = _warnings_of(lambda: _run_in_autocast(kiln, device, **options(kiln)))
    theirs, their_warnings = _warnings_of(lambda: _run_in_autocast(torch, device, **options(torch)))
    assert our_warnings == their_warnings and ours.dtype == kiln.float64 and theirs.dtype == torch.float64
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_autocast_state_queries_and_device_errors_are_torchs():
    torch = require("torch")

    def states(lib):
        seen = [(lib.is_autocast_enabled("cpu"), str(lib.get_autocast_dtype("cpu")), lib.amp.is_autocast_available("cpu"))]
        with lib.autocast("cpu"):  # torch's CPU default is bfloat16
            seen.append((lib.is_autocast_enabled("cpu"), str(lib.get_autocast_dtype("cpu")), lib.is_autocast_enabled()))
            with lib.autocast("cpu", dtype=lib.float16):
                seen.append((lib.is_autocast_enabled("cpu"), str(lib.get_autocast_dtype("cpu"))))
                with lib.autocast("cpu", enabled=False):
                    seen.append((lib.is_autocast_enabled("cpu"), str(lib.get_autocast_dtype("cpu"))))
                seen.append((lib.is_autocast_enabled("cpu"), str(lib.get_autocast_dtype("cpu"))))
        seen.append((lib.is_autocast_enabled("cpu"), str(lib.get_autocast_dtype("cpu")), str(lib.get_autocast_dtype("cuda"))))
        return seen

    names = {"torch.bfloat16": "kiln.bfloat16", "torch.float16": "kiln.float16"}
    assert states(kiln) == [tuple(names.get(item, item) for item in state) for state in states(torch)]
    with pytest.raises(RuntimeError) as theirs:
        torch.autocast("tpu")
    for action in (lambda: kiln.autocast("tpu"), lambda: kiln.get_autocast_dtype("tpu"), lambda: kiln.is_autocast_enabled("tpu")):
        with pytest.raises(RuntimeError) as ours:
            action()
        assert str(ours.value) == str(theirs.value)


def test_autocast_off_inside_compiled_code_and_as_a_decorator():
    @kiln.autocast("cuda", dtype=kiln.float16, enabled=False)
    def forward(x):
        return (x * 2).sum()

    assert kiln.compile(forward)(np.array([1.0, 2.0])) == 6.0
    with kiln.amp.autocast("cpu", enabled=False):
        assert kiln.compile(lambda x: x.exp().sum())(np.zeros(3)) == 3.0


def _scaled_training(lib, scaler, factors):
    """SGD on sum(p^2 w) in float32 through the scaler; the parameters and scale after each step."""
    p = lib.nn.Parameter(lib.tensor(np.array([1.0, -2.0, 0.5], dtype=np.float32)) if lib is not kiln else np.array([1.0, -2.0, 0.5], dtype=np.float32))
    optimizer = lib.optim.SGD([p], lr=0.1)
    history = []
    for factor in factors:
        optimizer.zero_grad()
        loss = (p * p * lib.tensor(np.array([1.0, factor, 1.0], dtype=np.float32))).sum()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        history.append((np.array(p.detach().numpy()), scaler.get_scale()))
    return history, scaler.state_dict()


def test_grad_scaler_is_torchs_disabled_for_cuda_without_gpu_and_working_on_cpu():
    torch = require("torch")
    factors = [1.0, 1e35, 1.0, 1.0, 1.0, 2.0]  # the second step's gradient overflows float32 once scaled: skipped
    makers = [lambda lib: lib.amp.GradScaler("cpu", growth_interval=2), lambda lib: lib.amp.GradScaler(enabled=False)]
    if not kiln.cuda.is_available():  # torch here has no CUDA: its "cuda" scaler warns and disables itself, as kiln's
        makers.append(lambda lib: lib.amp.GradScaler("cuda"))
    for make in makers:
        (ours, our_state), our_warnings = _warnings_of(lambda: _scaled_training(kiln, make(kiln), factors))
        (theirs, their_state), their_warnings = _warnings_of(lambda: _scaled_training(torch, make(torch), factors))
        assert our_warnings == their_warnings and our_state == their_state
        for (p, scale), (q, their_scale) in zip(ours, theirs):
            np.testing.assert_allclose(p, q, rtol=1e-6)
            assert scale == their_scale


def test_grad_scaler_state_round_trips_and_cuda_amp_is_deprecated_as_torchs():
    scaler = kiln.amp.GradScaler("cpu", init_scale=8.0)
    scaler.load_state_dict({**scaler.state_dict(), "scale": 4.0, "_growth_tracker": 3})
    assert scaler.get_scale() == 4.0 and scaler.state_dict()["_growth_tracker"] == 3
    with pytest.raises(RuntimeError, match="saved from a disabled instance"):
        scaler.load_state_dict(kiln.amp.GradScaler(enabled=False).state_dict())
    from kiln.cuda.amp import GradScaler, autocast

    if kiln.cuda.is_available():  # a GPU: both work, after their deprecation warnings
        _, caught = _warnings_of(lambda: (GradScaler(), autocast()))
        assert [category for category, _ in caught] == ["FutureWarning", "FutureWarning"]
    else:
        _, caught = _warnings_of(lambda: (GradScaler(), autocast()))
        assert [category for category, _ in caught] == ["FutureWarning", "UserWarning", "FutureWarning", "UserWarning"]
    assert "kiln.amp.GradScaler('cuda', args...)" in caught[0][1]
