"""A character-level LSTM language model, compiled by kiln, trained on Python's bundled documentation.

    python examples/lstm_chars.py                # ~1 minute on a laptop CPU
    python examples/lstm_chars.py --steps 1500 --hidden 256

An embedding, a 2-layer ``nn.LSTM`` and a linear head, trained with Adam on windows of ``--context`` characters
(kiln unrolls the LSTM's time loop when it traces the step). Prints the unigram entropy of the text (what a model
without context would reach), the training and held-out loss, and samples text at the end: sampling compiles one
*time step* of the network, ``(token, h, c) -> (logits, h', c')``, and carries the state from character to
character, so each new character costs one step however long the text grows.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import kiln
import kiln.nn as nn
from kiln.runtime.data import CharTokenizer, char_corpus, lm_loss, lm_windows, unigram_entropy


class CharLSTM(nn.Module):
    def __init__(self, vocab_size: int, embedding: int = 32, hidden: int = 128, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding)
        self.lstm = nn.LSTM(embedding, hidden, num_layers=layers, batch_first=True, dropout=dropout)
        self.head = nn.Linear(hidden, vocab_size)

    def forward(self, tokens, state=None):
        """``(N, T)`` token ids (and optionally ``(h, c)``) -> ``(N, T, vocab)`` logits; with a state, also the new one."""
        hidden, new_state = self.lstm(self.embedding(tokens), state)
        logits = self.head(hidden)
        return logits if state is None else (logits, *new_state)


def sample(model: CharLSTM, tokenizer: CharTokenizer, prompt: np.ndarray, length: int, temperature: float = 0.8, seed: int = 0) -> str:
    """``length`` characters after ``prompt``: the prompt runs once through the whole network, then one compiled time
    step per character carries ``(h, c)`` forward (two compiles in all: the prompt's length and one step)."""
    model.eval()
    layers, hidden = model.lstm.num_layers, model.lstm.hidden_size
    zeros = np.zeros((layers, 1, hidden), np.float32)
    run = kiln.compile(lambda tokens, h, c: model(tokens, (h, c)), batch_dim=(0, 1, 1))  # h, c: (layers, N, hidden)
    logits, h, c = run(np.asarray(prompt, np.int64)[None], zeros, zeros)
    rng, ids = np.random.default_rng(seed), []
    for _ in range(length):
        scaled = logits[0, -1] / temperature
        probabilities = np.exp(scaled - scaled.max())
        ids.append(int(rng.choice(len(probabilities), p=probabilities / probabilities.sum())))
        logits, h, c = run(np.asarray([[ids[-1]]], np.int64), h, c)
    model.train()
    return tokenizer.decode(ids)


def evaluate(model: CharLSTM, inputs: np.ndarray, labels: np.ndarray) -> float:
    loss = kiln.compile(lambda tokens, targets: lm_loss(model(tokens), targets))
    model.eval()
    value = float(loss(inputs, labels))
    model.train()
    return value


def train(steps: int = 500, batch_size: int = 32, context: int = 32, hidden: int = 128, layers: int = 2, lr: float = 3e-3,
          characters: int = 200_000, seed: int = 0, verbose: bool = True, sample_length: int = 300) -> dict[str, float]:
    """Train; returns the unigram entropy, the first and last training losses and the held-out loss (nats/char)."""
    kiln.manual_seed(seed)
    tokenizer, ids = char_corpus(characters)
    split = int(len(ids) * 0.9)
    inputs, labels = lm_windows(ids[:split], context, stride=context // 2)
    held_inputs, held_labels = lm_windows(ids[split:], context)
    model = CharLSTM(tokenizer.vocab_size, hidden=hidden, layers=layers)
    step = kiln.compile_train_step(model, lm_loss, kiln.optim.Adam(model.parameters(), lr=lr), clip_grad_norm=1.0)
    rng = np.random.default_rng(seed)
    entropy = unigram_entropy(ids[:split])
    if verbose:
        print(f"{len(ids)} characters, vocabulary {tokenizer.vocab_size}, unigram entropy {entropy:.3f} nats/char")
    losses, start = [], time.perf_counter()
    for index in range(steps):
        batch = rng.integers(0, len(inputs), batch_size)
        losses.append(step(inputs[batch], labels[batch]))
        if verbose and (index % 100 == 0 or index == steps - 1):
            print(f"step {index:4d}  loss {np.mean(losses[-20:]):.3f}  ({time.perf_counter() - start:.1f} s)")
    held_out = evaluate(model, held_inputs[:256], held_labels[:256])
    if verbose:
        print(f"held-out loss {held_out:.3f} nats/char (unigram entropy {entropy:.3f})")
        print("sample:\n" + sample(model, tokenizer, held_inputs[0], sample_length))
    return {"unigram_entropy": entropy, "first_loss": losses[0], "final_loss": float(np.mean(losses[-20:])), "held_out_loss": held_out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--context", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    train(args.steps, args.batch_size, args.context, args.hidden, args.layers, args.lr)


if __name__ == "__main__":
    main()
