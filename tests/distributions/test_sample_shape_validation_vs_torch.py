"""``log_prob`` (and ``cdf``) of a value whose shape does not fit the distribution is torch's ``ValueError`` with its
words (``_validate_sample``: the right-most sizes must equal the event shape, the rest broadcast with the batch
shape); kiln raised a ``TraceError`` (a RuntimeError) from the subtraction, which ``except ValueError`` missed. Shapes
that broadcast still give torch's values; ``validate_args=False`` skips the check, as torch's."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

CASES = [
    ("normal", (2,), (3,), "Value is not broadcastable with batch_shape+event_shape"),
    ("normal", (2, 3), (2, 2), "Value is not broadcastable with batch_shape+event_shape"),
    ("independent", (2, 3), (4,), "(right-most size|not broadcastable)"),  # torch's base Normal answers first
    ("mvn", (3,), (2,), "The right-most size of value must match event_shape"),
    ("mvn", (2, 3), (4, 3), "Value is not broadcastable with batch_shape+event_shape"),
]
FITTING = [("normal", (2,), (5, 2)), ("normal", (2,), (4, 1)), ("normal", (2, 1), (3,)), ("independent", (2, 3), (5, 1, 3)),
           ("mvn", (3,), (4, 3)), ("mvn", (2, 3), (1, 3))]


def distribution(lib, family, shape):
    loc, scale = lib.zeros(shape, dtype=lib.float64), lib.full(shape, 2.0, dtype=lib.float64)
    if family == "normal":
        return lib.distributions.Normal(loc, scale)
    if family == "independent":
        return lib.distributions.Independent(lib.distributions.Normal(loc, scale), 1)
    return lib.distributions.MultivariateNormal(loc, scale_tril=lib.diag_embed(scale))


@pytest.mark.parametrize("family, shape, value_shape, words", CASES)
def test_a_value_of_the_wrong_shape_is_torch_value_error(family, shape, value_shape, words):
    torch = require_torch()
    for lib in (torch, kiln):
        with pytest.raises(ValueError, match=words.replace("+", r"\+")):
            distribution(lib, family, shape).log_prob(lib.zeros(value_shape, dtype=lib.float64))


@pytest.mark.parametrize("family, shape, value_shape", FITTING)
def test_a_value_that_broadcasts_gives_torch_log_prob(family, shape, value_shape):
    torch = require_torch()
    value = np.random.default_rng(0).standard_normal(value_shape)
    ours, theirs = (distribution(lib, family, shape).log_prob(lib.tensor(value)) for lib in (kiln, torch))
    assert tuple(ours.shape) == tuple(theirs.shape)
    np.testing.assert_allclose(np.array(ours.numpy()), theirs.numpy(), rtol=1e-12, atol=1e-12)


def test_the_check_holds_in_a_compiled_function_with_a_symbolic_batch():
    torch = require_torch()
    normal = lambda lib: lib.distributions.Normal(lib.zeros(2, dtype=lib.float64), lib.ones(2, dtype=lib.float64))  # noqa: E731
    log_prob = kiln.compile(lambda x: normal(kiln).log_prob(x).sum(-1), fullgraph=True)
    for rows in (3, 5):
        value = np.random.default_rng(rows).standard_normal((rows, 2))
        np.testing.assert_allclose(np.asarray(log_prob(kiln.tensor(value))),
                                   normal(torch).log_prob(torch.tensor(value)).sum(-1).numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="Value is not broadcastable"):
        kiln.compile(lambda x: normal(kiln).log_prob(x), fullgraph=True)(kiln.zeros(4, 3, dtype=kiln.float64))


def test_validate_args_false_skips_the_check_as_torch():
    torch = require_torch()
    for lib in (torch, kiln):
        normal = lib.distributions.Normal(lib.zeros(2), lib.ones(2), validate_args=False)
        with pytest.raises(RuntimeError):  # the arithmetic's own error, no ValueError
            normal.log_prob(lib.zeros(3))
