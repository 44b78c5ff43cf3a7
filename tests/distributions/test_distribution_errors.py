"""kiln.distributions' errors: invalid concrete parameters and values (what, which values, the user's line, what to
do), use outside a trace, shapes that do not fit, KL pairs with no rule; and what is deliberately not checked."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.distributions as kd
from kiln.compiler.errors import TraceError
from kiln.frontend.distributions_kl import _KL
from oracles import require_torch

THIS_FILE = "test_distribution_errors.py"


def _trace(fn, *shapes):
    return kiln.trace(fn, *[kiln.TensorSpec(shape, "float64") for shape in shapes])


@pytest.mark.parametrize("build, words", [
    (lambda: kd.Normal(0.0, -1.0), ["Normal", "scale", "positive", "-1."]),
    (lambda: kd.Normal(np.array([0.0, np.nan]), 1.0), ["Normal", "loc", "not NaN"]),
    (lambda: kd.Laplace(0.0, np.array([1.0, 0.0, 2.0])), ["Laplace", "scale", "(3,)", "0."]),
    (lambda: kd.Exponential(np.array([-2.0])), ["Exponential", "rate", "positive"]),
    (lambda: kd.Bernoulli(probs=1.5), ["Bernoulli", "probs", "[0, 1]", "1.5"]),
    (lambda: kd.Bernoulli(logits=np.nan), ["Bernoulli", "logits"]),
    (lambda: kd.Categorical(probs=[0.5, -0.1, 0.6]), ["Categorical", "probs", "non-negative"]),
    (lambda: kd.Categorical(probs=[0.0, 0.0]), ["Categorical", "positive sum"]),
    (lambda: kd.Uniform(1.0, np.array([2.0, 0.5])), ["Uniform", "low >= high"]),
])
def test_invalid_concrete_parameters_say_what_where_and_what_to_do(build, words):
    with pytest.raises(ValueError) as caught:  # torch.distributions raises ValueError too
        build()
    message = str(caught.value)
    assert isinstance(caught.value, kd.InvalidParameterError)
    assert THIS_FILE in message and "validate_args=False" in message
    for word in words:
        assert word in message, (word, message)


def test_validate_args_false_skips_the_checks_and_traced_values_are_never_checked():
    kd.Normal(0.0, -1.0, validate_args=False)
    kd.Distribution.set_default_validate_args(False)
    try:
        kd.Uniform(1.0, 0.0)
    finally:
        kd.Distribution.set_default_validate_args(True)
    with pytest.raises(ValueError):
        kd.Uniform(1.0, 0.0)
    # a traced scale is only known when the step runs: a negative one gives NaN, as torch with validate_args=False
    run = kiln.compile(lambda s: kd.Normal(0.0, s).log_prob(0.5), batch_dim=None)
    assert np.isnan(run(np.array([-1.0]))).all()


@pytest.mark.parametrize("build, words", [
    (lambda: kd.Bernoulli(), ["Either `probs` or `logits`", "neither"]),
    (lambda: kd.Categorical(probs=[0.5, 0.5], logits=[0.0, 0.0]), ["Either `probs` or `logits`", "both"]),
    (lambda: kd.Categorical(logits=0.3), ["at least one-dimensional"]),
    (lambda: kd.Normal(np.zeros(3), np.ones(4)), ["do not broadcast", "loc (3,)", "scale (4,)"]),
    (lambda: kd.Independent(kd.Normal(np.zeros(3), 1.0), 2), ["reinterpreted_batch_ndims", "2 vs 1"]),
])
def test_malformed_parameters_are_named(build, words):
    with pytest.raises(ValueError) as caught:
        build()
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))
    assert THIS_FILE in str(caught.value)


def test_concrete_values_outside_the_support_are_named():
    with pytest.raises(ValueError, match="value given to log_prob.*non-negative"):
        _trace(lambda r: kd.Exponential(r).log_prob(np.array([1.0, -1.0])), (2,))
    with pytest.raises(ValueError, match=r"class index, an integer in \[0, 3\]"):
        _trace(lambda l: kd.Categorical(logits=l).log_prob(4), (4,))
    _trace(lambda m: kd.Normal(m, 1.0).icdf(1.5), ())  # torch's icdf checks nothing: NaN (test_icdf_outside_0_1_vs_torch.py)
    _trace(lambda r: kd.Exponential(r, validate_args=False).log_prob(-1.0), (2,))


def test_outside_a_trace_a_distribution_computes_eagerly():
    torch = require_torch()
    normal = kd.Normal(0.0, 1.0)  # building one is fine anywhere: a prior in a Module's __init__
    assert normal.log_prob(0.3).item() == pytest.approx(torch.distributions.Normal(0.0, 1.0).log_prob(torch.tensor(0.3)).item(), rel=1e-6)
    assert normal.mean.item() == 0.0 and normal.sample((5,)).shape == (5,) and normal.loc.item() == 0.0
    entropy = torch.distributions.Categorical(logits=torch.tensor([0.0, 1.0])).entropy().item()
    assert kd.Categorical(logits=[0.0, 1.0]).entropy().item() == pytest.approx(entropy, rel=1e-6)
    # the same object works in any number of traces
    for _ in range(2):
        np.testing.assert_allclose(kiln.compile(lambda x: normal.log_prob(x), batch_dim=None)(np.zeros(2)), -0.5 * np.log(2 * np.pi))


def test_bad_sample_shapes_and_expand_are_named():
    with pytest.raises(TraceError, match="sample_shape must be a tuple of non-negative ints"):
        _trace(lambda m: kd.Normal(m, 1.0).sample((-1,)), ())
    with pytest.raises(TraceError, match="sample_shape"):
        _trace(lambda m: kd.Normal(m, 1.0).sample(2.5), ())
    with pytest.raises(TraceError, match=r"expand: batch shape \(3,\) does not broadcast to \(2,\)"):
        kd.Normal(np.zeros(3), 1.0).expand((2,))


def test_kl_of_a_pair_with_no_rule_names_the_registered_pairs_and_register_kl_adds_one():
    with pytest.raises(NotImplementedError) as caught:
        _trace(lambda p: kd.kl_divergence(kd.Bernoulli(p), kd.Normal(p, 1.0)), (2,))
    message = str(caught.value)
    assert "kl_divergence(Bernoulli, Normal)" in message and "(Normal, Normal)" in message and "register_kl" in message

    class Shifted(kd.Normal):
        pass

    # a subclass inherits its base's rule, until it registers its own
    graph = _trace(lambda m: kd.kl_divergence(Shifted(m, 1.0), kd.Normal(0.0, 1.0)), (2,))
    np.testing.assert_allclose(kiln.backends.numpy.NumpyBackend().compile(graph)(np.array([1.0, 2.0]))[0], [0.5, 2.0])
    kd.register_kl(Shifted, kd.Normal)(lambda p, q: p.loc * 0 + 7.0)
    try:
        graph = _trace(lambda m: kd.kl_divergence(Shifted(m, 1.0), kd.Normal(0.0, 1.0)), (2,))
        np.testing.assert_allclose(kiln.backends.numpy.NumpyBackend().compile(graph)(np.array([1.0, 2.0]))[0], [7.0, 7.0])
    finally:
        del _KL[(Shifted, kd.Normal)]


def test_discrete_distributions_say_how_to_get_gradients_and_missing_methods_are_named():
    with pytest.raises(NotImplementedError, match="REINFORCE"):
        _trace(lambda l: kd.Categorical(logits=l).rsample(), (3,))
    with pytest.raises(NotImplementedError, match="Bernoulli has no cdf"):
        _trace(lambda p: kd.Bernoulli(p).cdf(0.0), (3,))


def test_the_package_is_importable_and_reprs_name_the_parameters():
    import kiln.distributions

    assert kiln.distributions.Normal is kd.Normal
    assert repr(kd.Normal(np.zeros(3), 1.0)) == "Normal(loc: shape (3,), scale: 1.0)"
    assert repr(kd.Independent(kd.Bernoulli(probs=0.5), 0)) == "Independent(Bernoulli(probs: 0.5), 0)"
