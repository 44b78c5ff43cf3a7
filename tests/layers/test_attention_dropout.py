"""Attention dropout (``F.scaled_dot_product_attention(dropout_p=)``, ``nn.MultiheadAttention(dropout=)``): the
weights after the softmax are dropped and rescaled, as PyTorch's math path; gradients against finite differences
under a fixed seed; a training step with it runs the same in onnxruntime."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.ir.core import clone_graph
from oracles import require

RNG = np.random.default_rng(0)
BATCH, HEADS, LENGTH, DIM = 4, 2, 32, 8


def _softmax_weights(q, k, causal: bool) -> np.ndarray:
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if causal:
        scores = np.where(np.tril(np.ones(scores.shape[-2:], bool)), scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    return weights / weights.sum(-1, keepdims=True)


def test_dropped_weights_are_zero_or_rescaled_and_a_function_of_the_seed():
    """With ``v`` the identity the output is the dropped weights themselves: each is 0 or softmax / (1 - p)."""
    p = 0.3
    q, k = (RNG.standard_normal((BATCH, HEADS, LENGTH, DIM)) for _ in range(2))
    v = np.broadcast_to(np.eye(LENGTH), (BATCH, HEADS, LENGTH, LENGTH)).copy()
    specs = [kiln.TensorSpec(a.shape, "float64") for a in (q, k, v)]
    graph = kiln.trace(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True), *specs)
    run = NumpyBackend().compile(graph)
    (dropped,), (again,), (other,) = run(q, k, v, np.int64(3)), run(q, k, v, np.int64(3)), run(q, k, v, np.int64(4))
    np.testing.assert_array_equal(dropped, again)
    assert not np.array_equal(dropped, other)
    weights = _softmax_weights(q, k, causal=True)
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], weights[kept] / (1 - p), rtol=1e-12)
    attended = weights > 0  # the causal triangle
    assert not (kept & ~attended).any() and 0.26 < 1 - kept[attended].mean() < 0.34


def test_gradients_match_finite_differences_under_a_fixed_seed():
    """d/dq, dk, dv of sum(attention * w) with a bool mask, the mask fixed by the seed: central differences, f64."""
    p, seed = 0.25, np.int64(11)
    q, k, v = (RNG.standard_normal((2, 3, 5, 4)) for _ in range(3))
    keep = RNG.random((2, 1, 5, 5)) < 0.8
    keep[..., 0] = True
    w = RNG.standard_normal((2, 3, 5, 4))
    specs = [kiln.TensorSpec(a.shape, "float64") for a in (q, k, v)] + [kiln.TensorSpec(keep.shape, "bool")]
    graph = kiln.trace(lambda q, k, v, m: (F.scaled_dot_product_attention(q, k, v, attn_mask=m, dropout_p=p) * w).sum(), *specs)
    loss = NumpyBackend().compile(clone_graph(graph))
    with_grads = clone_graph(graph)
    with_grads.outputs = list(with_grads.outputs) + differentiate(with_grads, with_grads.outputs[0], with_grads.inputs[:3])
    _, *grads = NumpyBackend().compile(with_grads)(q, k, v, keep, seed)
    arrays = [q, k, v]
    for which, grad in enumerate(grads):
        numeric = np.zeros_like(grad)
        for index in np.ndindex(grad.shape):
            shifted = [a.copy() for a in arrays], [a.copy() for a in arrays]
            shifted[0][which][index] += 1e-6
            shifted[1][which][index] -= 1e-6
            numeric[index] = (loss(*shifted[0], keep, seed)[0] - loss(*shifted[1], keep, seed)[0]) / 2e-6
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8, err_msg="dq dk dv"[3 * which : 3 * which + 2])


class _SelfAttention(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.attention, self.head = nn.MultiheadAttention(16, 2, dropout=dropout, batch_first=True), nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.attention(x, x, x, is_causal=True, need_weights=False)[0].mean(1))


def _step(dropout: float, seed: int = 0, backend: str = "numpy"):
    kiln.manual_seed(0)
    model = _SelfAttention(dropout)
    return model, kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.0), seed=seed, backend=backend)


def test_multihead_attention_drops_weights_in_training_and_not_in_eval():
    x, y = RNG.standard_normal((6, 10, 16)).astype(np.float32), np.arange(6) % 3
    model, step = _step(0.5, seed=1)
    losses = [float(step(x, y)) for _ in range(3)]
    assert len(set(losses)) == 3, "lr=0: only a fresh mask per step changes the loss"
    replay = _step(0.5, seed=1)[1]
    assert [float(replay(x, y)) for _ in range(3)] == losses, "the same seed draws the same masks"
    undropped = _step(0.0)[1]
    assert all(abs(loss - float(undropped(x, y))) > 1e-6 for loss in losses)
    eval_graph = kiln.trace(model.eval(), kiln.TensorSpec(x.shape))
    assert "nn.dropout" not in [op.name for op in eval_graph.ops]
    np.testing.assert_allclose(kiln.compile(model.eval())(x), kiln.compile(_step(0.0)[0].eval())(x), rtol=1e-6)


def test_a_training_step_with_attention_dropout_runs_the_same_in_onnxruntime():
    require("onnxruntime")
    x, y = RNG.standard_normal((6, 10, 16)).astype(np.float32), np.arange(6) % 3
    _, step = _step(0.3, seed=2)
    step(x, y)
    assert kiln.parity(step, [x, y], backends=["onnxruntime"]).ok
