"""W4 of ``train_step.py``: a GPT-style LM step in kiln-numpy and in PyTorch, and kiln's compile time by phase.

The model is ``examples/gpt_tiny.py``'s ``GPT`` (token + learned position
embeddings, pre-LayerNorm blocks, causal multi-head attention, an MLP with
GPT-2's tanh-approximated GELU, a final LayerNorm, an untied head); PyTorch
runs the same architecture from the same weights (the parameter names match
``torch.nn``'s). Imported by ``train_step.py`` after it pins the thread pools.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from gpt_tiny import GPT  # noqa: E402  (examples/ is not a package)
from torch_peer import torch_training_step  # noqa: E402


@dataclass(frozen=True)
class GPTConfig:
    vocab: int = 256
    context: int = 64
    d_model: int = 128
    heads: int = 4
    layers: int = 2
    batch: int = 16
    lr: float = 1e-3
    weight_decay: float = 0.01


def gpt_batch(config: GPTConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, config.vocab, (config.batch, config.context + 1))
    return tokens[:, :-1].copy(), tokens[:, 1:].copy()


def gpt_flops(config: GPTConfig) -> int:
    """Matmul FLOPs of one step: 3x the forward's (input and weight gradients); embeddings are gathers, not counted."""
    tokens, d, t = config.batch * config.context, config.d_model, config.context
    projections = 2 * tokens * d * (3 * d + d + 2 * 4 * d)  # qkv, output projection, the MLP's two layers
    attention = 2 * 2 * config.batch * t * t * d  # q k^T and attention @ v over all heads
    head = 2 * tokens * d * config.vocab
    return 3 * (config.layers * (projections + attention) + head)


def kiln_gpt(config: GPTConfig) -> tuple[Any, Any]:
    """The model and its compiled (not yet traced) AdamW training step."""
    import kiln
    from kiln.runtime.data import lm_loss

    kiln.manual_seed(0)
    model = GPT(config.vocab, config.context, config.d_model, config.heads, config.layers)
    optimizer = kiln.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return model, kiln.compile_train_step(model, lm_loss, optimizer)


def kiln_gpt_step(config: GPTConfig) -> tuple[Callable[[], object], Any, Any]:
    model, step = kiln_gpt(config)
    x, y = gpt_batch(config)
    step(x, y)
    return (lambda: step(x, y)), model, step


def compile_phases(config: GPTConfig) -> dict[str, float]:
    """Seconds per phase of a first compile (code cache cleared): trace + autodiff, graph passes, backend (lowering,
    fusion, memory plan, code generation); also the op counts of the step graph and of the backend's lowered graph."""
    from kiln.backends.numpy import codegen
    from kiln.runtime.train_step import batch_specs, collection_paused

    codegen._CODE_CACHE.clear()
    model, step = kiln_gpt(config)
    specs = batch_specs(gpt_batch(config))
    with collection_paused():  # as TrainStep.compile
        return _timed_phases(config, model, step, specs)


def _timed_phases(config: GPTConfig, model: Any, step: Any, specs: list[Any]) -> dict[str, float]:
    from kiln.backends import get_backend
    from kiln.compiler.passes.manager import PassManager
    from kiln.runtime.donation import step_donations
    from kiln.runtime.step_graph import build_step_graph

    start = time.perf_counter()
    step_graph = build_step_graph(model, step.loss_fn, step.optimizer, specs, step.options)
    traced = time.perf_counter()
    PassManager(step.pipeline).run(step_graph.graph)
    step_graph.graph.donations = step_donations(step_graph, len(specs))
    passed = time.perf_counter()
    executable = get_backend("numpy").compile(step_graph.graph)
    done = time.perf_counter()
    return {"layers": config.layers, "ops": len(step_graph.graph.ops), "lowered_ops": len(executable.graph.ops),
            "trace_s": traced - start, "passes_s": passed - traced, "backend_s": done - passed, "total_s": done - start}


def torch_gpt_step(model: Any, config: GPTConfig, threads: int, compiled: bool = False) -> Callable[[], object]:
    """The same model in PyTorch (weights copied from ``model``), AdamW, one step per call."""
    import torch

    torch.set_num_threads(threads)
    net = _torch_gpt(torch, config)
    net.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in model.state_dict().items()})
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    x, y = (torch.from_numpy(a) for a in gpt_batch(config))
    loss_of = (lambda inputs, targets: torch.nn.functional.cross_entropy(net(inputs).reshape(-1, config.vocab), targets.reshape(-1)))
    forward = torch.compile(loss_of) if compiled else loss_of
    return torch_training_step(optimizer, forward, x, y)


def _torch_gpt(torch: Any, config: GPTConfig) -> Any:
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            d = config.d_model
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, config.heads, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d), nn.Dropout(0.0))
            self.register_buffer("mask", torch.triu(torch.ones(config.context, config.context, dtype=torch.bool), 1), persistent=False)

        def forward(self, x):
            h = self.ln1(x)
            mask = self.mask[: x.shape[1], : x.shape[1]]
            x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask, is_causal=True)[0]
            return x + self.mlp(self.ln2(x))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embedding = nn.Embedding(config.vocab, config.d_model)
            self.position_embedding = nn.Embedding(config.context, config.d_model)
            self.blocks = nn.Sequential(*[Block() for _ in range(config.layers)])
            self.norm = nn.LayerNorm(config.d_model)
            self.head = nn.Linear(config.d_model, config.vocab, bias=False)

        def forward(self, tokens):
            positions = torch.arange(tokens.shape[1])
            return self.head(self.norm(self.blocks(self.token_embedding(tokens) + self.position_embedding(positions))))

    return Model()
