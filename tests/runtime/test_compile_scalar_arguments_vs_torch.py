"""A ``kiln.compile``d function called with a Python number or a 0-d tensor beside its batch (a guidance scale, a
temperature, a timestep), as ``torch.compile``'d functions are: the number is an input of the graph without a batch
dim, so each call's value is used (not the first one's, baked in) and one variant serves them all.

Such calls raised ``InputError: batch input 1 is a 0-d array, which has no batch dim 0`` (found by the DDPM porting
probe's ``kiln.compile(diffusion.p_sample)(x, t_index, noise)``). Values and dtypes vs torch 2.13 eager.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch


def guided(lib, conditional, unconditional, scale):
    return unconditional + scale * (conditional - unconditional) + lib.tanh(conditional) / (scale + 1)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_python_number_argument_is_fed_at_each_call(dtype):
    torch = require_torch()
    rng = np.random.default_rng(0)
    run = kiln.compile(lambda a, b, scale: guided(kiln, a, b, scale))
    for scale, rows in ((2.0, 4), (7.5, 4), (0.5, 3)):
        a, b = rng.standard_normal((2, rows, 5)).astype(dtype)
        ours = run(kiln.tensor(a), kiln.tensor(b), scale)
        theirs = guided(torch, torch.tensor(a), torch.tensor(b), scale)
        assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1] == dtype
        np.testing.assert_allclose(np.asarray(ours), theirs.numpy(), rtol=1e-6 if dtype == "float32" else 1e-13)
    assert len(run.variants) == 1


def test_a_0d_tensor_argument_beside_the_batch():
    torch = require_torch()
    logits = np.random.default_rng(1).standard_normal((6, 4))
    run = kiln.compile(lambda x, temperature: (x / temperature).softmax(-1))
    for temperature in (0.5, 2.0):
        ours = run(kiln.tensor(logits), kiln.tensor(temperature))
        np.testing.assert_allclose(np.asarray(ours), (torch.tensor(logits) / temperature).softmax(-1).numpy(), rtol=1e-13)
    assert len(run.variants) == 1


@pytest.mark.parametrize("fill", [3, 2.5, True], ids=["int", "float", "bool"])
def test_full_of_a_number_argument_has_torchs_dtype(fill, float64_default):
    """``torch.full((n,), t)`` with ``t`` a compiled function's argument (a traced 0-d tensor: it raised a
    TypeError): int64 for an int, the default float dtype for a float, bool for a bool, as PyTorch's."""
    torch = float64_default
    x = np.arange(4.0)

    def timesteps(lib, x, t):
        return lib.full((x.shape[0],), t), lib.full((2, 3), t, dtype=lib.float32)

    run = kiln.compile(lambda x, t: timesteps(kiln, x, t))
    for value in (fill, type(fill)(0)):
        for ours, theirs in zip(run(kiln.tensor(x), value), timesteps(torch, torch.tensor(x), value)):
            assert str(ours.dtype).split(".")[-1] == str(theirs.dtype).split(".")[-1]
            np.testing.assert_array_equal(np.asarray(ours), theirs.numpy())
