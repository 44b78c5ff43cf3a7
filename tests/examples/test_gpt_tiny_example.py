"""The tiny GPT: one training step equals PyTorch's (loss and every gradient, then the update); the example trains."""

from __future__ import annotations

import os
import sys

import numpy as np

import kiln
from kiln.backends.numpy import NumpyBackend
from kiln.compiler.autodiff import differentiate
from kiln.compiler.ir.types import DType, TensorType
from kiln.frontend.tensor import Tensor
from kiln.frontend.trace import TraceContext
from kiln.runtime.data import lm_loss
from oracles import require

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import gpt_tiny  # noqa: E402

VOCAB, CONTEXT, D_MODEL, HEADS, LAYERS = 11, 8, 16, 2, 2


def torch_gpt(torch):
    """The same architecture in PyTorch, with the same parameter names."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(D_MODEL)
            self.attn = nn.MultiheadAttention(D_MODEL, HEADS, batch_first=True)
            self.ln2 = nn.LayerNorm(D_MODEL)
            self.mlp = nn.Sequential(nn.Linear(D_MODEL, 4 * D_MODEL), nn.GELU("tanh"), nn.Linear(4 * D_MODEL, D_MODEL), nn.Dropout(0.0))

        def forward(self, x):
            h = self.ln1(x)
            mask = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), 1)
            x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embedding = nn.Embedding(VOCAB, D_MODEL)
            self.position_embedding = nn.Embedding(CONTEXT, D_MODEL)
            self.blocks = nn.Sequential(*[Block() for _ in range(LAYERS)])
            self.norm = nn.LayerNorm(D_MODEL)
            self.head = nn.Linear(D_MODEL, VOCAB, bias=False)

        def forward(self, tokens):
            x = self.token_embedding(tokens) + self.position_embedding(torch.arange(tokens.shape[1]))
            return self.head(self.norm(self.blocks(x)))

    return GPT()


def _batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, (4, CONTEXT + 1))
    return tokens[:, :-1], tokens[:, 1:]


def _kiln_loss_and_grads(model, tokens, labels):
    with TraceContext("gpt_grads") as context:
        names = dict(model.named_parameters())
        context.parameter_names.update({id(p): name for name, p in names.items()})
        inputs = [Tensor(context.graph.add_input(TensorType(a.shape, DType.i64), n)) for a, n in ((tokens, "tokens"), (labels, "labels"))]
        loss = lm_loss(model(inputs[0]), inputs[1])
        grads = differentiate(context.graph, loss.value, [context.value_of(p) for p in names.values()])
        context.graph.outputs = [loss.value, *grads]
    loss, *grads = NumpyBackend().compile(context.graph)(tokens, labels, *[p.data for p in context.parameters])
    return float(loss), dict(zip(names, grads))


def test_one_training_step_matches_pytorch():
    torch = require("torch")
    kiln.manual_seed(0)
    model = gpt_tiny.GPT(VOCAB, CONTEXT, D_MODEL, HEADS, LAYERS)
    reference = torch_gpt(torch)
    reference.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    tokens, labels = _batch()
    loss, grads = _kiln_loss_and_grads(model, tokens, labels)
    torch_loss = torch.nn.functional.cross_entropy(reference(torch.tensor(tokens)).permute(0, 2, 1), torch.tensor(labels))
    torch_loss.backward()
    np.testing.assert_allclose(loss, torch_loss.item(), rtol=1e-6)
    torch_params = dict(reference.named_parameters())
    assert set(grads) == set(torch_params)
    for name, grad in grads.items():
        np.testing.assert_allclose(grad, torch_params[name].grad.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)

    # SGD, not Adam: Adam's first step is lr * sign(grad), and the key bias's gradient is 0 up to rounding
    step = kiln.compile_train_step(model, lm_loss, kiln.optim.SGD(model.parameters(), lr=0.5))
    optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    np.testing.assert_allclose(step(tokens, labels), torch_loss.item(), rtol=1e-6)
    optimizer.step()
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(value, reference.state_dict()[name].numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


def test_example_trains_below_the_unigram_entropy():
    result = gpt_tiny.train(steps=150, batch_size=16, context=16, d_model=32, heads=2, layers=1, lr=1e-2, characters=40_000, verbose=False)
    assert result["final_loss"] < result["first_loss"] - 1.0
    assert result["held_out_loss"] < result["unigram_entropy"] - 0.2
