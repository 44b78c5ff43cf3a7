"""``F.linear_cross_entropy``, ``nn.LinearCrossEntropyLoss`` and ``nn.LinearCrossEntropyOptions`` against PyTorch 2.13
in float64: the loss and the gradients of the input, the linear weight and bias, for every reduction, ignore_index
(default -100, None, explicit), class weights, label smoothing, probability targets, K-dimensional ``out_features``,
an unbatched input, and with ``options`` (torch's chunked op on the same numbers); the module's state_dict, repr and
checks; errors at the user's line."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.compiler.errors import KilnError
from oracles import require

torch = require("torch")
TIGHT = dict(rtol=1e-12, atol=1e-13)


def arrays(batch=(6,), features=4, classes=5, out_features=(), seed=0, probabilities=False, ignored=True, ignore_index=-100):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(batch + (features,))
    w = rng.standard_normal((classes,) + out_features + (features,))
    b = rng.standard_normal((classes,) + out_features)
    if probabilities:
        t = rng.random(batch + (classes,) + out_features)
        return x, w, b, t / t.sum(axis=len(batch), keepdims=True)
    t = rng.integers(0, classes, batch + out_features)
    if ignored and t.size > 1:
        t.reshape(-1)[1] = ignore_index
    return x, w, b, t


def kiln_loss_and_grads(x, w, b, t, **options):
    def loss(x, w, b, t):
        value = F.linear_cross_entropy(x, w, t, linear_bias=b, **options)
        return value.sum() if value.ndim else value

    value = kiln.compile(lambda *a: F.linear_cross_entropy(a[0], a[1], a[3], linear_bias=a[2], **options), batch_dim=None)(x, w, b, t)
    grads = kiln.compile(lambda *a: kiln.grad(loss, argnums=(0, 1, 2))(*a), batch_dim=None)(x, w, b, t)
    return value, grads


def torch_loss_and_grads(x, w, b, t, **options):
    tensors = [torch.tensor(a, requires_grad=True) for a in (x, w, b)]
    value = torch.nn.functional.linear_cross_entropy(tensors[0], tensors[1], torch.tensor(t), linear_bias=tensors[2], **options)
    (value.sum() if value.ndim else value).backward()
    return value.detach().numpy(), [tensor.grad.numpy() for tensor in tensors]


def assert_matches_torch(data, kiln_options=None, **options):
    value, grads = kiln_loss_and_grads(*data, **(options if kiln_options is None else kiln_options))
    expected_value, expected_grads = torch_loss_and_grads(*data, **options)
    np.testing.assert_allclose(value, expected_value, **TIGHT)
    for ours, theirs, name in zip(grads, expected_grads, ("input", "linear_weight", "linear_bias")):
        np.testing.assert_allclose(ours, theirs, err_msg=name, **TIGHT)


CLASS_WEIGHTS = np.array([0.5, 2.0, 1.0, 0.25, 3.0])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("extra", [{}, {"weight": CLASS_WEIGHTS}, {"label_smoothing": 0.2}, {"ignore_index": 3},
                                   {"weight": CLASS_WEIGHTS, "label_smoothing": 0.1, "ignore_index": 2}],
                         ids=["plain", "weights", "smoothing", "ignore3", "all"])
def test_class_index_targets_match_torch(reduction, extra):
    kiln_extra = dict(extra)
    torch_extra = {k: torch.tensor(v) if k == "weight" else v for k, v in extra.items()}
    data = arrays(ignore_index=extra.get("ignore_index", -100))
    assert_matches_torch(data, kiln_options={"reduction": reduction, **kiln_extra}, reduction=reduction, **torch_extra)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_probability_targets_and_k_dimensional_loss_match_torch(reduction):
    assert_matches_torch(arrays(probabilities=True, seed=1), reduction=reduction, label_smoothing=0.1)
    assert_matches_torch(arrays(out_features=(3, 2), seed=2), reduction=reduction)
    assert_matches_torch(arrays(out_features=(3,), seed=3, probabilities=True), reduction=reduction)


def test_an_unbatched_input_matches_torch():
    for reduction in ("mean", "none"):
        assert_matches_torch(arrays(batch=(), seed=4), reduction=reduction)
        assert_matches_torch(arrays(batch=(), seed=5, probabilities=True), reduction=reduction)


@pytest.mark.parametrize("fields", [{}, {"batch_chunk_size": 2}, {"chunking_method": "aspect_ratio:1"}, {"acc_policy": "compact"},
                                    {"allow_retain_graph": True, "acc_dtype": "float64"}])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_options_give_torchs_chunked_numbers(fields, reduction):
    """kiln computes the reference with any valid options; torch's chunked op agrees with it to rounding."""
    torch_fields = {k: torch.float64 if k == "acc_dtype" else v for k, v in fields.items()}
    data = arrays(batch=(9,), seed=6)
    assert_matches_torch(data, kiln_options={"reduction": reduction, "weight": CLASS_WEIGHTS, "options": nn.LinearCrossEntropyOptions(**fields)},
                         reduction=reduction, weight=torch.tensor(CLASS_WEIGHTS), options=torch.nn.LinearCrossEntropyOptions(**torch_fields))


def test_the_module_matches_torchs_and_loads_its_state():
    kiln_module = nn.LinearCrossEntropyLoss(4, 5, out_features=(2,), bias=True, dtype="float64", weight=CLASS_WEIGHTS, label_smoothing=0.05)
    twin = torch.nn.LinearCrossEntropyLoss(4, 5, out_features=(2,), bias=True, dtype=torch.float64, weight=torch.tensor(CLASS_WEIGHTS),
                                           label_smoothing=0.05)
    kiln_module.load_state_dict({k: v.numpy() for k, v in twin.state_dict().items() if k.startswith("linear.")})
    assert kiln_module.linear.weight.data.shape == (10, 4) and kiln_module.linear.bias.data.shape == (10,)
    x, _, _, t = arrays(out_features=(2,), seed=7)
    np.testing.assert_allclose(kiln.compile(kiln_module, batch_dim=None)(x, t), twin(torch.tensor(x), torch.tensor(t)).item(), **TIGHT)
    plain = nn.LinearCrossEntropyLoss(4, 5, options=nn.LinearCrossEntropyOptions(batch_chunk_size=8))
    assert plain.extra_repr() == torch.nn.LinearCrossEntropyLoss(4, 5, options=torch.nn.LinearCrossEntropyOptions(batch_chunk_size=8)).extra_repr()
    assert plain.linear.bias is None


def test_three_sgd_steps_through_kilns_gradients_match_torchs_module():
    kiln_module = nn.LinearCrossEntropyLoss(4, 5, bias=True, dtype="float64")
    twin = torch.nn.LinearCrossEntropyLoss(4, 5, bias=True, dtype=torch.float64)
    twin.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in kiln_module.state_dict().items()})
    optimizer = torch.optim.SGD(twin.parameters(), lr=0.5)
    x, _, _, t = arrays(batch=(8,), seed=8, ignored=False)
    grad = kiln.compile(lambda w, b, x, t: kiln.grad(lambda w, b: F.linear_cross_entropy(x, w, t, linear_bias=b), argnums=(0, 1))(w, b),
                        batch_dim=None)
    w, b = np.asarray(kiln_module.linear.weight.data).copy(), np.asarray(kiln_module.linear.bias.data).copy()
    for _ in range(3):
        optimizer.zero_grad()
        twin(torch.tensor(x), torch.tensor(t)).backward()
        optimizer.step()
        dw, db = grad(w, b, x, t)
        w, b = w - 0.5 * dw, b - 0.5 * db
    np.testing.assert_allclose(w, twin.linear.weight.detach().numpy(), **TIGHT)
    np.testing.assert_allclose(b, twin.linear.bias.detach().numpy(), **TIGHT)


@pytest.mark.parametrize(("call", "message"), [
    (lambda x, w, t: F.linear_cross_entropy(x.reshape(1, 6, 4), w, t), "expected input with dimensionality 1 or 2"),
    (lambda x, w, t: F.linear_cross_entropy(x[:, :3], w, t), "expected equal input and linear_weight last dimensions"),
    (lambda x, w, t: F.linear_cross_entropy(x, w, t, linear_bias=w[:, 0].reshape(5, 1)), r"expected linear_bias shape \(5,\)"),
    (lambda x, w, t: F.linear_cross_entropy(x, w, t, options=nn.LinearCrossEntropyOptions(acc_dtype="float32")),
     "acc_dtype=float32 differs from the input's f64; kiln has no mixed-precision accumulation"),
    (lambda x, w, t: F.linear_cross_entropy(x, w, x.matmul(w.t()).softmax(-1), ignore_index=0), "ignore_index cannot be specified"),
])
def test_errors_name_the_users_line(call, message):
    x, w, _, t = arrays()
    with pytest.raises(KilnError, match=rf"(?s)test_linear_cross_entropy.py:\d+.*{message}"):
        kiln.compile(call, batch_dim=None)(x, w, t)


@pytest.mark.parametrize(("fields", "message"), [({"acc_policy": "fast"}, "invalid acc_policy"), ({"chunking_method": "square"}, "invalid chunking_method"),
                                                  ({"batch_chunk_size": 0}, "batch_chunk_size must be a positive int")])
def test_options_are_checked_as_torch_checks_them(fields, message):
    with pytest.raises(ValueError, match=message):
        nn.LinearCrossEntropyOptions(**fields)
    with pytest.raises(ValueError):
        torch.nn.LinearCrossEntropyOptions(**fields)
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.LinearCrossEntropyLoss(4, 5, label_smoothing=1.5)


def test_chunking_in_the_graph_would_raise_the_planned_peak():
    """What ``benchmarks/linear_cross_entropy_memory.py`` measures, at a small size: the chunked form (checkpointed
    chunks) gives the same loss, and a higher planned peak, so kiln does not chunk."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "benchmarks"))
    import linear_cross_entropy_memory as benchmark

    peaks = {}
    for chunk in (None, 16):
        run, memory = benchmark.planned_step(64, 8, 256, chunk)
        peaks[chunk] = memory["peak"]
        losses = [float(run()) for _ in range(2)]
        peaks[(chunk, "losses")] = losses
    np.testing.assert_allclose(peaks[(16, "losses")], peaks[(None, "losses")], rtol=1e-5)
    assert peaks[16] > peaks[None]
