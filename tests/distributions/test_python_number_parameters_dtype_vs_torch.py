"""A distribution built from Python numbers takes the default float dtype, as torch's ``broadcast_all``:
VoxelMorph's ``nn.Parameter(Normal(0, 1e-5).sample(weight.shape))`` under ``set_default_dtype(float64)`` made a float32
weight in kiln (conv2d then refused the float64 input), a float64 one in torch 2.13."""

from __future__ import annotations

import pytest

import kiln
from oracles import require_torch

BUILDERS = {"Normal": lambda lib: lib.distributions.Normal(0, 1e-1), "Uniform": lambda lib: lib.distributions.Uniform(0, 1),
            "Exponential": lambda lib: lib.distributions.Exponential(2.0), "Laplace": lambda lib: lib.distributions.Laplace(0., 1.)}


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("default", ["float32", "float64"])
def test_python_number_parameters_take_the_default_dtype(name, default):
    torch = require_torch()
    saved = kiln.get_default_dtype(), torch.get_default_dtype()
    kiln.set_default_dtype(getattr(kiln, default))
    torch.set_default_dtype(getattr(torch, default))
    try:
        ours, theirs = BUILDERS[name](kiln), BUILDERS[name](torch)
        assert theirs.sample((2, 3)).dtype == getattr(torch, default) == theirs.mean.dtype
        assert ours.sample((2, 3)).dtype == getattr(kiln, default) == ours.mean.dtype
        assert ours.log_prob(kiln.tensor(0.5)).dtype == getattr(kiln, default)
    finally:
        kiln.set_default_dtype(saved[0])
        torch.set_default_dtype(saved[1])
