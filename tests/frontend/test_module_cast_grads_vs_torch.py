"""``model.half()`` / ``.float()`` / ``.to(dtype)`` after a backward cast each parameter's ``.grad`` with it, as
PyTorch's ``Module._apply``: kiln left the old float32 ``.grad``, so the next backward accumulated in float32 and the
gradients came back float32 for float16 parameters."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries

CASTS = {"half": lambda m, lib: m.half(), "float": lambda m, lib: m.float(), "bfloat16": lambda m, lib: m.bfloat16(),
         "to(float32)": lambda m, lib: m.to(lib.float32), "to(dtype=float16)": lambda m, lib: m.to(dtype=lib.float16)}


def _grads_after(name, cast):
    lib, nn, _ = libraries(name)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()  # a bias before BN: noise
    with lib.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(lib.tensor(np.linspace(-1, 1, p.numel()).reshape(tuple(p.shape)) * (i + 1)))
    x = np.linspace(-2, 2, 15).reshape(5, 3)
    model(lib.tensor(x)).square().sum().backward()  # float64: the gradients agree to the last bits before the cast
    CASTS[cast](model, lib)
    cast_grads = [np.asarray(p.grad.double().numpy() if name == "torch" else p.grad, np.float64) for p in model.parameters()]
    dtypes = [str(p.grad.dtype).split(".")[-1] for p in model.parameters()]
    model(lib.tensor(x).to(model[0].weight.dtype)).square().sum().backward()
    after = [str(p.grad.dtype).split(".")[-1] for p in model.parameters()]
    return dtypes, after, cast_grads


@pytest.mark.parametrize("cast", CASTS)
def test_module_casts_grads_as_torch(cast):
    ours, theirs = _grads_after("kiln", cast), _grads_after("torch", cast)
    assert ours[0] == theirs[0] and ours[1] == theirs[1]
    for a, b in zip(ours[2], theirs[2]):
        np.testing.assert_allclose(a, b, rtol=1e-6 if cast.startswith(("float", "to(float32")) else 0)
