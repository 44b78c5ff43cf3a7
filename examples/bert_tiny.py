"""A BERT-style masked-token model, compiled by kiln, on lines of Python's bundled documentation.

    python examples/bert_tiny.py              # a few minutes on a laptop CPU (400 steps)

Lines of different lengths are padded to one length; the padding is masked
out of attention (``src_key_padding_mask``) and out of the loss. 15% of the
real characters are replaced by a ``[MASK]`` token and the model learns to
restore them: token + positional embeddings, pre-LayerNorm
``TransformerEncoderLayer`` blocks (GELU, dropout 0.1, whose masks the
training step draws from a fresh seed each step), a final LayerNorm and a head.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import kiln
import kiln.nn as nn
from kiln.runtime.data import IGNORE_INDEX, CharTokenizer, lm_loss, load_pydoc_corpus, unigram_entropy


class BERT(nn.Module):
    def __init__(self, vocab_size: int, length: int, pad_id: int, d_model: int = 64, heads: int = 4, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.pad_id = pad_id
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Embedding(length, d_model)
        self.layers = nn.Sequential(*[
            nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout, "gelu", batch_first=True, norm_first=True) for _ in range(layers)
        ])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, tokens):
        padding = tokens.eq(self.pad_id)  # True = padding, PyTorch's key_padding_mask convention
        x = self.token_embedding(tokens) + self.position_embedding(np.arange(tokens.shape[1]))
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding)
        return self.head(self.norm(x))


def load_lines(length: int, count: int) -> tuple[CharTokenizer, np.ndarray]:
    """``count`` documentation lines of 8..``length`` characters, encoded and right-padded with ``<pad>``."""
    lines = [line.strip() for line in load_pydoc_corpus().splitlines()]
    lines = [line for line in lines if 8 <= len(line) <= length][:count]
    tokenizer = CharTokenizer.train(lines)
    tokens = np.full((len(lines), length), tokenizer.pad_id, dtype=np.int64)
    for row, line in enumerate(lines):
        ids = tokenizer.encode(line)
        tokens[row, : len(ids)] = ids
    return tokenizer, tokens


def mask_tokens(tokens: np.ndarray, pad_id: int, mask_id: int, rng: np.random.Generator, rate: float = 0.15):
    """``(inputs, labels)``: ``rate`` of the real tokens become ``mask_id``; labels hold them, ``IGNORE_INDEX`` elsewhere."""
    chosen = (rng.random(tokens.shape) < rate) & (tokens != pad_id)
    return np.where(chosen, mask_id, tokens), np.where(chosen, tokens, IGNORE_INDEX)


def train(steps: int = 400, batch_size: int = 32, length: int = 48, d_model: int = 64, heads: int = 4, layers: int = 2, lr: float = 3e-3,
          lines: int = 8000, seed: int = 0, verbose: bool = True) -> dict[str, float]:
    """Train; returns the first and final masked-token losses and the unigram entropy of the characters (nats)."""
    kiln.manual_seed(seed)
    tokenizer, tokens = load_lines(length, lines)
    mask_id = tokenizer.vocab_size  # one extra id past the tokenizer's
    model = BERT(tokenizer.vocab_size + 1, length, tokenizer.pad_id, d_model, heads, layers)
    step = kiln.compile_train_step(model, lm_loss, kiln.optim.Adam(model.parameters(), lr=lr), seed=seed)
    rng = np.random.default_rng(seed)
    entropy = unigram_entropy(tokens[tokens != tokenizer.pad_id])
    losses, start = [], time.perf_counter()
    for index in range(steps):
        inputs, labels = mask_tokens(tokens[rng.integers(0, len(tokens), batch_size)], tokenizer.pad_id, mask_id, rng)
        losses.append(step(inputs, labels))
        if verbose and (index % 100 == 0 or index == steps - 1):
            print(f"step {index:4d}  masked-token loss {np.mean(losses[-20:]):.3f}  ({time.perf_counter() - start:.1f} s)")
    if verbose:
        print(f"unigram entropy of the characters: {entropy:.3f} nats; the model uses the context around each mask to beat it")
    return {"first_loss": losses[0], "final_loss": float(np.mean(losses[-20:])), "unigram_entropy": entropy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    train(args.steps, args.batch_size, lr=args.lr)


if __name__ == "__main__":
    main()
