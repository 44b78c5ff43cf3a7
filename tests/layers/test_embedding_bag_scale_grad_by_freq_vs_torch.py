"""``nn.EmbeddingBag(scale_grad_by_freq=True)`` (fastText-style bags of frequent words): each row's gradient divided by
its index's count in the whole input, as torch documents it. kiln refused the option. Checked against an independent
oracle, torch's ``nn.Embedding(scale_grad_by_freq=True)`` lookup summed or averaged per bag in float64 (the semantics
of torch's CUDA and MPS kernels), and against torch 2.13's CPU ``EmbeddingBag`` where its kernel is right: for mixed
counts it divides an index's gradient by another index's count (pytorch/pytorch#190063, fixed after 2.13). The max mode
refuses the option with torch's ValueError."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

WEIGHT = np.random.default_rng(3).standard_normal((6, 3))
BAGS = np.array([[0, 2, 2, 4], [5, 2, 0, 2], [1, 1, 1, 3]])  # 2 four times, 0 and 1 twice or thrice, 3, 4, 5 once
SAMPLE_WEIGHTS = np.linspace(0.5, 2.0, BAGS.size).reshape(BAGS.shape)


def kiln_bag_gradient(mode, form, padding_idx=None, weighted=False, indices=BAGS):
    bag = kiln.nn.EmbeddingBag(6, 3, mode=mode, scale_grad_by_freq=True, padding_idx=padding_idx)
    bag.weight.data[...] = WEIGHT
    weights = kiln.tensor(SAMPLE_WEIGHTS) if weighted else None
    if form == "offsets":
        offsets = kiln.tensor(np.arange(0, indices.size, indices.shape[1]))
        out = bag(kiln.tensor(indices.reshape(-1)), offsets, per_sample_weights=None if weights is None else weights.reshape(-1))
    else:
        out = bag(kiln.tensor(indices), per_sample_weights=weights)
    (out ** 3).sum().backward()
    return np.array(out.detach().numpy()), np.array(bag.weight.grad)


def oracle_gradient(torch, mode, padding_idx=None, weighted=False, indices=BAGS):
    """torch's Embedding(scale_grad_by_freq=True) rows, weighed, masked at the padding index, summed or averaged."""
    table = torch.nn.Embedding(6, 3, padding_idx=padding_idx, scale_grad_by_freq=True).double()
    table.weight.data = torch.tensor(WEIGHT)
    index = torch.tensor(indices)
    rows = table(index) * (torch.tensor(SAMPLE_WEIGHTS).unsqueeze(-1) if weighted else 1.0)
    kept = (index != padding_idx).double() if padding_idx is not None else torch.ones(index.shape, dtype=torch.float64)
    out = (rows * kept.unsqueeze(-1)).sum(1)
    if mode == "mean":
        out = out / kept.sum(1).clamp(min=1).unsqueeze(-1)
    (out ** 3).sum().backward()
    return out.detach().numpy(), table.weight.grad.numpy()


@pytest.mark.parametrize("form", ["2-D", "offsets"])
@pytest.mark.parametrize("mode, padding_idx, weighted", [("sum", None, False), ("mean", None, False), ("sum", None, True),
                                                         ("sum", 2, False), ("mean", 2, False)],
                         ids=["sum", "mean", "sum, per_sample_weights", "sum, padding_idx", "mean, padding_idx"])
def test_scale_grad_by_freq_divides_by_each_indexs_count(float64_default, mode, padding_idx, weighted, form):
    torch = require_torch()
    ours = kiln_bag_gradient(mode, form, padding_idx, weighted)
    theirs = oracle_gradient(torch, mode, padding_idx, weighted)
    for got, want in zip(ours, theirs):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_equal_counts_agree_with_torchs_cpu_embedding_bag(float64_default, mode):
    torch = require_torch()
    indices = np.array([[0, 2, 2, 0], [5, 5, 3, 3]])  # every index twice: torch 2.13's CPU kernel is right here
    bag = torch.nn.EmbeddingBag(6, 3, mode=mode, scale_grad_by_freq=True).double()
    bag.weight.data = torch.tensor(WEIGHT)
    (bag(torch.tensor(indices)) ** 3).sum().backward()
    np.testing.assert_allclose(kiln_bag_gradient(mode, "2-D", indices=indices)[1], bag.weight.grad.numpy(), rtol=1e-12)


def test_scale_grad_by_freq_in_a_compiled_training_step(float64_default):
    require_torch()
    results = []
    for compiled in (False, True):
        bag = kiln.nn.EmbeddingBag(6, 3, mode="mean", scale_grad_by_freq=True)
        bag.weight.data[...] = WEIGHT
        optimizer = kiln.optim.SGD(bag.parameters(), lr=0.1)

        def step(indices):
            optimizer.zero_grad()
            loss = (bag(indices) ** 3).sum()
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=True) if compiled else step
        results.append(([float(run(kiln.tensor(BAGS))) for _ in range(2)], np.array(bag.weight.data)))
    np.testing.assert_allclose(results[1][0], results[0][0], rtol=1e-12)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-12)


def test_max_mode_refuses_scale_grad_by_freq_as_torch():
    torch = require_torch()
    with pytest.raises(ValueError) as theirs:
        torch.nn.EmbeddingBag(6, 3, mode="max", scale_grad_by_freq=True)(torch.tensor(BAGS))
    with pytest.raises(ValueError) as ours:
        kiln.nn.EmbeddingBag(6, 3, mode="max", scale_grad_by_freq=True)(kiln.tensor(BAGS))
    assert str(theirs.value) in str(ours.value) and "test_embedding_bag_scale_grad_by_freq_vs_torch.py" in str(ours.value)


def test_sparse_bags_refuse_scale_grad_by_freq_in_torchs_words(float64_default):
    torch = require_torch()
    messages = []
    for lib in (torch, kiln):
        bag = lib.nn.EmbeddingBag(6, 3, mode="sum", sparse=True, scale_grad_by_freq=True)
        with pytest.raises(RuntimeError) as raised:
            bag(lib.tensor(BAGS)).sum().backward()
        messages.append(str(raised.value))
    assert messages[1].startswith(messages[0])
