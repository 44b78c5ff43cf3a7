"""PyTorch's deprecated ``addcmul_(value, tensor1, tensor2)`` / ``addcdiv_(value, tensor1, tensor2)`` overloads (the
number first), which LiyuanLucasLiu's RAdam calls (``exp_avg_sq.mul_(beta2).addcmul_(1 - beta2, grad, grad)``,
``p_data_fp32.addcdiv_(-step_size * lr, exp_avg, denom)``; HashNeRF ships it): kiln took them as a third positional
argument and raised. Now as torch: the same values, with a deprecation warning. Out of place and in place, vs torch
2.13 float64.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch


def _updated(lib):
    rng = np.random.default_rng(0)
    p, grad, denom = (lib.tensor(rng.standard_normal(5)) for _ in range(3))
    denom = denom.abs() + 0.5
    with warnings.catch_warnings(record=True) as caught:  # torch warns once a process
        warnings.simplefilter("always")
        p.mul_(0.99).addcmul_(1 - 0.99, grad, grad)
        p.addcdiv_(-0.3, grad, denom)
        q = p.addcmul(2.0, grad, denom).addcdiv(0.5, p, denom)
    assert lib is not kiln or len([w for w in caught if "deprecated" in str(w.message)]) == 4
    return np.array(p.numpy()), np.array(q.numpy())


def test_value_first_addcmul_and_addcdiv_as_torch(float64_default):
    for ours, theirs in zip(_updated(kiln), _updated(float64_default)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-15, atol=1e-15)


def test_two_numbers_are_refused():
    with pytest.raises(Exception, match="addcmul takes"):
        kiln.ones(2).addcmul(1.0, kiln.ones(2), kiln.ones(2), value=2.0)
