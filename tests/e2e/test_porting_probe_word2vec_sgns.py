"""Porting probe: word2vec skip-gram with negative sampling, written as the common PyTorch implementations write it
(``nn.Embedding(sparse=True)`` input and output tables, ``bmm`` over the negatives, ``F.logsigmoid``,
``optim.SparseAdam`` with a cosine schedule), run from one program text in kiln and torch 2.13 in float64: the losses,
the sparse gradients (entries and dense form) and the tables after each step agree to 1e-12, eagerly and with the
whole step ``kiln.compile``d (a sparse lookup there runs the step eagerly, warned, as ``torch.compile`` does what it
cannot capture; ``fullgraph=True`` refuses it, naming the lookup). Float32 once, as word2vec trains.

What was missing, built with focused tests: a sparse ``.grad`` (tests/frontend/test_sparse_grad_vs_torch.py) and
``SparseAdam`` and the sparse paths of SGD/Adagrad (tests/optim/test_sparse_adam_vs_torch.py)."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, run_in_lockstep

VOCAB, DIM, NEGATIVES = 12, 5, 4


def skip_gram(torch, nn, F):
    class SkipGramModel(nn.Module):
        def __init__(self, emb_size, emb_dimension):
            super().__init__()
            self.emb_dimension = emb_dimension
            self.u_embeddings = nn.Embedding(emb_size, emb_dimension, sparse=True)
            self.v_embeddings = nn.Embedding(emb_size, emb_dimension, sparse=True)
            initrange = 1.0 / self.emb_dimension
            nn.init.uniform_(self.u_embeddings.weight.data, -initrange, initrange)
            nn.init.uniform_(self.v_embeddings.weight.data, -initrange, initrange)  # the reference starts v at 0

        def forward(self, pos_u, pos_v, neg_v):
            emb_u = self.u_embeddings(pos_u)
            emb_v = self.v_embeddings(pos_v)
            emb_neg_v = self.v_embeddings(neg_v)
            score = torch.sum(torch.mul(emb_u, emb_v), dim=1)
            score = torch.clamp(score, max=10, min=-10)
            score = -F.logsigmoid(score)
            neg_score = torch.bmm(emb_neg_v, emb_u.unsqueeze(2)).squeeze()
            neg_score = torch.clamp(neg_score, max=10, min=-10)
            neg_score = -torch.sum(F.logsigmoid(-neg_score), dim=1)
            return torch.mean(score + neg_score)

    return SkipGramModel(VOCAB, DIM)


def _batches(steps=4, size=6):
    rng = np.random.default_rng(0)
    return [(rng.integers(0, VOCAB, size), rng.integers(0, VOCAB, size), rng.integers(0, VOCAB, (size, NEGATIVES)))
            for _ in range(steps)]


def _sparse_record(grad, name):
    """A sparse gradient's dense form and coalesced rows; its entry count for the table looked up once per step. torch's
    engine sums the two sparse gradients of ``v`` (looked up twice) by a sorted merge of unsorted entries, so its
    uncoalesced entries differ in order and, where two equal rows meet, in count (29 vs 30 at step 3 here); kiln
    concatenates, as torch's accumulation over two backward calls does. The sum is the same."""
    coalesced = grad.coalesce()
    record = {"dense": array(grad), "rows": array(coalesced.indices()), "sparse": int(grad.is_sparse)}
    return {**record, "nnz": grad._nnz()} if name.startswith("u_") else record


def train_sgns(compiled=None, steps=4):
    batches = _batches(steps)

    def train(torch, nn, F, model):
        optimizer = torch.optim.SparseAdam(list(model.parameters()), lr=0.05)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)

        def step(pos_u, pos_v, neg_v):
            optimizer.zero_grad()
            loss = model.forward(pos_u, pos_v, neg_v)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(step, fullgraph=compiled == "fullgraph") if compiled and torch is kiln else step
        record = {"losses": [], "grads": {}, "tables": {}}
        for index, (pos_u, pos_v, neg_v) in enumerate(batches):
            loss = run(torch.tensor(pos_u), torch.tensor(pos_v), torch.tensor(neg_v))
            scheduler.step()
            record["losses"].append(loss.item())
            record["grads"][index] = {name: _sparse_record(p.grad, name) for name, p in model.named_parameters()}
            record["tables"][index] = {name: array(p) for name, p in model.named_parameters()}
        return record

    return train


def test_word2vec_sgns_trains_as_torch_eagerly(float64_default):
    ours, theirs = run_in_lockstep(skip_gram, train_sgns())
    assert_same_records(ours, theirs, rtol=1e-12, atol=1e-14)
    assert ours["grads"][0]["u_embeddings.weight"]["nnz"] == 6  # one entry per lookup, uncoalesced


def test_word2vec_sgns_compiled_step_runs_eagerly_as_torch(float64_default):
    with pytest.warns(UserWarning, match="runs eagerly.*sparse=True"):
        ours, theirs = run_in_lockstep(skip_gram, train_sgns(compiled="compile"))
    assert_same_records(ours, theirs, rtol=1e-12, atol=1e-14)


def test_word2vec_sgns_fullgraph_refuses_the_sparse_lookup(float64_default):
    with pytest.raises(kiln.KilnError, match=r"embedding\(sparse=True\) inside a kiln.compile'd training step.*sparse=False"):
        run_in_lockstep(skip_gram, train_sgns(compiled="fullgraph", steps=1))


def test_word2vec_sgns_trains_as_torch_in_float32():
    ours, theirs = run_in_lockstep(skip_gram, train_sgns())
    assert ours["tables"][3]["u_embeddings.weight"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=1e-6, atol=1e-7)  # float32 rounding: ~1 ulp apart after 4 steps
