"""``kiln.while_loop``: torch.while_loop's eager semantics, gradients through every step, and its checks."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require


def _doubling(lib, x):
    return lib.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, y * 2 + y.sin()), (lib.tensor(0), x))


def test_values_and_gradients_through_the_steps_as_torchs():
    torch = require("torch")
    values = np.array([0.5, -1.0, 2.0])
    mine, theirs = kiln.tensor(values, requires_grad=True), torch.tensor(values, requires_grad=True)
    (i, y), (j, z) = _doubling(kiln, mine), _doubling(torch, theirs)
    assert int(i) == int(j) == 3
    np.testing.assert_allclose(np.array(y.detach()), z.detach().numpy(), rtol=1e-12)
    y.sum().backward(), z.sum().backward()
    np.testing.assert_allclose(np.array(mine.grad), theirs.grad.numpy(), rtol=1e-12)


def test_a_condition_on_the_carried_values_stops_where_torchs_does():
    torch = require("torch")
    step = lambda lib: lib.while_loop(lambda i, y: y.sum() < 100, lambda i, y: (i + 1, y * 3), (lib.tensor(0), lib.ones(2)))  # noqa: E731
    (i, y), (j, z) = step(kiln), step(torch)
    assert int(i) == int(j) and np.array_equal(np.array(y), z.numpy())


@pytest.mark.parametrize("body, message", [
    (lambda i, y: (i + 1,), "returned 1 values for 2 carried inputs"),
    (lambda i, y: (i + 1, y.sum()), r"output 1 is a tensor of shape \[\] .*carried input a tensor of shape \[2\]"),
    (lambda i, y: (i + 1, y.double()), "keep its shape and dtype"),
])
def test_a_body_that_changes_the_carried_structure_is_refused(body, message):
    with pytest.raises(kiln.TraceError, match=message):
        kiln.while_loop(lambda i, y: i < 3, body, (kiln.tensor(0), kiln.ones(2)))


def test_a_condition_known_only_when_a_compiled_step_runs_is_refused_at_the_users_line():
    def run(x):
        return kiln.while_loop(lambda y: y.sum() < 100, lambda y: (y * 3,), (x,))[0]

    with pytest.raises(kiln.TraceError, match="depends on values known only when the compiled function runs"):
        kiln.compile(run)(np.ones(2, np.float32))


def test_a_condition_known_while_tracing_unrolls_in_a_compiled_function():
    def run(x):
        return kiln.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, y * 2), (0, x))[1]

    np.testing.assert_allclose(np.array(kiln.compile(run)(np.ones(2, np.float32))), [8.0, 8.0])
