"""``validate_args`` checks tensors given eagerly as PyTorch's: a ``log_prob`` value outside the support (an action index
past the last class) and a tensor parameter outside its constraint (a negative scale, a Parameter included) raise
``ValueError`` in both libraries (Uniform: a value outside ``[low, high]``, ``low >= high``). kiln checked numbers and arrays only, so ``Categorical(...).log_prob(tensor([3]))``
with 3 classes silently returned a number. Traced values are never checked (their values do not exist yet)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import libraries

LOG_PROB_CASES = {
    "categorical past the last class": (lambda t: t.distributions.Categorical(logits=t.zeros(2, 3)), lambda t: t.tensor([0, 3])),
    "categorical negative": (lambda t: t.distributions.Categorical(probs=t.ones(2, 3) / 3), lambda t: t.tensor([-1, 0])),
    "categorical fraction": (lambda t: t.distributions.Categorical(logits=t.zeros(3)), lambda t: t.tensor(1.5)),
    "bernoulli half": (lambda t: t.distributions.Bernoulli(probs=t.tensor([0.3])), lambda t: t.tensor([0.5])),
    "normal nan": (lambda t: t.distributions.Normal(t.zeros(2), t.ones(2)), lambda t: t.tensor([0.0, float("nan")])),
    "uniform above high": (lambda t: t.distributions.Uniform(t.zeros(1), t.ones(1)), lambda t: t.tensor([1.5])),
    "exponential negative": (lambda t: t.distributions.Exponential(t.ones(1)), lambda t: t.tensor([-1.0])),
    "lognormal zero": (lambda t: t.distributions.LogNormal(t.zeros(1), t.ones(1)), lambda t: t.tensor([0.0])),
}
PARAMETER_CASES = {
    "normal negative scale": lambda t: t.distributions.Normal(t.zeros(2), t.tensor([1.0, -1.0])),
    "normal scale Parameter": lambda t: t.distributions.Normal(t.zeros(1), t.nn.Parameter(t.tensor([-0.5]))),
    "categorical negative probs": lambda t: t.distributions.Categorical(probs=t.tensor([0.5, -0.1, 0.6])),
    "bernoulli probs above one": lambda t: t.distributions.Bernoulli(probs=t.tensor([1.5])),
    "uniform low above high": lambda t: t.distributions.Uniform(t.ones(1), t.zeros(1)),
}


@pytest.mark.parametrize("case", list(LOG_PROB_CASES))
def test_log_prob_of_a_tensor_outside_the_support_raises_as_torch(case, float64_default):
    make, value = LOG_PROB_CASES[case]
    for name in ("torch", "kiln"):
        lib, _, _ = libraries(name)
        distribution = make(lib)
        with pytest.raises(ValueError, match="support" if lib is not kiln else r"the value given to log_prob .* but found"):
            distribution.log_prob(value(lib))


@pytest.mark.parametrize("case", list(PARAMETER_CASES))
def test_a_tensor_parameter_outside_its_constraint_raises_as_torch(case, float64_default):
    for name in ("torch", "kiln"):
        lib, _, _ = libraries(name)
        with pytest.raises(ValueError, match="invalid values|low >= high"):
            PARAMETER_CASES[case](lib)


def test_validate_args_false_and_valid_tensors_as_torch(float64_default):
    """Unchecked with ``validate_args=False``; valid tensors (float actions, as CleanRL's buffers hold them) give
    torch's log-probs."""
    records = []
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        logits = lib.tensor(np.random.default_rng(0).standard_normal((4, 3)))
        categorical = lib.distributions.Categorical(logits=logits)
        records.append(categorical.log_prob(lib.tensor([0.0, 2.0, 1.0, 1.0])).numpy())
        lib.distributions.Normal(lib.zeros(1), lib.tensor([-1.0]), validate_args=False)
        lib.distributions.Categorical(logits=logits, validate_args=False).log_prob(lib.tensor([0, 1, 2, 1]))
    np.testing.assert_allclose(records[0], records[1], rtol=1e-12)


def test_a_traced_value_is_not_checked(float64_default):
    """Inside a compiled function the value has no values yet: it computes, unchecked, as torch.compile's does."""
    categorical = kiln.distributions.Categorical(logits=kiln.zeros(3))
    result = kiln.compile(lambda action: categorical.log_prob(action))(kiln.tensor([0, 2]))
    np.testing.assert_allclose(np.asarray(result), np.log([1 / 3, 1 / 3]), rtol=1e-12)
