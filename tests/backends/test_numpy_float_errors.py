"""Floating-point errors in compiled NumPy code: silent by default (inf and NaN, as PyTorch and JAX give them), or
NumPy's warnings, or an exception at the first one (``NumpyBackend(float_errors=...)``, ``KILN_NUMPY_FLOAT_ERRORS``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from kiln.backends.numpy import NumpyBackend

X = np.array([0.0, -1.0, 4.0])


def log_of(backend: NumpyBackend):
    return backend.compile(kiln.trace(lambda x: x.log(), kiln.TensorSpec((3,), "float64")))


def test_by_default_log_of_zero_and_of_a_negative_is_silent_as_in_torch():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (got,) = log_of(NumpyBackend())(X)
        np.testing.assert_array_equal(got, [-np.inf, np.nan, np.log(4.0)])
        kiln.compile(lambda y, x: y.atan2(x))(np.array([0.0, -0.0]), np.array([0.0, 0.0]))  # atan2 divides 1 by +-0


def test_warn_gives_numpys_warnings_and_raise_stops_at_the_first_error(monkeypatch):
    with pytest.warns(RuntimeWarning) as caught:
        log_of(NumpyBackend(float_errors="warn"))(X)
    assert sorted(str(w.message) for w in caught) == ["divide by zero encountered in log", "invalid value encountered in log"]
    with pytest.raises(FloatingPointError, match="divide by zero encountered in log"):
        log_of(NumpyBackend(float_errors="raise"))(X)
    monkeypatch.setenv("KILN_NUMPY_FLOAT_ERRORS", "raise")
    with pytest.raises(FloatingPointError):
        kiln.compile(lambda x: x.log())(X)


def test_the_callers_errstate_is_left_as_it_was():
    with np.errstate(divide="raise"):
        log_of(NumpyBackend())(X)
        with pytest.raises(FloatingPointError):
            np.log(np.zeros(1))


def test_an_unknown_setting_is_refused():
    with pytest.raises(ValueError, match=r"float_errors must be one of \('ignore', 'warn', 'raise'\), got 'loud'"):
        NumpyBackend(float_errors="loud")
