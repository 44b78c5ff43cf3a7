"""Python numbers in traced ops take the dtype of the tensors they meet, a float tensor's over a bool mask's."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn.functional as F


def test_where_with_a_number_takes_the_values_dtype_not_the_masks():
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    where = kiln.compile(lambda t: F.where(t > 0, t, 0.5))
    np.testing.assert_array_equal(where(x), np.array([[0.5, 2.0], [3.0, 0.5]], np.float32))
    assert where(x).dtype == np.float32
    grad = kiln.grad(lambda t: F.where(t > 0, t * t, -1.5).sum())(x.astype(np.float64))
    np.testing.assert_array_equal(grad, np.where(x > 0, 2 * x, 0.0))


def test_dividing_by_a_symbolic_batch_size_says_what_to_do_instead():
    with pytest.raises(kiln.TraceError, match=r"'N' is a symbolic dim .*\(loss.mean\(\) instead of loss.sum\(\) / x.shape\[0\]"):
        kiln.trace(lambda x: x.sum() / x.shape[0], kiln.TensorSpec(("N", 2), "f64"))
    assert kiln.compile(lambda x: x.sum() / x.shape[0], batch_dim=None)(np.ones((3, 2))) == 2.0
    compiled = kiln.compile(lambda x: x.sum() / x.shape[0])  # traces with static shapes instead, one per batch size
    assert compiled(np.ones((3, 2))) == 2.0 and compiled(np.ones((5, 2))) == 2.0
