"""``nn.Linear(0, n)`` as torch 2.13 builds it: an empty weight and a zero bias (``reset_parameters``' bound is 0
without inputs), a zero output and the bias's gradient. kiln divided by ``sqrt(0)`` (``ZeroDivisionError``), so
``nn.AdaptiveLogSoftmaxWithLoss(3, 10, cutoffs=[4, 8])`` (a small model's adaptive softmax: the tail projections
``in_features // div_value ** k`` are 0 wide) could not be built."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import libraries, require_torch


def test_linear_without_inputs_as_torch():
    results = []
    for name in ("kiln", "torch"):
        lib, nn, F = libraries(name)
        layer = nn.Linear(0, 4)
        out = layer(lib.zeros(2, 0))
        (out * lib.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
        results.append([tuple(layer.weight.shape), layer.bias.detach().numpy(), out.detach().numpy(), layer.bias.grad.numpy()])
    require_torch()
    assert results[0][0] == results[1][0] == (4, 0)
    for ours, theirs in zip(results[0][1:], results[1][1:]):
        np.testing.assert_array_equal(ours, theirs)


def test_adaptive_softmax_with_empty_tail_projections_as_torch(float64_default):
    torch = require_torch()
    kiln.manual_seed(0)
    ours = kiln.nn.AdaptiveLogSoftmaxWithLoss(3, 10, cutoffs=[4, 8])
    theirs = torch.nn.AdaptiveLogSoftmaxWithLoss(3, 10, cutoffs=[4, 8])
    theirs.load_state_dict({k: torch.tensor(np.array(v)) for k, v in ours.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((5, 3))
    target = np.array([0, 5, 9, 3, 7])
    records = []
    for lib, model in ((kiln, ours), (torch, theirs)):
        inputs = lib.tensor(x, requires_grad=True)
        output, loss = model(inputs, lib.tensor(target))
        loss.backward()
        records.append([output.detach().numpy(), loss.item(), model.log_prob(lib.tensor(x)).detach().numpy(), inputs.grad.numpy()])
    for got, want in zip(*records):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
