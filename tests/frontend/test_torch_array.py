"""``parameter.data`` and ``parameter.grad`` answer PyTorch's tensor methods (``frontend/torch_array.py``): the
idioms of pytorch/examples (``p.data.add_(p.grad, alpha=-lr)``, ``m.weight.data.normal_``, ``p.grad.data.zero_()``)
run in place, against torch in float64; NumPy's own names keep NumPy's meaning; compiled code sees plain arrays."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
from kiln.frontend.torch_array import TorchArray
from e2e.models import MLP, copy_into_torch, digit_batches, torch_mlp
from oracles import require_torch


def test_manual_sgd_through_data_and_grad_matches_torch():
    torch = require_torch()
    kiln.manual_seed(0)
    model = MLP().double()
    twin = torch_mlp(torch).double()
    copy_into_torch(torch, model, twin)
    for x, y in digit_batches(3, 16):
        for net, lib, batch in ((model, kiln, (kiln.tensor(x.astype(np.float64)), kiln.tensor(y))),
                                (twin, torch, (torch.tensor(x, dtype=torch.float64), torch.tensor(y)))):
            for p in net.parameters():
                if p.grad is not None:
                    p.grad.data.zero_()
            lib.nn.functional.cross_entropy(net(batch[0]), batch[1]).backward()
            for p in net.parameters():
                p.data.add_(p.grad, alpha=-0.5)
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(p.grad.norm().item(), q.grad.norm().item(), rtol=1e-12)


def test_in_place_initialisers_write_into_the_parameter_and_return_the_array():
    layer = nn.Linear(200, 100)
    weight = layer.weight.data
    assert weight.normal_(0.0, 0.02) is weight and layer.weight.data is weight
    assert abs(float(np.std(layer.weight.data)) - 0.02) < 0.002
    layer.bias.data.fill_(0.5)
    np.testing.assert_array_equal(layer.bias.data, np.full(100, 0.5, np.float32))
    layer.bias.data.mul_(2).add_(1.0)
    np.testing.assert_array_equal(layer.bias.data, np.full(100, 2.0, np.float32))
    clone = layer.bias.data.clone()
    layer.bias.data.zero_()
    assert float(clone.sum()) == 200.0 and not layer.bias.data.any()


def test_numpy_names_keep_numpy_meaning_and_print_as_tensors():
    data = nn.Linear(3, 2).weight.data
    assert isinstance(data, TorchArray) and data.size == 6 and data.numel() == 6 and data.dim() == 2
    assert repr(data).startswith("tensor([[")  # print(p.data) as PyTorch's
    assert data.data is data  # PyTorch's .data, not NumPy's memoryview


def test_compiled_code_gets_and_gives_plain_arrays():
    model = MLP()
    x = digit_batches(1, 8)[0][0]
    assert type(kiln.compile(model)(x)) is np.ndarray
    step = kiln.compile_train_step(model, kiln.nn.functional.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1))
    step(x, np.arange(8) % 10)
    assert all(type(p.data) is TorchArray for p in model.parameters())  # updated in place, still the same arrays
