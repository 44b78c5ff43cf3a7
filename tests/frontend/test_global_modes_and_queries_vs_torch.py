"""torch's process-wide switches (``use_deterministic_algorithms``, the deterministic debug mode, ``set_warn_always``,
``set_flush_denormal``, ``set_default_tensor_type``) and small tensor queries (``typename``, ``empty_strided``,
``empty_permuted``, ``is_conj``...) answer as torch's: the same values read back, the same errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch


@pytest.fixture
def both():
    """kiln and torch, each with its switches restored afterwards."""
    torch = require_torch()
    saved = [(lib, lib.are_deterministic_algorithms_enabled(), lib.is_deterministic_algorithms_warn_only_enabled(),
              lib.is_warn_always_enabled(), lib.get_default_dtype()) for lib in (kiln, torch)]
    yield kiln, torch
    for lib, deterministic, warn_only, warn_always, dtype in saved:
        lib.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        lib.set_warn_always(warn_always)
        lib.set_default_dtype(dtype)


def _modes(lib):
    return (lib.are_deterministic_algorithms_enabled(), lib.is_deterministic_algorithms_warn_only_enabled(),
            lib.get_deterministic_debug_mode())


def test_deterministic_switches_read_back_as_torchs(both):
    steps = [lambda lib: lib.use_deterministic_algorithms(True), lambda lib: lib.use_deterministic_algorithms(True, warn_only=True),
             lambda lib: lib.set_deterministic_debug_mode("error"), lambda lib: lib.set_deterministic_debug_mode("warn"),
             lambda lib: lib.set_deterministic_debug_mode(0), lambda lib: lib.use_deterministic_algorithms(False, warn_only=True)]
    for step in steps:
        seen = []
        for lib in both:
            step(lib)
            seen.append(_modes(lib))
        assert seen[0] == seen[1]


def test_bad_switch_values_are_refused_as_torch(both):
    for lib in both:
        with pytest.raises(RuntimeError, match="expected one of `default`, `warn`, `error`, but got loud"):
            lib.set_deterministic_debug_mode("loud")
        with pytest.raises(TypeError, match="argument 'mode' \\(position 1\\) must be bool, not str"):
            lib.use_deterministic_algorithms("yes")
        lib.set_warn_always(True)
        assert lib.is_warn_always_enabled()


def test_default_tensor_type_sets_the_float_default_as_torch(both):
    for lib in both:
        with warnings.catch_warnings(record=True) as caught:  # torch warns once per process, kiln at each call
            warnings.simplefilter("always")
            lib.set_default_tensor_type(lib.DoubleTensor)
        assert lib is not kiln or any("deprecated" in str(w.message) for w in caught)
        assert lib.tensor([1.5]).dtype == lib.float64
        with warnings.catch_warnings():  # torch warns once per process
            warnings.simplefilter("ignore")
            with pytest.raises(TypeError, match="only floating-point types are supported as the default type"):
                lib.set_default_tensor_type("torch.LongTensor")


def test_flush_denormal_says_it_is_not_supported():
    assert kiln.set_flush_denormal(True) is False  # torch's answer where unsupported; NumPy has no such switch
    assert np.float32(1e-40) * np.float32(1) != 0  # denormals kept


def test_tensor_queries_as_torchs():
    torch = require_torch()
    for dtype in ("float32", "float64", "int64", "bool", "bfloat16"):
        assert kiln.typename(kiln.ones(2, dtype=getattr(kiln, dtype))) == torch.typename(torch.ones(2, dtype=getattr(torch, dtype)))
    assert kiln.typename(3) == torch.typename(3) == "int" and kiln.typename([]) == torch.typename([])
    for lib in (kiln, torch):
        x = lib.ones(2, 3)
        assert tuple(lib.empty_strided((2, 3), (1, 2)).shape) == (2, 3) == tuple(lib.empty_permuted((2, 3), (1, 0)).shape)
        assert (lib.is_conj(x), lib.is_neg(x), lib.is_inference(x), lib.get_device(x)) == (False, False, False, -1)
        assert lib.resolve_neg(x) is x
        assert (x.is_conj(), x.is_neg(), x.is_inference(), x.resolve_neg() is x) == (False, False, False, True)
