"""A float attention mask that holds other values than 0 and -inf (an ALiBi or relative-position bias, a soft padding
weight) is added to the scores by ``nn.MultiheadAttention``, as torch 2.13's: kiln read only its -inf entries, so
eagerly and in a compiled function such a bias was silently dropped. Against torch (float64): outputs, weights and
gradients, ``attn_mask`` (L, S) and per head (N * heads, L, S), a float ``key_padding_mask``, a row of -inf (NaN with
the weights, 0 without), ``TransformerEncoderLayer``'s ``src_mask``, a compiled call, the general path (``add_bias_kv``,
``add_zero_attn``, ``kdim``) (``frontend/layers_transformer.py``: ``additive_attention_bias``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import kiln
from oracles import require_torch

RNG = np.random.default_rng(0)
X = RNG.standard_normal((2, 3, 4))  # (N, L, E)
ALIBI = -np.abs(np.arange(3)[:, None] - np.arange(3)[None, :]) * np.array([0.5, 0.25]).reshape(2, 1, 1)  # per head
CASES = {
    "attn_mask (L, S)": dict(attn_mask=ALIBI[0]),
    "attn_mask per head": dict(attn_mask=np.tile(ALIBI, (2, 1, 1))),
    "float key_padding_mask": dict(key_padding_mask=np.log(np.array([[1.0, 0.5, 0.25], [1.0, 1.0, 0.1]]))),
    "bias and bool padding": dict(attn_mask=ALIBI[1], key_padding_mask=np.array([[False, False, True], [False, False, False]])),
    "a row of -inf": dict(attn_mask=np.where(np.arange(3)[:, None] == 1, -np.inf, ALIBI[0])),
}


def _twins(**options: Any) -> tuple[Any, Any, Any]:
    torch = require_torch()
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(4, 2, batch_first=True, **options).double()
    ours = kiln.nn.MultiheadAttention(4, 2, batch_first=True, **options).double()
    ours.load_state_dict({name: np.array(value.detach().numpy()) for name, value in theirs.state_dict().items()})
    return torch, ours, theirs


def _run(lib: Any, module: Any, masks: dict[str, np.ndarray], need_weights: bool, compiled: bool = False) -> list[Any]:
    x = lib.tensor(X, requires_grad=True)
    given = {name: lib.tensor(mask) for name, mask in masks.items()}
    if compiled:
        output, weights = kiln.compile(lambda x, **m: module(x, x, x, need_weights=need_weights, **m))(x, **given)
    else:
        output, weights = module(x, x, x, need_weights=need_weights, average_attn_weights=False, **given)
    finite = lib.where(output.isfinite(), output, lib.zeros_like(output))
    (finite * lib.tensor(np.linspace(-1, 1, output.numel()).reshape(tuple(output.shape)))).sum().backward()
    arrays = [output.detach().numpy(), x.grad.numpy(), module.in_proj_weight.grad.numpy()]
    return arrays + ([] if weights is None else [weights.detach().numpy()])


def _assert_same(ours: list[Any], theirs: list[Any]) -> None:
    assert len(ours) == len(theirs)
    for name, mine, reference in zip(("output", "input grad", "in_proj_weight grad", "weights"), ours, theirs):
        mine, reference = np.asarray(mine), np.asarray(reference)
        assert np.array_equal(np.isnan(mine), np.isnan(reference)), name
        np.testing.assert_allclose(mine, reference, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_a_float_mask_is_added_to_the_scores_as_torchs(case, need_weights):
    torch, ours, theirs = _twins()
    _assert_same(_run(kiln, ours, CASES[case], need_weights), _run(torch, theirs, CASES[case], need_weights))


@pytest.mark.parametrize("need_weights", [True, False])
def test_a_float_mask_given_to_a_compiled_function_is_added_as_torchs(need_weights):
    torch, ours, theirs = _twins()
    masks = CASES["bias and bool padding"]
    _assert_same(_run(kiln, ours, masks, need_weights, compiled=True)[:1], _run(torch, theirs, masks, need_weights)[:1])


def test_transformer_encoder_layers_src_mask_bias_as_torchs():
    torch = require_torch()
    torch.manual_seed(0)
    theirs = torch.nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True).double()
    ours = kiln.nn.TransformerEncoderLayer(4, 2, 8, dropout=0.0, batch_first=True).double()
    ours.load_state_dict({name: np.array(value.detach().numpy()) for name, value in theirs.state_dict().items()})
    results = [layer(lib.tensor(X), src_mask=lib.tensor(ALIBI[0])).detach().numpy() for lib, layer in ((kiln, ours), (torch, theirs))]
    np.testing.assert_allclose(results[0], results[1], rtol=1e-10, atol=1e-12)


GENERAL = {"add_bias_kv": dict(add_bias_kv=True), "add_zero_attn": dict(add_zero_attn=True),
           "kdim and vdim": dict(kdim=3, vdim=5)}


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("options", list(GENERAL))
def test_the_general_path_adds_it_too(options, need_weights):
    """torch's ``multi_head_attention_forward`` (appended keys padded with a 0 bias; other key and value widths)."""
    torch, ours, theirs = _twins(**GENERAL[options])
    masks = CASES["bias and bool padding"]
    keys = np.random.default_rng(1).standard_normal((2, 3, GENERAL[options].get("kdim", 4)))
    values = np.random.default_rng(2).standard_normal((2, 3, GENERAL[options].get("vdim", 4)))
    results = []
    for lib, module in ((kiln, ours), (torch, theirs)):
        output, weights = module(lib.tensor(X), lib.tensor(keys), lib.tensor(values), need_weights=need_weights,
                                 **{name: lib.tensor(mask) for name, mask in masks.items()})
        results.append([output.detach().numpy()] + ([] if weights is None else [weights.detach().numpy()]))
    _assert_same(*results)
