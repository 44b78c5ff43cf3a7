"""Python numbers in traced ops take the dtype of the tensors they meet, a float tensor's over a bool mask's."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn.functional as F


def test_where_with_a_number_takes_the_values_dtype_not_the_masks():
    x = np.array([[-1.0, 2.0], [3.0, -4.0]], np.float32)
    where = kiln.compile(lambda t: F.where(t > 0, t, 0.5))
    np.testing.assert_array_equal(where(x), np.array([[0.5, 2.0], [3.0, 0.5]], np.float32))
    assert where(x).dtype == np.float32
    grad = kiln.grad(lambda t: F.where(t > 0, t * t, -1.5).sum())(x.astype(np.float64))
    np.testing.assert_array_equal(grad, np.where(x > 0, 2 * x, 0.0))
