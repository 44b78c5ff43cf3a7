"""LKJCholesky, Wishart, biject_to / transform_to and ExponentialFamily against torch.distributions 2.13 in float64.

Each case is one function of a distributions module, run once with ``kiln.distributions`` (traced and compiled) and
once with ``torch.distributions``: values and the gradients with respect to every parameter at rtol 1e-10 (1e-7
where torch's trigamma enters, see TRIGAMMA_RTOL). Then draws (torch's moments within standard errors, the support,
reproducible under the seed, pathwise gradients), validate_args refusals, and the registries' transforms."""

from __future__ import annotations


import numpy as np
import pytest

import kiln
import kiln.distributions as kd
from oracles import require
from test_distributions_vs_torch import check_against_torch

RNG = np.random.default_rng(7)
TRIGAMMA_RTOL = 1e-7  # torch's digamma derivative is off mpmath's by up to 5e-10 relative (test_continuous_more_vs_torch)


def _covariances(batch, size):
    factor = RNG.standard_normal(batch + (size, size))
    return factor @ np.swapaxes(factor, -1, -2) + size * np.eye(size)


COV = _covariances((2,), 3)
PRECISION = np.linalg.inv(_covariances((2,), 3))
TRIL = np.linalg.cholesky(_covariances((2,), 3))
DF = np.array([3.5, 6.0])  # above p - 1 = 2
MATRIX = {"covariance_matrix": COV, "precision_matrix": PRECISION, "scale_tril": TRIL}


def _torch_draws(name, *args, n=4, **kwargs):
    """Values in the support, drawn by torch (seeded) from a float64 distribution."""
    torch = require("torch")
    torch.manual_seed(0)
    tensors = [torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args]
    return getattr(torch.distributions, name)(*tensors, **{k: torch.tensor(v) for k, v in kwargs.items()}).sample((n,)).numpy()


LKJ_CONCENTRATION = np.array([0.5, 1.0, 2.5])
LKJ_VALUES = {dim: _torch_draws("LKJCholesky", dim, LKJ_CONCENTRATION) for dim in (2, 3, 5)}
WISHART_VALUES = _torch_draws("Wishart", DF, covariance_matrix=COV)


def _wishart(kind):
    return lambda M, df, matrix: M.Wishart(df, **{kind: matrix})


# name: (fn(M, *params, *data), params (differentiated), data[, rtol])
def _batched_wishart_kl(M, a, b, m, n):
    if M is kd:
        return M.kl_divergence(M.Wishart(a, covariance_matrix=m), M.Wishart(b, covariance_matrix=n))
    return require("torch").stack([M.kl_divergence(M.Wishart(a[i], covariance_matrix=m[i]), M.Wishart(b[i], covariance_matrix=n[i]))
                             for i in range(len(a))])


CASES = {
    **{f"lkj{dim}.log_prob": (lambda M, c, x, dim=dim: M.LKJCholesky(dim, c).log_prob(x), [LKJ_CONCENTRATION, LKJ_VALUES[dim]], [])
       for dim in (2, 3, 5)},
    "lkj.number_concentration": (lambda M, x: M.LKJCholesky(3).log_prob(x) + M.LKJCholesky(3, 0.7).log_prob(x), [LKJ_VALUES[3]], []),
    **{f"wishart_{kind}.log_prob": (lambda M, df, m, x, kind=kind: _wishart(kind)(M, df, m).log_prob(x), [DF, MATRIX[kind]],
                                    [WISHART_VALUES]) for kind in MATRIX},
    "wishart.log_prob_of_value": (lambda M, m, x: M.Wishart(4.0, covariance_matrix=m).log_prob(x), [COV, WISHART_VALUES], []),
    **{f"wishart_{kind}.entropy": (lambda M, df, m, kind=kind: _wishart(kind)(M, df, m).entropy(), [DF, MATRIX[kind]], [],
                                   TRIGAMMA_RTOL) for kind in MATRIX},
    **{f"wishart_{kind}.moments": (lambda M, df, m, kind=kind: _wishart(kind)(M, df, m).mean + 3 * _wishart(kind)(M, df, m).variance,
                                   [DF, MATRIX[kind]], []) for kind in MATRIX},
    "wishart.mode": (lambda M, df, m: M.Wishart(df, scale_tril=m).mode, [np.array([4.5, 9.0]), TRIL], []),
    "wishart.matrices": (lambda M, m: M.Wishart(4.0, covariance_matrix=m).precision_matrix
                         + M.Wishart(4.0, covariance_matrix=m).scale_tril + 2 * M.Wishart(4.0, precision_matrix=m).covariance_matrix,
                         [COV], []),
    "wishart.kl_unbatched": (lambda M, a, b, m, n: M.kl_divergence(M.Wishart(a, covariance_matrix=m), M.Wishart(b, covariance_matrix=n)),
                             [np.array(4.0), np.array(5.5), COV[0], _covariances((), 3)], [], TRIGAMMA_RTOL),
    # torch's Bregman rule sums Wishart's df term over the batch (its _sum_rightmost of a batch-shaped parameter over
    # two event dims): kiln's batched KL is compared with torch's KL of each element
    "wishart.kl_batched": (_batched_wishart_kl, [DF, DF[::-1] + 1, COV, _covariances((2,), 3)], [], TRIGAMMA_RTOL),
    "wishart.bregman_entropy": (lambda M, df, m: M.ExponentialFamily.entropy(M.Wishart(df, covariance_matrix=m)) * 1.0,
                                [DF, COV], []),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_and_gradients_are_torchs(name, float64_default):
    check_against_torch(*CASES[name])


def test_bregman_entropy_is_the_closed_form():
    closed, bregman = kd.Wishart(DF, covariance_matrix=COV).entropy(), kd.ExponentialFamily.entropy(kd.Wishart(DF, covariance_matrix=COV))
    np.testing.assert_allclose(bregman.numpy(), closed.numpy(), rtol=1e-12)


# Draws ------------------------------------------------------------------------------------------------------------

DRAWS = 20000


def test_lkj_draws_are_correlation_factors_with_torchs_statistics(float64_default):
    torch = float64_default
    concentration = np.array([0.5, 3.0])
    kiln.manual_seed(3)
    ours = kd.LKJCholesky(4, kiln.tensor(concentration)).sample((DRAWS,))
    kiln.manual_seed(3)
    again = kd.LKJCholesky(4, kiln.tensor(concentration)).sample((DRAWS,)).numpy()
    assert tuple(ours.shape) == (DRAWS, 2, 4, 4) and not ours.requires_grad
    values = ours.numpy()
    np.testing.assert_array_equal(values, again)
    assert torch.distributions.constraints.corr_cholesky.check(torch.tensor(values)).all()
    torch.manual_seed(3)
    theirs = torch.distributions.LKJCholesky(4, torch.tensor(concentration)).sample((DRAWS,)).numpy()
    bound = 5 * np.sqrt((values.var(0) + theirs.var(0)) / DRAWS) + 1e-12
    assert np.all(np.abs(values.mean(0) - theirs.mean(0)) <= bound)
    # the correlations' variances, torch's within standard errors (torch's onion draws give r_10 LKJ's marginal
    # variance 1 / (2 eta + D - 1), but r_20, r_31... differ from it by up to 35%: kiln follows torch's algorithm)
    ours_r, theirs_r = (c[..., 1:, :3].reshape(DRAWS, 2, -1) for c in (values @ np.swapaxes(values, -1, -2),
                                                                        theirs @ np.swapaxes(theirs, -1, -2)))
    errors = [np.sqrt((np.mean(r**4, 0) - r.var(0) ** 2) / DRAWS) for r in (ours_r, theirs_r)]
    assert np.all(np.abs(ours_r.var(0) - theirs_r.var(0)) <= 5 * np.hypot(*errors) + 1e-12)
    log_prob = torch.distributions.LKJCholesky(4, torch.tensor(concentration)).log_prob(torch.tensor(values)).numpy()
    assert np.isfinite(log_prob).all()


def test_lkj_draws_inside_a_compiled_function_are_fresh_each_call():
    compiled = kiln.compile(lambda c: kd.LKJCholesky(3, c).sample((500,)), seed=0, batch_dim=None)
    first, second = (compiled(np.array([1.0, 2.0])) for _ in range(2))
    assert first.shape == (500, 2, 3, 3) and not np.array_equal(first, second)
    np.testing.assert_allclose(np.linalg.norm(first, axis=-1), 1.0, rtol=1e-12)


def test_wishart_draws_have_torchs_mean_and_repeat_under_the_seed(float64_default):
    torch = float64_default
    kiln.manual_seed(5)
    ours = kd.Wishart(kiln.tensor(DF), covariance_matrix=kiln.tensor(COV)).rsample((DRAWS,))
    kiln.manual_seed(5)
    again = kd.Wishart(kiln.tensor(DF), covariance_matrix=kiln.tensor(COV)).sample((DRAWS,))
    assert tuple(ours.shape) == (DRAWS, 2, 3, 3) and not again.requires_grad
    values = ours.numpy()
    np.testing.assert_array_equal(values, again.numpy())
    assert torch.distributions.constraints.positive_definite.check(torch.tensor(values)).all()
    expected = torch.distributions.Wishart(torch.tensor(DF), covariance_matrix=torch.tensor(COV))
    mean, variance = expected.mean.numpy(), expected.variance.numpy()
    assert np.all(np.abs(values.mean(0) - mean) < 5 * np.sqrt(variance / DRAWS)), (values.mean(0), mean)
    np.testing.assert_allclose(values.var(0), variance, rtol=0.15)  # heavy-tailed: a loose bound on the variance
    assert np.isfinite(expected.log_prob(torch.tensor(values)).numpy()).all()


def test_wishart_rsample_gradients_reach_the_scale_and_df():
    scale = kiln.tensor(np.array(1.5), requires_grad=True)
    df = kiln.tensor(DF.copy(), requires_grad=True)
    kiln.manual_seed(9)
    draws = kd.Wishart(df, scale_tril=scale * kiln.tensor(TRIL)).rsample((4000,))
    draws.mean(0).sum().backward()
    values = draws.detach().numpy()
    np.testing.assert_allclose(scale.grad.numpy(), 2 * values.mean(0).sum() / 1.5, rtol=1e-10)  # X = c^2 X_0
    expected = (TRIL @ np.swapaxes(TRIL, -1, -2)).sum((-2, -1)) * 1.5**2  # d/d df of E[X] = df V
    gradient = df.grad.numpy()
    assert np.all(np.isfinite(gradient)) and np.all(np.abs(gradient - expected) < 0.1 * np.abs(expected)), (gradient, expected)


# Refusals ---------------------------------------------------------------------------------------------------------

NOT_PD = np.array([[1.0, 2.0], [2.0, 1.0]])
REFUSED = {  # (build(M), error): torch's error on building it, kiln's the same type
    "lkj.dim_1": (lambda M, T: M.LKJCholesky(1, 1.0), ValueError),
    "lkj.concentration_0": (lambda M, T: M.LKJCholesky(3, T(np.array([1.0, 0.0]))), ValueError),
    "wishart.df_at_p_minus_1": (lambda M, T: M.Wishart(T(np.array([1.0])), covariance_matrix=T(np.eye(2))), ValueError),
    "wishart.df_unvalidated": (lambda M, T: M.Wishart(T(np.array(0.5)), scale_tril=T(np.eye(2)), validate_args=False), ValueError),
    "wishart.not_positive_definite": (lambda M, T: M.Wishart(T(np.array(3.0)), covariance_matrix=T(NOT_PD)), ValueError),
    "wishart.not_lower_cholesky": (lambda M, T: M.Wishart(T(np.array(3.0)), scale_tril=T(np.array([[1.0, 1.0], [0.0, 1.0]]))), ValueError),
    "wishart.two_matrices": (lambda M, T: M.Wishart(T(np.array(3.0)), covariance_matrix=T(np.eye(2)), scale_tril=T(np.eye(2))),
                             AssertionError),
    "wishart.vector": (lambda M, T: M.Wishart(T(np.array(3.0)), covariance_matrix=T(np.ones(2))), ValueError),
}
OUTSIDE = {  # (distribution(M, T), value): torch's ValueError from log_prob when validating
    "lkj": (lambda M, T, **o: M.LKJCholesky(2, 1.0, **o), np.array([[1.0, 0.0], [0.6, 0.6]])),
    "wishart": (lambda M, T, **o: M.Wishart(T(np.array(3.0)), covariance_matrix=T(np.eye(2)), **o), NOT_PD),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_invalid_parameters_are_refused_as_torch(case):
    build, error = REFUSED[case]
    torch = require("torch")
    with pytest.raises(error):
        build(torch.distributions, lambda a: torch.tensor(a, dtype=torch.float64))
    with pytest.raises(error):
        build(kd, kiln.tensor)


@pytest.mark.parametrize("case", sorted(OUTSIDE))
def test_values_outside_the_support_are_refused_as_torch(case):
    build, value = OUTSIDE[case]
    torch = require("torch")
    for M, T in ((torch.distributions, lambda a: torch.tensor(a, dtype=torch.float64)), (kd, kiln.tensor)):
        with pytest.raises(ValueError):
            build(M, T).log_prob(T(value))
        build(M, T, validate_args=False).log_prob(T(value))


def test_shapes_and_expand_are_torchs(float64_default):
    torch = float64_default
    for make in (lambda M, T: M.LKJCholesky(3, T(LKJ_CONCENTRATION)), lambda M, T: M.Wishart(T(DF), scale_tril=T(TRIL)),
                 lambda M, T: M.Wishart(T(np.array(5.0)), covariance_matrix=T(COV))):
        ours, theirs = make(kd, kiln.tensor), make(torch.distributions, torch.tensor)
        assert (ours.batch_shape, ours.event_shape) == (tuple(theirs.batch_shape), tuple(theirs.event_shape))
        assert ours.has_rsample == theirs.has_rsample and ours.support.event_dim == theirs.support.event_dim == 2
        bigger = (4,) + tuple(theirs.batch_shape)
        assert ours.expand(bigger).batch_shape == tuple(theirs.expand(bigger).batch_shape)
        assert tuple(ours.expand(bigger).sample().shape) == tuple(theirs.expand(bigger).sample().shape)


def test_submodules_are_torchs_names():
    torch = require("torch")
    for name in ("lkj_cholesky", "wishart", "constraint_registry", "exp_family"):
        theirs, ours = getattr(torch.distributions, name), getattr(kd, name)
        assert set(ours.__all__) <= set(dir(theirs)), name
    assert kd.lkj_cholesky.LKJCholesky is kd.LKJCholesky and kd.wishart.Wishart is kd.Wishart
    assert kd.constraint_registry.biject_to is kd.biject_to and kd.exp_family.ExponentialFamily is kd.ExponentialFamily


# biject_to and transform_to -----------------------------------------------------------------------------------------

UNCONSTRAINED = RNG.standard_normal((3, 4))
SQUARE = RNG.standard_normal((2, 3, 3))
CONSTRAINTS = {  # name: (constraint(C), unconstrained x)
    "real": (lambda C: C.real, UNCONSTRAINED),
    "positive": (lambda C: C.positive, UNCONSTRAINED),
    "nonnegative": (lambda C: C.nonnegative, UNCONSTRAINED),
    "greater_than": (lambda C: C.greater_than(1.5), UNCONSTRAINED),
    "greater_than_eq": (lambda C: C.greater_than_eq(-2.0), UNCONSTRAINED),
    "less_than": (lambda C: C.less_than(3.0), UNCONSTRAINED),
    "interval": (lambda C: C.interval(-1.0, 2.5), UNCONSTRAINED),
    "half_open_interval": (lambda C: C.half_open_interval(0.5, 1.0), UNCONSTRAINED),
    "unit_interval": (lambda C: C.unit_interval, UNCONSTRAINED),
    "interval_0_1": (lambda C: C.interval(0, 1), UNCONSTRAINED),
    "real_vector": (lambda C: C.real_vector, UNCONSTRAINED),
    "independent": (lambda C: C.independent(C.greater_than(-1.0), 1), UNCONSTRAINED),
    "simplex": (lambda C: C.simplex, UNCONSTRAINED),
    "corr_cholesky": (lambda C: C.corr_cholesky, RNG.standard_normal((2, 6))),
    "lower_cholesky": (lambda C: C.lower_cholesky, SQUARE),
    "positive_definite": (lambda C: C.positive_definite, SQUARE),
    "positive_semidefinite": (lambda C: C.positive_semidefinite, SQUARE),
    "cat": (lambda C: C.cat([C.positive, C.interval(0.0, 2.0)], dim=-1, lengths=[1, 3]), UNCONSTRAINED),
    "stack": (lambda C: C.stack([C.real, C.positive, C.less_than(0.5), C.unit_interval], dim=-1), UNCONSTRAINED),
    "support_of_gamma": (lambda C: (kd if C is kd.constraints else require("torch").distributions).Gamma.support, UNCONSTRAINED),
    "support_of_beta": (lambda C: (kd if C is kd.constraints else require("torch").distributions).Beta.support, UNCONSTRAINED),
}
UNSUPPORTED = ["boolean", "nonnegative_integer", "positive_integer", "lower_triangular", "square", "symmetric",
               "dependent", "one_hot"]


def _transforms(registry, constraint):
    """``registry(constraint)`` in both libraries (None where torch's raises NotImplementedError, kiln's too)."""
    torch = require("torch")
    try:
        theirs = getattr(torch.distributions, registry)(constraint(torch.distributions.constraints))
    except NotImplementedError:
        with pytest.raises(NotImplementedError):
            getattr(kd, registry)(constraint(kd.constraints))
        return None, None
    return getattr(kd, registry)(constraint(kd.constraints)), theirs


def _structure(transform):
    """The transform's class names, nested through compositions and functors."""
    base = getattr(transform, "base_transform", None)
    parts = [base] if base is not None else getattr(transform, "parts", None) or getattr(transform, "transforms", None)
    name = type(transform).__name__
    return (name, tuple(_structure(part) for part in parts)) if parts is not None else name


@pytest.mark.parametrize("registry", ["biject_to", "transform_to"])
@pytest.mark.parametrize("name", sorted(CONSTRAINTS))
def test_registry_transforms_are_torchs(registry, name):
    constraint, x = CONSTRAINTS[name]
    ours, theirs = _transforms(registry, constraint)
    if theirs is None:
        assert (registry, name) in {("biject_to", "lower_cholesky"), ("biject_to", "positive_definite"),
                                    ("biject_to", "positive_semidefinite")}
        return
    assert _structure(ours) == _structure(theirs)
    assert ours.bijective == theirs.bijective

    def transform(M):
        return getattr(M, registry)(constraint(M.constraints))

    check_against_torch(lambda M, x: transform(M)(x), [x], [])
    y = transform(kd)(kiln.tensor(x)).numpy()
    check_against_torch(lambda M, y: transform(M).inv(y), [y], [])
    if theirs.bijective:
        check_against_torch(lambda M, x: transform(M).log_abs_det_jacobian(x, transform(M)(x)), [x], [])


@pytest.mark.parametrize("name", UNSUPPORTED)
def test_constraints_without_a_transform_raise_as_torchs(name):
    torch = require("torch")
    for registry in ("biject_to", "transform_to"):
        with pytest.raises(NotImplementedError):
            getattr(torch.distributions, registry)(getattr(torch.distributions.constraints, name))
        with pytest.raises(NotImplementedError, match="Cannot transform"):
            getattr(kd, registry)(getattr(kd.constraints, name))
    with pytest.raises(NotImplementedError):  # an ad-hoc constraint has no kind
        kd.biject_to(kd.Constraint("odd numbers", lambda x: x % 2 == 1))


def test_constraint_attributes_are_torchs():
    torch = require("torch")
    C, T = kd.constraints, torch.distributions.constraints
    for ours, theirs in ((C.interval(-1.0, 2.0), T.interval(-1.0, 2.0)), (C.greater_than(0.5), T.greater_than(0.5)),
                         (C.less_than(2.0), T.less_than(2.0)), (C.positive, T.positive), (C.unit_interval, T.unit_interval),
                         (C.integer_interval(0, 3), T.integer_interval(0, 3))):
        for attribute in ("lower_bound", "upper_bound"):
            assert getattr(ours, attribute, None) == getattr(theirs, attribute, None)
    assert C.real_vector.base_constraint is C.real and C.real_vector.reinterpreted_batch_ndims == 1
    stacked = C.cat([C.real, C.positive], dim=-1, lengths=[2, 1])
    assert (stacked.dim, stacked.lengths, stacked.cseq) == (-1, [2, 1], [C.real, C.positive])
    legacy = kd.Constraint("in (0, 1)", lambda x: (x > 0) & (x < 1), 0)  # the positional form still builds one
    assert legacy.kind is None and legacy.params == {} and legacy.check(np.array(0.5))
    with pytest.raises(AttributeError):
        legacy.lower_bound


def test_register_takes_constraints_factories_and_subclasses_as_torch():
    torch = require("torch")
    registry = kd.constraint_registry.ConstraintRegistry()
    registry.register(kd.constraints.positive, lambda c: kd.ExpTransform())
    assert isinstance(registry(kd.constraints.greater_than(2.0)), kd.ExpTransform)  # one kind, as torch's one class

    @registry.register(kd.constraints.interval)
    def _to_interval(constraint):
        return kd.AffineTransform(constraint.lower_bound, constraint.upper_bound - constraint.lower_bound)

    assert registry(kd.constraints.interval(1.0, 3.0)).scale == 2.0

    class Odd(kd.Constraint):
        def __init__(self):
            super().__init__("odd", lambda x: x % 2 == 1)

    registry.register(Odd, lambda c: kd.identity_transform)
    assert registry(Odd()) is kd.identity_transform
    with pytest.raises(NotImplementedError):
        registry(kd.constraints.simplex)
    with pytest.raises(TypeError):
        registry.register(3, lambda c: kd.identity_transform)
    theirs = torch.distributions.constraint_registry.ConstraintRegistry()
    theirs.register(torch.distributions.constraints.positive, lambda c: torch.distributions.ExpTransform())
    assert isinstance(theirs(torch.distributions.constraints.greater_than(2.0)), torch.distributions.ExpTransform)
    with pytest.raises(TypeError):
        theirs.register(3, lambda c: None)


def test_biject_to_then_inverse_round_trips_a_wishart_draw():
    draw = kd.Wishart(5.0, covariance_matrix=COV[0]).sample()
    transform = kd.transform_to(kd.Wishart.support)
    np.testing.assert_allclose(transform(transform.inv(draw)).numpy(), draw.numpy(), rtol=1e-10)


# ExponentialFamily for a user's own family -------------------------------------------------------------------------


class _Rate(kd.ExponentialFamily):
    """Exponential(rate) as an exponential family: theta = -rate, F(theta) = -log(-theta), k = 0."""

    arg_constraints = {"rate": kd.constraints.positive}
    _mean_carrier_measure = 0

    def __init__(self, rate, validate_args=None):
        self._set_parameters(validate_args, rate=rate)

    rate = property(lambda self: self._parameter("rate"))
    _natural_params = property(lambda self: (-self.rate,))

    def _log_normalizer(self, theta):
        return -(-theta).log()


def test_exponential_family_entropy_and_kl_by_bregman_are_torchs():
    torch = require("torch")
    rate, other = RNG.uniform(0.3, 3.0, (3, 2)), RNG.uniform(0.3, 3.0, (3, 2))
    entropy = kiln.compile(lambda r: _Rate(r).entropy(), batch_dim=None)(rate)
    np.testing.assert_allclose(entropy, torch.distributions.Exponential(torch.tensor(rate)).entropy().numpy(), rtol=1e-12)
    kl = kiln.compile(lambda a, b: kd.kl_divergence(_Rate(a), _Rate(b)), batch_dim=None)(rate, other)
    expected = torch.distributions.kl_divergence(torch.distributions.Exponential(torch.tensor(rate)),
                                                 torch.distributions.Exponential(torch.tensor(other))).numpy()
    np.testing.assert_allclose(kl, expected, rtol=1e-12)
    with pytest.raises(NotImplementedError):
        kd.kl_divergence(_Rate(rate), kd.Wishart(5.0, covariance_matrix=COV[0]))
    with pytest.raises(NotImplementedError):
        kd.ExponentialFamily(()).entropy()
