"""W6 of ``train_step.py``: a character-level LSTM language model in kiln-numpy and in PyTorch.

Embedding (vocab 64, 32 features), a 2-layer LSTM (hidden 128, batch-first, sequence 64), a linear head to the
vocabulary at every step, cross-entropy over all positions; Adam lr 1e-3, batch 32. kiln unrolls the time loop when it
traces (the step graph holds every time step); PyTorch eager runs its fused CPU LSTM. PyTorch runs the same layers
from the same weights (the parameter names match). Imported by ``train_step.py`` after it pins the thread pools.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from torch_peer import torch_training_step


@dataclass(frozen=True)
class LSTMConfig:
    batch: int = 32
    lr: float = 1e-3
    vocab: int = 64
    embedding: int = 32
    hidden: int = 128
    layers: int = 2
    length: int = 64


def lstm_batch(config: LSTMConfig) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and their next-token targets (the ids shifted by one)."""
    tokens = np.random.default_rng(0).integers(0, config.vocab, (config.batch, config.length + 1))
    return tokens[:, :-1].copy(), tokens[:, 1:].copy()


def lstm_flops(config: LSTMConfig) -> int:
    """Matmul FLOPs of one step: 3x the forward's (the embedding lookup is no matmul)."""
    tokens, gates = config.batch * config.length, 4 * config.hidden
    inputs = [config.embedding] + [config.hidden] * (config.layers - 1)
    recurrent = sum(2 * tokens * gates * (features + config.hidden) for features in inputs)
    head = 2 * tokens * config.hidden * config.vocab
    return 3 * (recurrent + head)


def language_model(nn: Any, config: LSTMConfig) -> Any:
    """The model in ``nn`` (``kiln.nn`` or ``torch.nn``): logits ``(N * L, vocab)``."""

    class CharLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(config.vocab, config.embedding)
            self.lstm = nn.LSTM(config.embedding, config.hidden, num_layers=config.layers, batch_first=True)
            self.head = nn.Linear(config.hidden, config.vocab)

        def forward(self, tokens: Any) -> Any:
            hidden, _ = self.lstm(self.embedding(tokens))
            return self.head(hidden).reshape((-1, config.vocab))

    return CharLSTM()


def kiln_lstm(config: LSTMConfig) -> tuple[Any, Any]:
    """The model and its compiled (not yet traced) Adam training step."""
    import kiln
    import kiln.nn as nn
    import kiln.nn.functional as F

    kiln.manual_seed(0)
    model = language_model(nn, config)
    loss = lambda logits, targets: F.cross_entropy(logits, targets.reshape((-1,)))  # noqa: E731
    return model, kiln.compile_train_step(model, loss, kiln.optim.Adam(model.parameters(), lr=config.lr))


def kiln_lstm_step(config: LSTMConfig) -> tuple[Callable[[], object], Any, Any]:
    """The kiln step (compiled by its first call), the model and the step object."""
    model, step = kiln_lstm(config)
    x, y = lstm_batch(config)
    step(x, y)
    return (lambda: step(x, y)), model, step


def torch_lstm_step(model: Any, config: LSTMConfig, threads: int, compiled: bool = False) -> Callable[[], object]:
    """The same network in PyTorch (weights copied from ``model``), Adam, one step per call."""
    import torch

    torch.set_num_threads(threads)
    net = language_model(torch.nn, config)
    net.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in model.state_dict().items()})
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    x, y = (torch.from_numpy(a) for a in lstm_batch(config))
    loss_of = lambda tokens, targets: torch.nn.functional.cross_entropy(net(tokens), targets.reshape(-1))  # noqa: E731
    return torch_training_step(optimizer, torch.compile(loss_of) if compiled else loss_of, x, y)
