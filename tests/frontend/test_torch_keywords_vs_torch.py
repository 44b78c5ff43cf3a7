"""PyTorch takes NumPy's keyword names for ``dim`` and ``keepdim`` on its native functions and methods
(``x.sum(axis=-1)``, ``x.mean(axis=0, keepdims=True)``, ``torch.cat(xs, axis=1)``): Spinning Up's SAC writes
``pi_distribution.log_prob(pi_action).sum(axis=-1)``, which kiln refused ("unexpected keyword argument 'axis'").
It also takes the sizes kiln's methods take as ``*dims`` by one keyword (``x.permute(dims=(1, 0))``,
``torch.flip(x, dims=[1])``, ``x.reshape(shape=...)``). Values, dtypes and gradients vs torch 2.13, eagerly and
compiled (frontend/torch_keywords.py)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

CALLS = [
    lambda lib, x: x.sum(axis=-1),
    lambda lib, x: x.sum(axis=1, keepdims=True),
    lambda lib, x: x.mean(axis=0, keepdims=True),
    lambda lib, x: lib.sum(x, axis=1),
    lambda lib, x: lib.mean(x, axis=(0, 1)),
    lambda lib, x: x.max(axis=1).values,
    lambda lib, x: x.std(axis=1, keepdims=True),
    lambda lib, x: x.var(axis=0),
    lambda lib, x: x.prod(axis=1),
    lambda lib, x: x.logsumexp(axis=-1, keepdims=True),
    lambda lib, x: x.softmax(axis=1),
    lambda lib, x: x.cumsum(axis=1),
    lambda lib, x: x.amax(axis=0),
    lambda lib, x: x.unsqueeze(axis=0),
    lambda lib, x: lib.cat([x, 2 * x], axis=1),
    lambda lib, x: lib.stack([x, x * x], axis=-1),
    lambda lib, x: x.flip(dims=(0,)),
    lambda lib, x: lib.flip(x, dims=[1]),
    lambda lib, x: x.permute(dims=(1, 0)),
    lambda lib, x: lib.permute(x, dims=(1, 0)),
    lambda lib, x: x.reshape(shape=(2, 6)),
    lambda lib, x: lib.reshape(x, shape=(-1,)),
    lambda lib, x: x.tile(dims=(2,)),
    lambda lib, x: x.view(size=(4, 3)),
    lambda lib, x: x.expand(size=(2, 3, 4)),
    lambda lib, x: x.repeat(repeats=(1, 2)),
    lambda lib, x: lib.cat(lib.split(x, split_size_or_sections=2, dim=-1), dim=0),  # torch/functional.py's names (xLSTM)
    lambda lib, x: lib.split(tensor=x, split_size_or_sections=[1, 2], dim=0)[1],
]


def run(lib, call, compiled=False):
    x = lib.tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    function = (lambda t: call(lib, t)) if not compiled else kiln.compile(lambda t: call(lib, t), fullgraph=True)
    out = function(x)
    (out * out).sum().backward()
    return np.array(out.detach().numpy()), str(out.dtype).split(".")[-1], np.array(x.grad.numpy())


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("index", range(len(CALLS)))
def test_numpy_keywords_as_torch(index, compiled):
    torch = require_torch()
    (ours, our_dtype, our_grad), (theirs, their_dtype, their_grad) = (
        run(kiln, CALLS[index], compiled), run(torch, CALLS[index]))
    assert our_dtype == their_dtype and ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(our_grad, their_grad, rtol=1e-12, atol=1e-12)


def test_a_dim_given_twice_is_a_type_error_as_torch():
    torch = require_torch()
    for lib in (torch, kiln):
        with pytest.raises(TypeError):
            lib.ones(2, 3).sum(1, axis=1)
    with pytest.raises(TypeError, match="'dim' twice, also as 'axis'"):
        kiln.ones(2, 3).sum(dim=1, axis=1)
    for lib in (torch, kiln):
        with pytest.raises(TypeError):
            lib.ones(2, 3).permute(1, 0, dims=(1, 0))
