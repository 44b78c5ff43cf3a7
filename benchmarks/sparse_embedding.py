"""Eager word2vec (skip-gram, negative sampling) step time: kiln's sparse embedding gradients + SparseAdam, kiln's dense
gradients + Adam, and torch's sparse path, side by side (min and median of 24 steps, milliseconds).

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/sparse_embedding.py [vocab]
"""

from __future__ import annotations

import sys
import time

import numpy as np

import kiln

DIM, BATCH, NEGATIVES = 64, 256, 5


def skip_gram(torch, vocab, sparse):
    nn, F = torch.nn, torch.nn.functional

    class SkipGramModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.u_embeddings = nn.Embedding(vocab, DIM, sparse=sparse)
            self.v_embeddings = nn.Embedding(vocab, DIM, sparse=sparse)

        def forward(self, pos_u, pos_v, neg_v):
            emb_u, emb_v, emb_neg_v = self.u_embeddings(pos_u), self.v_embeddings(pos_v), self.v_embeddings(neg_v)
            score = -F.logsigmoid(torch.clamp(torch.sum(emb_u * emb_v, dim=1), max=10, min=-10))
            neg_score = torch.clamp(torch.bmm(emb_neg_v, emb_u.unsqueeze(2)).squeeze(), max=10, min=-10)
            return torch.mean(score - torch.sum(F.logsigmoid(-neg_score), dim=1))

    return SkipGramModel()


def step_times(torch, vocab, sparse, optimizer_name, batches):
    model = skip_gram(torch, vocab, sparse)
    optimizer = getattr(torch.optim, optimizer_name)(list(model.parameters()), lr=0.01)
    times = []
    for _ in range(3):
        for batch in batches:
            pos_u, pos_v, neg_v = (torch.tensor(b) for b in batch)
            start = time.perf_counter()
            optimizer.zero_grad()
            model(pos_u, pos_v, neg_v).backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    return min(times) * 1e3, float(np.median(times)) * 1e3


def main(vocab: int) -> None:
    rng = np.random.default_rng(0)
    batches = [(rng.integers(0, vocab, BATCH), rng.integers(0, vocab, BATCH), rng.integers(0, vocab, (BATCH, NEGATIVES)))
               for _ in range(8)]
    runs = [("kiln sparse=True, SparseAdam", kiln, True, "SparseAdam"), ("kiln sparse=False, Adam", kiln, False, "Adam")]
    try:
        import torch

        runs.append(("torch sparse=True, SparseAdam", torch, True, "SparseAdam"))
    except ImportError:
        pass
    for name, library, sparse, optimizer_name in runs:
        fastest, median = step_times(library, vocab, sparse, optimizer_name, batches)
        print(f"vocab {vocab}: {name}: min {fastest:.2f} ms, median {median:.2f} ms")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50_000)
