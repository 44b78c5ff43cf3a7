"""A query whose keys are all masked, against torch 2.13: ``F.scaled_dot_product_attention`` gives 0 (bool mask, or a
float mask of ``-inf`` over the row: torch's ``_safe_softmax``, gradient 0 there); ``nn.MultiheadAttention`` gives NaN
in its math path with ``need_weights=True`` (output and weights) and in its inference fast path (eval, no grad,
batch-first self-attention), 0 otherwise; ``TransformerEncoderLayer``'s fused kernel NaN too, its other path not; the
encoder's nested-tensor path zeros (``frontend/functional_attention_paths.py``, ``frontend/attention_fast_path.py``)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import kiln
from oracles import require_torch

RNG = np.random.default_rng(0)
Q, K, V = RNG.standard_normal((2, 2, 3, 4)), RNG.standard_normal((2, 2, 5, 4)), RNG.standard_normal((2, 2, 5, 4))
X = RNG.standard_normal((3, 4, 4))  # (N, L, E) batch first
PADDING = np.zeros((3, 4), bool)
PADDING[1] = True  # the second sequence is all padding
PADDING[2, 2:] = True


def _assert_same(ours: Any, theirs: Any, what: str) -> None:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert np.array_equal(np.isnan(ours), np.isnan(theirs)), f"{what}: NaN at {np.argwhere(np.isnan(ours)).tolist()}, torch's at {np.argwhere(np.isnan(theirs)).tolist()}"
    np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12, err_msg=what)


def _twins(make: Callable[[Any], Any]) -> tuple[Any, Any, Any]:
    torch = require_torch()
    torch.manual_seed(0)
    theirs, ours = make(torch).double(), make(kiln).double()
    ours.load_state_dict({name: np.array(value.detach().numpy()) for name, value in theirs.state_dict().items()})
    return torch, ours, theirs


def _sdpa_with_grads(lib: Any, mask: np.ndarray, dropout_p: float = 0.0) -> list[np.ndarray]:
    q, k, v = (lib.tensor(a, requires_grad=True) for a in (Q, K, V))
    out = lib.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=lib.tensor(mask), dropout_p=dropout_p)
    (out * lib.tensor(np.arange(out.numel()).reshape(tuple(out.shape)) / 5.0)).sum().backward()
    return [out.detach().numpy(), q.grad.numpy(), k.grad.numpy(), v.grad.numpy()]


def _masks() -> dict[str, np.ndarray]:
    keep = np.ones((3, 5), bool)
    keep[1] = False
    keep[2, :3] = False
    return {"bool": keep, "float -inf": np.where(keep, 0.0, -np.inf)}


@pytest.mark.parametrize("kind", ["bool", "float -inf"])
def test_sdpa_gives_0_and_a_0_gradient_for_a_row_attending_nothing(kind):
    torch = require_torch()
    mask = _masks()[kind]
    for name, ours, theirs in zip(("output", "dq", "dk", "dv"), _sdpa_with_grads(kiln, mask), _sdpa_with_grads(torch, mask)):
        _assert_same(ours, theirs, name)
    with_dropout = _sdpa_with_grads(kiln, mask, dropout_p=0.5)
    assert not any(np.isnan(array).any() for array in with_dropout)
    assert np.all(with_dropout[0][:, :, 1] == 0)


def _attention(lib: Any, module: Any, x: np.ndarray, same_tensor: bool = False, grad: bool = True, **options: Any) -> tuple:
    with lib.set_grad_enabled(grad):
        tensors = [lib.tensor(x)] * 3 if same_tensor else [lib.tensor(x) for _ in range(3)]
        output, weights = module(*tensors, **options)
    return output.detach().numpy(), None if weights is None else weights.detach().numpy()


def _assert_attention_as_torch(make: Callable, x: np.ndarray, train: bool, **call: Any) -> tuple:
    torch, ours, theirs = _twins(make)
    ours.train(train)
    theirs.train(train)
    results = []
    for lib, module in ((kiln, ours), (torch, theirs)):
        converted = {name: lib.tensor(value) if isinstance(value, np.ndarray) else value for name, value in call.items()}
        same = converted.pop("same_tensor", False)
        grad = converted.pop("grad", True)
        results.append(_attention(lib, module, x, same, grad, **converted))
    (our_output, our_weights), (their_output, their_weights) = results
    _assert_same(our_output, their_output, "output")
    assert (our_weights is None) == (their_weights is None)
    if their_weights is not None:
        _assert_same(our_weights, their_weights, "weights")
    return their_output, their_weights


@pytest.mark.parametrize("average", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("train", [True, False])
def test_multihead_attention_with_weights_is_nan_for_a_sequence_all_padding(train, batch_first, average):
    x = X if batch_first else X.transpose(1, 0, 2).copy()
    output, weights = _assert_attention_as_torch(lambda lib: lib.nn.MultiheadAttention(4, 2, batch_first=batch_first), x, train,
                                                 key_padding_mask=PADDING, need_weights=True, average_attn_weights=average)
    batch_axis = 0 if batch_first else 1
    assert np.isnan(output).any() and np.isnan(np.take(output, 1, axis=batch_axis)).all()
    assert np.isnan(weights[1]).all() and not np.isnan(weights[[0, 2]]).any()


@pytest.mark.parametrize("need_weights", [True, False])
@pytest.mark.parametrize("kind", ["bool", "float -inf"])
def test_multihead_attention_with_an_attn_mask_row_blocking_every_key(kind, need_weights):
    blocked = np.zeros((4, 4), bool)
    blocked[1] = True
    mask = blocked if kind == "bool" else np.where(blocked, -np.inf, 0.0)
    _assert_attention_as_torch(lambda lib: lib.nn.MultiheadAttention(4, 2, batch_first=True), X, False, attn_mask=mask,
                               need_weights=need_weights)


FAST_PATH = {  # how the call goes: torch's fast path (NaN) or not (0); eval, batch first, need_weights=False
    "fast path": (dict(same_tensor=True, grad=False), True),
    "distinct query, key and value": (dict(same_tensor=False, grad=False), False),
    "grad enabled": (dict(same_tensor=True, grad=True), False),
    "float key_padding_mask": (dict(same_tensor=True, grad=False, float_mask=True), False),
}


@pytest.mark.parametrize("case", list(FAST_PATH))
def test_multihead_attention_inference_fast_path_is_nan_where_torch_takes_it(case):
    call, nan = FAST_PATH[case]
    call = dict(call)
    mask = np.where(PADDING, -np.inf, 0.0) if call.pop("float_mask", False) else PADDING
    output, _ = _assert_attention_as_torch(lambda lib: lib.nn.MultiheadAttention(4, 2, batch_first=True), X, False,
                                           key_padding_mask=mask, need_weights=False, **call)
    assert np.isnan(output[1]).all() == nan and not np.isnan(output[[0, 2]]).any()


def test_functional_multi_head_attention_forward_with_weights_is_nan_as_torchs():
    torch, ours, theirs = _twins(lambda lib: lib.nn.MultiheadAttention(4, 2))
    x = X.transpose(1, 0, 2).copy()
    results = []
    for lib, module in ((kiln, ours), (torch, theirs)):
        F, t = lib.nn.functional, lib.tensor(x)
        with lib.no_grad():
            results.append(F.multi_head_attention_forward(
                t, t, t, 4, 2, module.in_proj_weight, module.in_proj_bias, None, None, False, 0.0, module.out_proj.weight,
                module.out_proj.bias, training=False, key_padding_mask=lib.tensor(PADDING), need_weights=True))
    for index, what in enumerate(("output", "weights")):
        _assert_same(np.asarray(results[0][index].numpy()), results[1][index].numpy(), what)


def test_a_compiled_multihead_attention_with_weights_is_nan_as_torchs():
    torch, ours, theirs = _twins(lambda lib: lib.nn.MultiheadAttention(4, 2, batch_first=True))
    compiled = kiln.compile(lambda x, padding: ours(x, x, x, key_padding_mask=padding))
    output, weights = compiled(kiln.tensor(X), kiln.tensor(PADDING))
    with torch.no_grad():
        their_output, their_weights = theirs(*[torch.tensor(X)] * 3, key_padding_mask=torch.tensor(PADDING))
    _assert_same(output.detach().numpy(), their_output.numpy(), "output")
    _assert_same(weights.detach().numpy(), their_weights.numpy(), "weights")


LAYER_CASES = {  # eval unless said; the fused kernel needs no grad, relu/gelu, batch first, equal norm eps, even heads
    "fused kernel": dict(),
    "fused kernel, norm_first": dict(build=dict(norm_first=True)),
    "grad enabled": dict(grad=True),
    "training": dict(train=True),
    "custom activation": dict(build=dict(activation=lambda t: t.tanh())),
    "odd head count": dict(build=dict(nhead=1)),
}


def _layer(lib: Any, nhead: int = 2, **options: Any) -> Any:
    return lib.nn.TransformerEncoderLayer(4, nhead, 8, dropout=0.0, batch_first=True, **options)


@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_transformer_encoder_layer_is_nan_for_a_sequence_all_padding_only_in_its_fused_kernel(case):
    spec = LAYER_CASES[case]
    torch, ours, theirs = _twins(lambda lib: _layer(lib, **spec.get("build", {})))
    results = []
    for lib, layer in ((kiln, ours), (torch, theirs)):
        layer.train(spec.get("train", False))
        with lib.set_grad_enabled(spec.get("grad", False)):
            results.append(layer(lib.tensor(X), src_key_padding_mask=lib.tensor(PADDING)).detach().numpy())
    _assert_same(results[0], results[1], "output")
    assert np.isnan(results[1]).any() == case.startswith("fused kernel")


def test_transformer_encoder_nested_path_zeroes_a_sequence_all_padding():
    torch, ours, theirs = _twins(lambda lib: lib.nn.TransformerEncoder(_layer(lib), 2))
    results = []
    for lib, encoder in ((kiln, ours), (torch, theirs)):
        encoder.eval()
        with lib.no_grad():
            results.append(encoder(lib.tensor(X), src_key_padding_mask=lib.tensor(PADDING)).numpy())
    _assert_same(results[0], results[1], "output")
    assert np.all(results[0][1] == 0)
