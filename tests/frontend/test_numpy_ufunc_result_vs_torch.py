"""A NumPy ufunc applied to a tensor gives a tensor, as torch's ``__array_wrap__`` (``torch.from_numpy`` of the result)
does: Stable Diffusion's DDIM sampler computes ``np.sqrt(1. - ddim_alphas)`` and ``np.sqrt(alphas_cumprod.cpu())``
from tensors and then calls ``.clone()`` on them. The result keeps NumPy's dtype; a bool result is uint8, as in torch.
Each case runs on kiln and torch 2.13 and compares type, dtype and values."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch

CASES = {
    "sqrt": lambda lib, t: np.sqrt(t),
    "sqrt of an expression": lambda lib, t: np.sqrt(1.0 - t / 8),
    "log": lambda lib, t: np.log(t),
    "maximum with a number": lambda lib, t: np.maximum(t, 2.0),
    "clip": lambda lib, t: np.clip(t, 1.5, 3.0),
    "two tensors": lambda lib, t: np.add(t, t),
    "sqrt of int64": lambda lib, t: np.sqrt(t.long()),
    "exp of a 0-d tensor": lambda lib, t: np.exp(t[0]),
    "isnan (bool as uint8)": lambda lib, t: np.isnan(t),
    "float64 scalar times sqrt": lambda lib, t: 0.5 * np.sqrt(t.double()),
}


@pytest.mark.parametrize("case", CASES)
def test_numpy_ufunc_of_a_tensor_is_a_tensor_as_torch(case):
    require_torch()
    results = {}
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        result = CASES[case](lib, lib.tensor([1.0, 4.0, 2.5], dtype=lib.float32))
        assert isinstance(result, lib.Tensor), f"{name}: {type(result)}"
        results[name] = (str(result.dtype).split(".")[-1], np.asarray(result))
    assert results["kiln"][0] == results["torch"][0]
    np.testing.assert_array_equal(results["kiln"][1], results["torch"][1])


def test_the_result_is_a_fresh_tensor_with_tensor_methods():
    """DDIM's ``to_torch = lambda x: x.clone().detach().to(torch.float32)`` of ``np.sqrt(alphas_cumprod.cpu())``."""
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        alphas = lib.tensor([0.9, 0.5, 0.25], dtype=lib.float64)
        rooted = np.sqrt(alphas.cpu()).clone().detach().to(lib.float32)
        assert rooted.dtype == lib.float32
        np.testing.assert_allclose(np.asarray(rooted), np.sqrt([0.9, 0.5, 0.25]), rtol=1e-7)
        np.testing.assert_array_equal(np.asarray(alphas), [0.9, 0.5, 0.25])
