"""Every error a traced function raises names the user's line, also the checks that layers and functions make
themselves (``raise TraceError(...)`` deep in kiln gets the line on its way out of the trace)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from kiln.compiler.errors import TraceError


def bad_conv(x, w):
    return F.conv1d(x, w)  # the line the error must name


def bad_attention(q):
    return F.scaled_dot_product_attention(q, q, q, dropout_p=1.5)  # a probability past 1


def bad_dim(x):
    return x.var(dim=5)


@pytest.mark.parametrize(("fn", "specs", "line", "what"), [
    (bad_conv, [(2, 3, 4, 5), (4, 3, 3)], "return F.conv1d(x, w)", "Expected 2D (unbatched) or 3D (batched) input to conv1d"),
    (bad_attention, [(2, 4, 8)], "return F.scaled_dot_product_attention(q, q, q, dropout_p=1.5)", "dropout_p must be in [0, 1)"),
    (bad_dim, [(2, 3)], "return x.var(dim=5)", "var: dim 5 does not fit"),
])
def test_the_error_names_the_users_line_once(fn, specs, line, what):
    with pytest.raises(TraceError) as caught:
        kiln.trace(fn, *[kiln.TensorSpec(shape) for shape in specs])
    message = str(caught.value)
    assert "test_trace_error_locations.py:" in message and line in message and what in message
    assert message.count("test_trace_error_locations.py:") == 1  # located once, not again on the way out


def test_a_compiled_function_reports_the_same():
    with pytest.raises(TraceError, match=r"return F\.conv1d\(x, w\)"):
        kiln.compile(bad_conv)(np.zeros((2, 3, 4, 5), np.float32), np.zeros((4, 3, 3), np.float32))
