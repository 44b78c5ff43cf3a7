"""Normalizations of a half input with float32 weights, as PyTorch's mixed-type CPU kernels: float32 inside, the
input's dtype out, float32 running statistics. This is what autocast makes of ``LayerNorm(Linear(x))``."""

from __future__ import annotations

import numpy as np
import pytest
from half_compare import EPS, HALF, assert_half_close, from_torch, to_half, torch_dtype
from oracles import require_torch

import kiln

LAYERS = {
    "LayerNorm": (lambda nn: nn.LayerNorm(6), (5, 6)),
    "BatchNorm1d": (lambda nn: nn.BatchNorm1d(6), (5, 6)),
    "BatchNorm2d": (lambda nn: nn.BatchNorm2d(6), (3, 6, 2, 2)),
    "GroupNorm": (lambda nn: nn.GroupNorm(2, 6), (3, 6, 2)),
}


def _twins(torch, name):
    make, shape = LAYERS[name]
    ours, theirs = make(kiln.nn), make(torch.nn)
    rng = np.random.default_rng(3)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        values = rng.standard_normal(p.data.shape).astype(np.float32)
        p.data[...] = values
        q.data = torch.tensor(values)
    return ours, theirs, shape


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("dtype", HALF)
def test_a_half_input_through_float32_weights_matches_torch(dtype, name, train):
    torch = require_torch()
    ours, theirs, shape = _twins(torch, name)
    ours.train(train), theirs.train(train)
    x = to_half(np.random.default_rng(4).standard_normal(shape) * 3 + 1, dtype)
    ours_x = kiln.tensor(x, requires_grad=True)
    theirs_x = torch.tensor(x.astype(np.float32)).to(torch_dtype(torch, dtype)).requires_grad_()
    out, expected = ours(ours_x), theirs(theirs_x)
    weights = to_half(np.random.default_rng(5).standard_normal(shape), dtype)
    (out * kiln.tensor(weights)).sum().backward()
    (expected * torch.tensor(weights.astype(np.float32)).to(expected.dtype)).sum().backward()
    assert_half_close(out.numpy(), from_torch(expected), dtype, ulps=1, what="output")
    assert_half_close(np.asarray(ours_x.grad), from_torch(theirs_x.grad), dtype, ulps=4, what="input gradient")
    for p, q, exact in zip(ours.parameters(), theirs.parameters(), _float64_parameter_grads(torch, theirs, x, weights)):
        # float32 gradients of float32 weights, from float32 sums of half products: float64's to float32 accuracy.
        # torch's LayerNorm rounds its weight and bias gradients to the input's dtype along the way: within 2 half
        # ulps of the tensor's largest from ours (ours is float64's to float32 accuracy, checked just above).
        assert p.grad.dtype == np.float32
        np.testing.assert_allclose(np.asarray(p.grad), exact, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(p.grad), q.grad.numpy(), rtol=0, atol=2 * EPS[dtype] * np.abs(exact).max())
    for buffer in ("running_mean", "running_var"):
        if hasattr(theirs, buffer):
            assert getattr(ours, buffer).data.dtype == np.float32
            np.testing.assert_allclose(getattr(ours, buffer).data, getattr(theirs, buffer).numpy(), rtol=1e-5, atol=1e-6)


def _float64_parameter_grads(torch, layer, x, weights):
    """The weight and bias gradients of ``layer`` (float64 copy, same mode) at the same half inputs, in float64."""
    import copy

    exact = copy.deepcopy(layer).double()
    for p in exact.parameters():
        p.grad = None
    output = exact(torch.tensor(x.astype(np.float64)))
    (output * torch.tensor(weights.astype(np.float64)).to(output.dtype)).sum().backward()
    return [p.grad.numpy() for p in exact.parameters()]


@pytest.mark.parametrize("dtype", HALF)
def test_layer_norm_after_a_linear_in_an_autocast_region_trains_compiled(dtype):
    """The region casts the Linear's output to the half dtype; the LayerNorm (float32 weights) keeps it half, as torch's."""
    torch = require_torch()
    kiln_dtype, twin_dtype = {"f16": kiln.float16, "bf16": kiln.bfloat16}[dtype], torch_dtype(torch, dtype)

    def make(lib):
        lib.manual_seed(0)
        return lib.nn.Sequential(lib.nn.Linear(8, 6), lib.nn.LayerNorm(6), lib.nn.Linear(6, 3))

    model, twin = make(kiln), make(torch)
    for p, q in zip(model.parameters(), twin.parameters()):
        q.data = torch.tensor(np.array(p.data))
    x = np.random.default_rng(6).standard_normal((4, 8)).astype(np.float32)
    y = np.array([0, 2, 1, 0])

    def loss_fn(out, target):
        return kiln.nn.functional.cross_entropy(out, target)

    class Autocast(kiln.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, v):
            with kiln.autocast("cpu", dtype=kiln_dtype):
                return self.inner(v)

    step = kiln.compile_train_step(Autocast(model), loss_fn, kiln.optim.SGD(model.parameters(), lr=0.1))
    loss = float(step(x, y))
    with torch.autocast("cpu", dtype=twin_dtype):
        expected = torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y))
    assert expected.dtype == torch.float32
    expected = float(expected.detach())
    assert abs(loss - expected) <= 4 * EPS[dtype] * abs(expected)
