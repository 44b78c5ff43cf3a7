"""``nn.Embedding``'s options (``padding_idx``, ``from_pretrained``, the refused ones) and ``LayerNorm(bias=False)``
against their ``torch.nn`` twins: values, gradients (the padding row's is zero), training steps and ONNX export."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from layer_parity import assert_layer_matches_torch, sgd_losses_in_lockstep
from oracles import require

TOKENS = np.array([[0, 3, 3, 5], [5, 1, 0, 0], [2, 3, 4, 5]], dtype=np.int64)


@pytest.mark.parametrize("padding_idx", [0, 3, -1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_padding_row_gets_no_gradient_as_in_torch(padding_idx, dtype):
    torch = require("torch")
    module = nn.Embedding(6, 4, padding_idx=padding_idx, dtype=dtype)
    module.weight.data[...] = np.random.default_rng(0).standard_normal((6, 4))  # a nonzero padding row reads as is
    reference = torch.nn.Embedding(6, 4, padding_idx=padding_idx)
    reference = reference.double() if dtype == "float64" else reference
    tolerance = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else {}
    assert_layer_matches_torch(torch, module, reference, [TOKENS], **tolerance)


def test_padding_row_starts_at_zero_and_negative_index_counts_from_the_end():
    kiln.manual_seed(0)
    module = nn.Embedding(6, 4, padding_idx=-2)
    assert module.padding_idx == 4 and "padding_idx=4" in repr(module)
    np.testing.assert_array_equal(module.weight.data[4], 0)
    assert np.all(np.abs(module.weight.data[[0, 1, 2, 3, 5]]) > 0)


def test_training_with_a_padding_index_matches_torch_and_never_moves_the_padding_row():
    torch = require("torch")

    def classifier(lib):
        return lib.nn.Sequential(lib.nn.Embedding(6, 5, padding_idx=0), lib.nn.Flatten(), lib.nn.Linear(20, 3))

    kiln.manual_seed(1)
    model, reference = classifier(kiln), classifier(torch)
    model[0].weight.data[0] = 0.5  # a nonzero padding row must still stay put
    padding_row = model[0].weight.data[0].copy()
    losses = sgd_losses_in_lockstep(torch, model, reference, TOKENS, np.array([0, 2, 1]), lr=0.5, steps=6)
    assert losses[-1] < losses[0]
    np.testing.assert_array_equal(model[0].weight.data[0], padding_row)
    np.testing.assert_allclose(model[0].weight.data, reference[0].weight.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("freeze", [True, False])
def test_from_pretrained_copies_and_freezes_as_torch(freeze):
    torch = require("torch")
    table = np.random.default_rng(2).standard_normal((6, 3)).astype(np.float32)
    module = nn.Embedding.from_pretrained(table, freeze=freeze, padding_idx=1)
    reference = torch.nn.Embedding.from_pretrained(torch.tensor(table), freeze=freeze, padding_idx=1)
    table[...] = 0  # a copy: the caller's array is not the parameter
    np.testing.assert_array_equal(module.weight.data, reference.weight.detach().numpy())
    assert module.weight.requires_grad == reference.weight.requires_grad == (not freeze)
    model = nn.Sequential(module, nn.Flatten(), nn.Linear(6, 2))
    before = module.weight.data.copy()
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.5))
    step(TOKENS[:, :4:2].copy(), np.array([0, 1, 1]))
    assert np.array_equal(module.weight.data, before) == freeze


def test_from_pretrained_needs_a_matrix():
    with pytest.raises(ValueError, match="must be 2-D"):
        nn.Embedding.from_pretrained(np.zeros(5))


def test_max_norm_in_a_compiled_forward_renormalizes_the_weight_as_torch():  # refused when traced until the TransE probe
    torch = require("torch")
    module = nn.Embedding(6, 3, max_norm=1.0, dtype="float64")
    module.weight.data[...] = 2.0 * np.random.default_rng(0).standard_normal((6, 3))
    reference = torch.nn.Embedding(6, 3, max_norm=1.0).double()
    reference.weight.data = torch.tensor(np.array(module.weight.data))
    rows = kiln.compile(module, fullgraph=True)(TOKENS)
    np.testing.assert_allclose(np.array(rows), reference(torch.tensor(TOKENS)).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(module.weight.data, reference.weight.detach().numpy(), rtol=1e-12)  # written back


def test_padding_idx_out_of_range_is_refused():
    with pytest.raises(kiln.TraceError, match="padding_idx 6 must be within num_embeddings 6"):
        nn.Embedding(6, 3, padding_idx=6)


def test_embedding_with_padding_exports_to_onnx(tmp_path):
    require("onnx")
    ort = require("onnxruntime")
    model = nn.Sequential(nn.Embedding(6, 4, padding_idx=2), nn.LayerNorm(4, bias=False))
    path = str(tmp_path / "embedding.onnx")
    kiln.export_onnx(model, [kiln.TensorSpec(("N", 4), "int64")], path)
    np.testing.assert_allclose(ort.InferenceSession(path).run(None, {"input": TOKENS})[0], kiln.compile(model)(TOKENS),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layer_norm_without_bias_matches_torch(dtype):
    torch = require("torch")
    module = nn.LayerNorm(5, bias=False, dtype=dtype)
    module.weight.data[...] = np.random.default_rng(3).standard_normal(5)
    reference = torch.nn.LayerNorm(5, bias=False)
    reference = reference.double() if dtype == "float64" else reference
    assert set(module.state_dict()) == set(reference.state_dict()) == {"weight"}
    x = np.random.default_rng(4).standard_normal((3, 2, 5)).astype(dtype)
    tolerance = dict(rtol=1e-10, atol=1e-12) if dtype == "float64" else {}
    assert_layer_matches_torch(torch, module, reference, [x], **tolerance)
