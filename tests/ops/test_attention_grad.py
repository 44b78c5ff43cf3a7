"""``nn.scaled_dot_product_attention_grad``: the attention's whole backward as one op, against PyTorch's autograd.

The VJP of ``nn.scaled_dot_product_attention`` is this one op (three results:
dq, dk, dv), so a backend can lower the backward as a unit; its decomposition
is the math, run here on the NumPy backend.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.ir import Builder, Graph
from kiln.compiler.errors import ShapeError
from kiln.compiler.ir.types import TensorType
from oracles import require_torch

GRAD = "nn.scaled_dot_product_attention_grad"
CASES = [  # q, k, v shapes, a mask shape (or None), causal, scale
    ((2, 3, 4), (2, 5, 4), (2, 5, 6), None, False, None),
    ((2, 4, 3), (2, 4, 3), (2, 4, 3), None, True, None),
    ((2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4), (2, 1, 1, 5), False, None),
    ((1, 4, 2), (1, 4, 2), (1, 4, 2), (4, 4), True, 0.3),
    ((2, 3, 6, 4), (1, 3, 6, 4), (1, 3, 6, 4), None, True, 0.5),  # keys and values broadcast over the batch
]


def _grad_graph(shapes, mask_shape, causal, scale):
    graph = Graph("attention_grad")
    q, k, v = (graph.add_input(TensorType(shape, "f64"), name) for shape, name in zip(shapes, "qkv"))
    g = graph.add_input(TensorType(_output_shape(*shapes), "f64"), "g")
    masks = [graph.add_input(TensorType(mask_shape, "bool"), "keep")] if mask_shape else []
    graph.outputs = list(Builder(graph).op(GRAD, q, k, v, g, *masks, causal=causal, scale=scale))
    return graph


def _output_shape(q, k, v):
    batch = tuple(a if a != 1 else b for a, b in zip(q[:-2], k[:-2]))
    return batch + q[-2:-1] + v[-1:]


def _inputs(rng, shapes, mask_shape):
    q, k, v = (rng.standard_normal(s) for s in shapes)
    arrays = [q, k, v, rng.standard_normal(_output_shape(*shapes))]
    if mask_shape:
        keep = rng.random(mask_shape) < 0.6
        keep[..., 0] = True  # no fully masked row
        arrays.append(keep)
    return arrays


def _torch_grads(torch, arrays, causal, scale):
    q, k, v, g, *mask = [torch.tensor(a) for a in arrays]
    for t in (q, k, v):
        t.requires_grad_(True)
    keep = mask[0] if mask else None
    if causal:
        tril = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        keep = tril if keep is None else keep & tril
    out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep, scale=scale)
    out.backward(g)
    return [t.grad.numpy() for t in (q, k, v)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{'x'.join(map(str, c[0]))}-mask{c[3]}-causal{c[4]}")
def test_the_grad_op_matches_torch_autograd(case):
    torch = require_torch()
    shapes, mask_shape, causal, scale = case[:3], case[3], case[4], case[5]
    arrays = _inputs(np.random.default_rng(0), shapes, mask_shape)
    run = NumpyBackend().compile(_grad_graph(shapes, mask_shape, causal, scale))
    for actual, expected in zip(run(*arrays), _torch_grads(torch, arrays, causal, scale)):
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


def test_one_executable_serves_every_batch_size():
    torch = require_torch()
    run = NumpyBackend().compile(_grad_graph((("N", 4, 3),) * 3, None, True, None))
    for n in (2, 5):
        arrays = _inputs(np.random.default_rng(n), ((n, 4, 3),) * 3, None)
        for actual, expected in zip(run(*arrays), _torch_grads(torch, arrays, True, None)):
            np.testing.assert_allclose(actual, expected, rtol=1e-10, atol=1e-12)


def test_a_cotangent_of_the_wrong_shape_is_refused_with_both_types():
    graph = Graph("bad")
    q, k, v = (graph.add_input(TensorType((2, 4, 3), "f64")) for _ in range(3))
    g = graph.add_input(TensorType((2, 4, 5), "f64"))
    with pytest.raises(ShapeError, match=r"cotangent must have the output's type tensor<2x4x3xf64>, got tensor<2x4x5xf64>"):
        Builder(graph).op(GRAD, q, k, v, g)


def encoder_layer_step_op_names() -> list[str]:
    """The op names of a compiled training step of one ``TransformerEncoderLayer`` (one attention, two layer norms)."""
    kiln.manual_seed(0)
    model = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, batch_first=True)  # attention dropout would write it out
    step = kiln.compile_train_step(model, lambda out, target: ((out - target) ** 2).mean(), kiln.optim.SGD(model.parameters(), lr=0.1))
    x = np.random.default_rng(0).standard_normal((3, 5, 8)).astype(np.float32)
    step(x, x)
    return [op.name for op in step.graph.ops]


def test_a_training_step_has_one_backward_op_per_attention():
    names = encoder_layer_step_op_names()
    assert names.count("nn.scaled_dot_product_attention") == names.count(GRAD) == 1
