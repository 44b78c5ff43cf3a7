"""A GPT-style character language model, compiled by kiln, trained on Python's bundled documentation.

    python examples/gpt_tiny.py                  # ~1-2 minutes on a laptop CPU
    python examples/gpt_tiny.py --steps 2000 --d-model 128

Token + learned positional embeddings, pre-LayerNorm blocks with multi-head
causal self-attention and a GELU MLP, a final LayerNorm and an untied head.
Prints the unigram entropy of the text (what a model without context would
reach), the training and held-out loss, and samples text at the end.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import kiln
import kiln.nn as nn
from kiln.runtime.data import CharTokenizer, char_corpus, lm_loss, lm_windows, unigram_entropy


class Block(nn.Module):
    """``x + attn(ln1(x))``, then ``x + mlp(ln2(x))``; the MLP uses GPT-2's tanh-approximated GELU."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU("tanh"), nn.Linear(4 * d_model, d_model), nn.Dropout(dropout))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False, is_causal=True)[0]
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab_size: int, context: int, d_model: int = 64, heads: int = 4, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.context = context
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*[Block(d_model, heads, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size, bias=False)

    def forward(self, tokens):
        positions = np.arange(tokens.shape[1])
        x = self.token_embedding(tokens) + self.position_embedding(positions)
        return self.head(self.norm(self.blocks(x)))


def sample(model: GPT, tokenizer: CharTokenizer, prompt: np.ndarray, length: int, temperature: float = 0.8, seed: int = 0) -> str:
    """Generate ``length`` characters after ``prompt`` (at least ``context`` ids), always feeding one full window: one compile."""
    predict = kiln.compile(model.eval())
    rng = np.random.default_rng(seed)
    ids = list(prompt)
    for _ in range(length):
        logits = predict(np.asarray(ids[-model.context :], dtype=np.int64)[None])[0, -1] / temperature
        probabilities = np.exp(logits - logits.max())
        ids.append(int(rng.choice(len(probabilities), p=probabilities / probabilities.sum())))
    model.train()
    return tokenizer.decode(ids[len(prompt) :])


def train(steps: int = 600, batch_size: int = 32, context: int = 32, d_model: int = 64, heads: int = 4, layers: int = 2, lr: float = 3e-3,
          characters: int = 200_000, seed: int = 0, verbose: bool = True, sample_length: int = 300) -> dict[str, float]:
    """Train; returns the unigram entropy, the first and last training losses and the held-out loss (nats/char)."""
    kiln.manual_seed(seed)
    tokenizer, ids = char_corpus(characters)
    split = int(len(ids) * 0.9)
    inputs, labels = lm_windows(ids[:split], context, stride=context // 2)
    held_inputs, held_labels = lm_windows(ids[split:], context)
    model = GPT(tokenizer.vocab_size, context, d_model, heads, layers)
    step = kiln.compile_train_step(model, lm_loss, kiln.optim.Adam(model.parameters(), lr=lr))
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


def evaluate(model: GPT, inputs: np.ndarray, labels: np.ndarray) -> float:
    loss = kiln.compile(lambda tokens, targets: lm_loss(model(tokens), targets))
    model.eval()
    value = float(loss(inputs, labels))
    model.train()
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--context", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    train(args.steps, args.batch_size, args.context, args.d_model, args.heads, args.layers, args.lr)


if __name__ == "__main__":
    main()
