"""``Gamma``, ``Chi2``, ``Beta``, ``Poisson`` and ``Binomial`` beyond their formulas (those are in
``test_distributions_vs_torch.py``): draws with torch's moments, reproducible under ``kiln.manual_seed``; the refusals
torch makes (``validate_args``, inhomogeneous counts, KL to a Binomial with more trials) and the ones kiln adds (a
Poisson or Binomial sampler inside a compiled function), each saying what to do; ``Gamma.cdf`` as torch's; ``Binomial.enumerate_support``
and the capability flags as torch's."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import libraries

DRAWS = 20000


def _family(torch, name):
    """Each family with a 2-wide batch, parameters chosen to cover small and large shapes/means."""
    distributions = torch.distributions
    return {
        "gamma": lambda: distributions.Gamma(torch.tensor([0.5, 4.0]), torch.tensor([2.0, 0.5])),
        "chi2": lambda: distributions.Chi2(torch.tensor([1.0, 7.0])),
        "beta": lambda: distributions.Beta(torch.tensor([0.5, 3.0]), torch.tensor([2.0, 1.5])),
        "poisson": lambda: distributions.Poisson(torch.tensor([0.3, 25.0])),
        "binomial": lambda: distributions.Binomial(torch.tensor([5.0, 40.0]), torch.tensor([0.2, 0.9])),
    }[name]()


@pytest.mark.parametrize("name", ["gamma", "chi2", "beta", "poisson", "binomial"])
def test_draws_have_torchs_moments_and_repeat_under_the_seed(float64_default, name):
    kiln.manual_seed(11)
    draws = _family(kiln, name).sample((DRAWS,))
    kiln.manual_seed(11)
    again = _family(kiln, name).sample(kiln.Size([DRAWS]))
    assert tuple(draws.shape) == (DRAWS, 2) and draws.dtype == kiln.float64 and not draws.requires_grad
    values = draws.numpy()
    np.testing.assert_array_equal(values, again.numpy())
    torch = libraries("torch")[0]
    expected = _family(torch, name)
    mean, variance = expected.mean.numpy(), expected.variance.numpy()
    standard_error = np.sqrt(variance / DRAWS)
    assert np.all(np.abs(values.mean(0) - mean) < 6 * standard_error), (values.mean(0), mean)
    np.testing.assert_allclose(values.var(0), variance, rtol=0.08)
    assert np.all(_family(kiln, name).support.check(values))


def test_a_fresh_draw_differs_from_the_last():
    gamma = kiln.distributions.Gamma(kiln.tensor(2.0), kiln.tensor(1.0))
    assert not np.array_equal(gamma.sample((5,)).numpy(), gamma.sample((5,)).numpy())


@pytest.mark.parametrize("make", [lambda kd, x: kd.Poisson(x), lambda kd, x: kd.Binomial(10, logits=x)],
                         ids=["poisson", "binomial"])
def test_counting_samplers_inside_a_compiled_function_say_what_to_do(make):
    def draw(parameter):
        return make(kiln.distributions, parameter).sample((3,))

    with pytest.raises(TraceError, match="draw it outside the compiled function") as error:
        kiln.compile(draw, fullgraph=True)(kiln.ones(2))
    assert "test_gamma_beta_counts_sampling.py" in str(error.value)


def test_log_prob_compiles_and_matches_eager(float64_default):
    def score(rate, counts):
        return kiln.distributions.Poisson(rate).log_prob(counts) + kiln.distributions.Gamma(rate, 2.0).log_prob(rate)

    rate, counts = kiln.tensor([0.5, 3.0, 9.0]), kiln.tensor([0.0, 2.0, 11.0])
    np.testing.assert_allclose(kiln.compile(score)(rate, counts).numpy(), score(rate, counts).numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", ["Gamma", "Chi2"])
def test_cdf_values_and_gradients_in_value_and_rate_as_torch(float64_default, name):
    results = {}
    for library in ("kiln", "torch"):
        torch = libraries(library)[0]
        rate = torch.tensor([2.0, 1.0, 0.5], requires_grad=True)
        value = torch.tensor([0.3, 2.0, 85.0], requires_grad=True)
        made = (torch.distributions.Gamma(torch.tensor([0.5, 3.0, 40.0]), rate) if name == "Gamma"
                else torch.distributions.Chi2(torch.tensor([1.0, 6.0, 80.0])))
        cdf = made.cdf(value)
        cdf.sum().backward()
        results[library] = [cdf.detach().numpy(), value.grad.numpy()] + ([rate.grad.numpy()] if name == "Gamma" else [])
    for ours, theirs in zip(results["kiln"], results["torch"]):
        # torch's gammainc(40, 42.5) is 4e-10 relative from mpmath's (its asymptotic series); kiln's within 2e-15
        np.testing.assert_allclose(ours, theirs, rtol=1e-9)


@pytest.mark.parametrize("name", ["kiln", "torch"])
@pytest.mark.parametrize("make", [
    lambda torch: torch.distributions.Gamma(torch.tensor(-1.0), torch.tensor(1.0)),
    lambda torch: torch.distributions.Gamma(torch.tensor(1.0), torch.tensor(1.0)).log_prob(torch.tensor(-0.5)),
    lambda torch: torch.distributions.Beta(torch.tensor(0.0), torch.tensor(1.0)),
    lambda torch: torch.distributions.Beta(torch.tensor(1.0), torch.tensor(1.0)).log_prob(torch.tensor(1.5)),
    lambda torch: torch.distributions.Chi2(torch.tensor(-2.0)),
    lambda torch: torch.distributions.Poisson(torch.tensor([1.0, -0.5])),
    lambda torch: torch.distributions.Poisson(torch.tensor(1.0)).log_prob(torch.tensor(1.5)),
    lambda torch: torch.distributions.Binomial(torch.tensor(2.5), torch.tensor(0.5)),
    lambda torch: torch.distributions.Binomial(torch.tensor(-1.0), torch.tensor(0.5)),
    lambda torch: torch.distributions.Binomial(3, torch.tensor(1.5)),
    lambda torch: torch.distributions.Binomial(3, torch.tensor(0.5)).log_prob(torch.tensor(4.0)),
    lambda torch: torch.distributions.Binomial(3, torch.tensor(0.5), torch.tensor(0.0)),
], ids=["negative concentration", "negative gamma value", "zero beta concentration", "beta value above 1",
        "negative df", "negative rate", "fractional count", "fractional total_count", "negative total_count",
        "probs above 1", "count above total_count", "probs and logits"])
def test_bad_parameters_and_values_are_refused_as_torch(name, make):
    torch = libraries(name)[0]
    with pytest.raises(ValueError):
        make(torch)


@pytest.mark.parametrize("expand", [True, False])
def test_binomial_enumerate_support_as_torch(float64_default, expand):
    theirs = {}
    for name in ("kiln", "torch"):
        torch = libraries(name)[0]
        binomial = torch.distributions.Binomial(4, torch.tensor([[0.2, 0.7, 0.5]]))
        support = binomial.enumerate_support(expand=expand)
        theirs[name] = (support.numpy(), tuple(support.shape), binomial.entropy().numpy())
    ours = theirs.pop("kiln")
    assert ours[1] == theirs["torch"][1]
    np.testing.assert_array_equal(ours[0], theirs["torch"][0])
    np.testing.assert_allclose(ours[2], theirs["torch"][2], rtol=1e-12)


@pytest.mark.parametrize("method", ["entropy", "enumerate_support"])
def test_binomial_sums_need_one_concrete_total_count(method):
    inhomogeneous = kiln.distributions.Binomial(kiln.tensor([2.0, 5.0]), kiln.tensor([0.5, 0.5]))
    with pytest.raises(NotImplementedError, match="Inhomogeneous total count"):
        getattr(inhomogeneous, method)()

    def traced(count):
        return getattr(kiln.distributions.Binomial(count, probs=0.5), method)()

    with pytest.raises(NotImplementedError, match="concrete total_count"):
        kiln.compile(traced, fullgraph=True)(kiln.tensor(3.0))


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_kl_to_a_binomial_with_more_trials_is_refused_as_torch(name):
    torch = libraries(name)[0]
    p = torch.distributions.Binomial(3, torch.tensor(0.5))
    q = torch.distributions.Binomial(5, torch.tensor(0.5))
    with pytest.raises(NotImplementedError):
        torch.distributions.kl_divergence(p, q)
    assert float(torch.distributions.kl_divergence(q, p)) == float("inf")


def _families(torch):
    d = torch.distributions
    return [d.Gamma(torch.ones(2, 3), 1.0), d.Chi2(torch.ones(3)), d.Beta(torch.ones(2, 1), torch.ones(3)),
            d.Poisson(torch.ones(4)), d.Binomial(torch.ones(2, 1) * 3, torch.full((3,), 0.5))]


def test_capabilities_and_shapes_as_torch():
    def describe(torch):
        return [(type(f).__name__, f.has_rsample, f.has_enumerate_support, tuple(f.batch_shape), tuple(f.event_shape))
                for f in _families(torch)]

    assert describe(kiln) == describe(libraries("torch")[0])
