"""``nn.Embedding(max_norm=...)`` (eager, an in-place renormalization) and ``scale_grad_by_freq`` (eager and traced)
against ``torch.nn.Embedding``: weights after training, gradients, values (frontend/embedding_options.py)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from layer_parity import assert_layer_matches_torch
from oracles import require_torch

TOKENS = np.array([[0, 3, 3, 5], [5, 1, 0, 0], [2, 3, 4, 5]], dtype=np.int64)
TABLE = np.random.default_rng(0).standard_normal((7, 4)) * 2  # norms 1..6: some rows over max_norm, some under


def _twins(torch, dtype: str, **options):
    module = nn.Embedding(7, 4, dtype=dtype, **options)
    module.weight.data[...] = TABLE
    reference = torch.nn.Embedding(7, 4, dtype=getattr(torch, dtype), **options)
    reference.weight.data = torch.tensor(TABLE.astype(dtype))
    return module, reference


def _tolerance(dtype: str) -> dict[str, float]:
    return dict(rtol=1e-12, atol=1e-12) if dtype == "float64" else dict(rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("options", [dict(max_norm=1.5), dict(max_norm=3.0, norm_type=1.0), dict(max_norm=2.0, padding_idx=3),
                                     dict(max_norm=1.0, scale_grad_by_freq=True)])
def test_eager_training_with_max_norm_matches_torch(dtype, options):
    torch = require_torch()
    module, reference = _twins(torch, dtype, **options)
    ours, theirs = kiln.optim.SGD(module.parameters(), lr=0.3), torch.optim.SGD(reference.parameters(), lr=0.3)
    weights = np.random.default_rng(1).standard_normal(TOKENS.shape + (4,)).astype(dtype)
    for _ in range(3):
        for net, optimizer, lib in ((module, ours, kiln), (reference, theirs, torch)):
            optimizer.zero_grad()
            (net(lib.tensor(TOKENS)) * lib.tensor(weights)).square().sum().backward()
            optimizer.step()
        np.testing.assert_allclose(np.array(module.weight.grad), reference.weight.grad.numpy(), **_tolerance(dtype))
        np.testing.assert_allclose(np.array(module.weight.data), reference.weight.detach().numpy(), **_tolerance(dtype))
    untouched = sorted(set(range(7)) - set(TOKENS.ravel()))  # never looked up: never renormalized, never trained
    np.testing.assert_array_equal(module.weight.data[untouched], TABLE[untouched].astype(dtype))


def test_max_norm_renormalizes_only_the_rows_looked_up_and_over_the_bound():
    module = nn.Embedding(7, 4, max_norm=2.0)
    module.weight.data[...] = TABLE
    norms = np.linalg.norm(TABLE, axis=1)
    out = module(kiln.tensor(np.array([0, 1, 2])))
    after = np.linalg.norm(module.weight.data, axis=1)
    for row in range(7):
        expected = 2.0 if row < 3 and norms[row] > 2.0 else norms[row]
        assert after[row] == pytest.approx(expected, rel=1e-5), row
    np.testing.assert_array_equal(out.numpy(), module.weight.data[:3])


def test_functional_max_norm_writes_an_eager_weight_tensor_as_torch():
    torch = require_torch()
    ours, theirs = kiln.tensor(TABLE.copy()), torch.tensor(TABLE.copy())
    out = F.embedding(kiln.tensor(TOKENS), ours, max_norm=1.0)
    expected = torch.nn.functional.embedding(torch.tensor(TOKENS), theirs, max_norm=1.0)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("padding_idx", [None, 3])
def test_scale_grad_by_freq_traced_gradient_matches_torch(dtype, padding_idx):
    torch = require_torch()
    module, reference = _twins(torch, dtype, scale_grad_by_freq=True, padding_idx=padding_idx)
    assert_layer_matches_torch(torch, module, reference, [TOKENS], **_tolerance(dtype))


def test_scale_grad_by_freq_in_a_compiled_training_step_matches_torch():
    torch = require_torch()

    def classifier(lib):
        return lib.nn.Sequential(lib.nn.Embedding(7, 5, scale_grad_by_freq=True), lib.nn.Flatten(), lib.nn.Linear(20, 3))

    kiln.manual_seed(2)
    model, reference = classifier(kiln), classifier(torch)
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.5))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    labels = np.array([0, 2, 1])
    for _ in range(4):
        step(TOKENS, labels)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(reference(torch.tensor(TOKENS)), torch.tensor(labels)).backward()
        optimizer.step()
    np.testing.assert_allclose(model[0].weight.data, reference[0].weight.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_scale_grad_by_freq_keeps_the_lookup_values_exactly():
    module = nn.Embedding(7, 4, scale_grad_by_freq=True)
    np.testing.assert_array_equal(module(kiln.tensor(TOKENS)).numpy(), module.weight.data[TOKENS])


@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_embedding_bag_with_max_norm_trains_as_torch(mode):
    torch = require_torch()
    module, reference = nn.EmbeddingBag(7, 4, mode=mode, max_norm=1.5, dtype="float64"), \
        torch.nn.EmbeddingBag(7, 4, mode=mode, max_norm=1.5, dtype=torch.float64)
    module.weight.data[...] = TABLE
    reference.weight.data = torch.tensor(TABLE)
    for _ in range(2):
        for net, lib in ((module, kiln), (reference, torch)):
            net.zero_grad()
            net(lib.tensor(TOKENS)).square().sum().backward()
        np.testing.assert_allclose(np.array(module.weight.grad), reference.weight.grad.numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(np.array(module.weight.data), reference.weight.detach().numpy(), rtol=1e-12, atol=1e-12)
        for net in (module, reference):
            net.weight.data[...] *= 1.5  # grow the rows again: the next forward renormalizes them
