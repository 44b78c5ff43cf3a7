"""Arguments outside a distribution's domain, against torch 2.13 (float64), with ``validate_args`` None, True, False:
``icdf`` checks nothing in torch (``Normal(0, 1).icdf(1.5)`` is NaN, ``icdf(1)`` inf, ``Uniform``'s and
``Exponential``'s extrapolate), eagerly and traced; ``cdf`` and ``log_prob`` check the value against the support when
validating (a ``ValueError``; ``Uniform.cdf`` too, which otherwise clamps), else give the formula's value."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import kiln
from oracles import require_torch

FAMILIES = {
    "Normal": lambda D, v: D.Normal(0.5, 2.0, validate_args=v),
    "Uniform": lambda D, v: D.Uniform(1.0, 3.0, validate_args=v),
    "Laplace": lambda D, v: D.Laplace(0.5, 2.0, validate_args=v),
    "Exponential": lambda D, v: D.Exponential(2.0, validate_args=v),
    "LogNormal": lambda D, v: D.LogNormal(0.5, 2.0, validate_args=v),
}
PROBABILITIES = np.array([1.5, -0.2, 0.0, 1.0, np.nan, 0.3])
VALIDATE = [None, True, False]


def _family(lib: Any, name: str, validate: bool | None) -> Any:
    return FAMILIES[name](lib.distributions, validate)


def _outcome(call: Any) -> Any:
    """The values as an array, or the kind of error raised (a ``ValueError`` as torch's, whatever kiln's own class)."""
    try:
        return np.asarray(call().detach().numpy())
    except ValueError:
        return ValueError


class _float64:
    """Both libraries' default dtype float64 inside the block."""

    def __init__(self, torch: Any):
        self.torch = torch

    def __enter__(self) -> None:
        self.saved = kiln.get_default_dtype(), self.torch.get_default_dtype()
        kiln.set_default_dtype(kiln.float64)
        self.torch.set_default_dtype(self.torch.float64)

    def __exit__(self, *exc: Any) -> None:
        kiln.set_default_dtype(self.saved[0])
        self.torch.set_default_dtype(self.saved[1])


@pytest.mark.parametrize("validate", VALIDATE)
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_icdf_checks_nothing_as_torchs(name, validate):
    torch = require_torch()
    with _float64(torch):
        expected = _family(torch, name, validate).icdf(torch.tensor(PROBABILITIES)).numpy()
        ours = _family(kiln, name, validate)
        eager = ours.icdf(kiln.tensor(PROBABILITIES)).numpy()
        traced = kiln.compile(lambda p: ours.icdf(p), batch_dim=None)(PROBABILITIES) if validate is None else eager
        scalar = _family(kiln, name, validate).icdf(1.5).numpy()
    for got in (eager, np.asarray(traced)):
        np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)
    np.testing.assert_allclose(scalar, expected[0], rtol=1e-12, equal_nan=True)
    assert np.isnan(expected[4]) and (name != "Normal" or np.isnan(expected[0]))


VALUES = {  # (family, method, value): outside the support, or inside
    "Uniform.cdf below": ("Uniform", "cdf", 0.5), "Uniform.cdf above": ("Uniform", "cdf", 3.5), "Uniform.cdf inside": ("Uniform", "cdf", 2.0),
    "Uniform.log_prob above": ("Uniform", "log_prob", 3.5), "Exponential.cdf negative": ("Exponential", "cdf", -1.0),
    "Exponential.log_prob negative": ("Exponential", "log_prob", -1.0), "Laplace.cdf nan": ("Laplace", "cdf", np.nan),
    "Normal.log_prob nan": ("Normal", "log_prob", np.nan), "Normal.cdf far": ("Normal", "cdf", 40.0),
    "LogNormal.cdf negative": ("LogNormal", "cdf", -1.0), "LogNormal.log_prob zero": ("LogNormal", "log_prob", 0.0),
}


@pytest.mark.parametrize("validate", VALIDATE)
@pytest.mark.parametrize("case", sorted(VALUES))
def test_cdf_and_log_prob_outside_the_support_as_torchs(case, validate):
    torch = require_torch()
    name, method, value = VALUES[case]
    with _float64(torch):
        expected = _outcome(lambda: getattr(_family(torch, name, validate), method)(torch.tensor(value)))
        got = _outcome(lambda: getattr(_family(kiln, name, validate), method)(kiln.tensor(value)))
    if expected is ValueError or got is ValueError:
        assert got is expected, f"kiln: {got}, torch: {expected}"
        return
    np.testing.assert_allclose(got, expected, rtol=1e-12, equal_nan=True)
