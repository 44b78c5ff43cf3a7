"""Porting probe: the batched BiLSTM-CRF tagger people write from the PyTorch tutorial "Advanced: Making Dynamic
Decisions and the Bi-LSTM CRF", with pytorch-crf's ``CRF`` (kmkurn/pytorch-crf, its idioms verbatim), written once
(``torch`` is ``torch`` or ``kiln``) and run in both from kiln's initial weights in float64: the emissions, the first
gradients, the gradient norm, the losses, the parameters after a few SGD steps and the Viterbi paths agree to 1e-10,
eagerly and with the whole training step in one ``kiln.compile(fullgraph=True)`` graph against torch's eager loop.

- ``nn.Embedding(padding_idx=0)``, the mask ``words != PAD``, ``pack_padded_sequence(..., lengths.cpu(),
  enforce_sorted=False)`` (unsorted lengths) into a 2-layer bidirectional ``nn.LSTM(dropout=...)``,
  ``pad_packed_sequence(total_length=)``;
- the CRF's numerator by ``score += ...`` in place with ``emissions[i, torch.arange(batch), tags[i]]``, the last tag
  by ``tags[seq_ends, torch.arange(batch)]``, its normaliser by ``torch.logsumexp`` and ``torch.where(mask[i]
  .unsqueeze(1), next_score, score)``, reductions ``none``/``sum``/``mean``/``token_mean``; Viterbi by ``max(dim=1)``
  backpointers and a Python backtrack over ``history[:seq_ends[idx]]`` (a list sliced by a 0-d tensor);
- SGD with momentum and ``weight_decay`` after ``clip_grad_norm_``.

The lockstep runs in ``eval()`` (the LSTM's inter-layer dropout and ``nn.Dropout`` draw other numbers in each
library); the float32 check trains it as usually trained, in float32, to float32's tolerance (rtol 1e-5).

What broke: pytorch-crf's ``torch.where(mask[i].unsqueeze(1), next_score, score)`` on its ``mask.byte()`` was refused
(kiln's ``where`` took bool conditions only), and a uint8 index ``x[m]`` silently gathered rows 0 and 1 instead of
masking; both now take uint8 masks as torch's deprecated form does, with its warnings
(``tests/frontend/test_uint8_masks_vs_torch.py``). The tutorial's one-sentence tagger is
``test_porting_probes_bilstm_crf_tutorial.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot

pytestmark = pytest.mark.filterwarnings("ignore:where received a uint8 condition tensor")  # pytorch-crf's mask.byte(), both

HIDDEN = 6
PAD, NUM_TAGS, VOCAB = 0, 4, 11


def batched_program(torch, nn, F, embedding_dim=5, hidden_dim=HIDDEN, num_layers=2, dropout=0.5):
    class CRF(nn.Module):
        """kmkurn/pytorch-crf's ``torchcrf.CRF`` (its forward, ``_compute_score``, ``_compute_normalizer`` and
        ``_viterbi_decode``; the argument validation left out)."""

        def __init__(self, num_tags: int, batch_first: bool = False) -> None:
            super().__init__()
            self.num_tags = num_tags
            self.batch_first = batch_first
            self.start_transitions = nn.Parameter(torch.empty(num_tags))
            self.end_transitions = nn.Parameter(torch.empty(num_tags))
            self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
            self.reset_parameters()

        def reset_parameters(self) -> None:
            nn.init.uniform_(self.start_transitions, -0.1, 0.1)
            nn.init.uniform_(self.end_transitions, -0.1, 0.1)
            nn.init.uniform_(self.transitions, -0.1, 0.1)

        def forward(self, emissions, tags, mask=None, reduction='sum'):
            if mask is None:
                mask = torch.ones_like(tags, dtype=torch.uint8, device=tags.device)
            if mask.dtype != torch.uint8:
                mask = mask.byte()
            if self.batch_first:
                emissions = emissions.transpose(0, 1)
                tags = tags.transpose(0, 1)
                mask = mask.transpose(0, 1)
            numerator = self._compute_score(emissions, tags, mask)
            denominator = self._compute_normalizer(emissions, mask)
            llh = numerator - denominator
            if reduction == 'none':
                return llh
            if reduction == 'sum':
                return llh.sum()
            if reduction == 'mean':
                return llh.mean()
            assert reduction == 'token_mean'
            return llh.sum() / mask.float().sum()

        def decode(self, emissions, mask=None):
            if mask is None:
                mask = emissions.new_ones(emissions.shape[:2], dtype=torch.uint8)
            if mask.dtype != torch.uint8:
                mask = mask.byte()
            if self.batch_first:
                emissions = emissions.transpose(0, 1)
                mask = mask.transpose(0, 1)
            return self._viterbi_decode(emissions, mask)

        def _compute_score(self, emissions, tags, mask):
            seq_length, batch_size = tags.shape
            mask = mask.type_as(emissions)
            score = self.start_transitions[tags[0]]
            score += emissions[0, torch.arange(batch_size), tags[0]]
            for i in range(1, seq_length):
                score += self.transitions[tags[i - 1], tags[i]] * mask[i]
                score += emissions[i, torch.arange(batch_size), tags[i]] * mask[i]
            seq_ends = mask.long().sum(dim=0) - 1
            last_tags = tags[seq_ends, torch.arange(batch_size)]
            score += self.end_transitions[last_tags]
            return score

        def _compute_normalizer(self, emissions, mask):
            seq_length = emissions.size(0)
            score = self.start_transitions + emissions[0]
            for i in range(1, seq_length):
                broadcast_score = score.unsqueeze(2)
                broadcast_emissions = emissions[i].unsqueeze(1)
                next_score = broadcast_score + self.transitions + broadcast_emissions
                next_score = torch.logsumexp(next_score, dim=1)
                score = torch.where(mask[i].unsqueeze(1), next_score, score)
            score += self.end_transitions
            return torch.logsumexp(score, dim=1)

        def _viterbi_decode(self, emissions, mask):
            seq_length, batch_size = mask.shape
            score = self.start_transitions + emissions[0]
            history = []
            for i in range(1, seq_length):
                broadcast_score = score.unsqueeze(2)
                broadcast_emission = emissions[i].unsqueeze(1)
                next_score = broadcast_score + self.transitions + broadcast_emission
                next_score, indices = next_score.max(dim=1)
                score = torch.where(mask[i].unsqueeze(1), next_score, score)
                history.append(indices)
            score += self.end_transitions
            seq_ends = mask.long().sum(dim=0) - 1
            best_tags_list = []
            for idx in range(batch_size):
                _, best_last_tag = score[idx].max(dim=0)
                best_tags = [best_last_tag.item()]
                for hist in reversed(history[:seq_ends[idx]]):
                    best_last_tag = hist[idx][best_tags[-1]]
                    best_tags.append(best_last_tag.item())
                best_tags.reverse()
                best_tags_list.append(best_tags)
            return best_tags_list

    class BiLSTMCRFTagger(nn.Module):
        def __init__(self, vocab_size, num_tags, pad_idx=PAD):
            super().__init__()
            self.pad_idx = pad_idx
            self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=pad_idx)
            self.lstm = nn.LSTM(embedding_dim, hidden_dim // 2, num_layers=num_layers, bidirectional=True,
                                batch_first=True, dropout=dropout)
            self.dropout = nn.Dropout(dropout)
            self.hidden2tag = nn.Linear(hidden_dim, num_tags)
            self.crf = CRF(num_tags, batch_first=True)

        def _emissions(self, words):
            mask = words != self.pad_idx
            lengths = mask.sum(dim=1)
            embeds = self.dropout(self.embedding(words))
            packed = nn.utils.rnn.pack_padded_sequence(embeds, lengths.cpu(), batch_first=True, enforce_sorted=False)
            lstm_out, _ = self.lstm(packed)
            lstm_out, _ = nn.utils.rnn.pad_packed_sequence(lstm_out, batch_first=True, total_length=words.size(1))
            return self.hidden2tag(self.dropout(lstm_out)), mask

        def forward(self, words, tags):
            emissions, mask = self._emissions(words)
            return -self.crf(emissions, tags, mask=mask, reduction='mean')

        def decode(self, words):
            emissions, mask = self._emissions(words)
            return self.crf.decode(emissions, mask=mask)

    return BiLSTMCRFTagger(VOCAB, NUM_TAGS)


def _tagging_batches(steps, lengths=(5, 3, 6, 2), seed=5):
    """Padded word ids (``PAD`` past each length, unsorted lengths) and tags (0 there), one batch a step."""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(steps):
        valid = np.arange(max(lengths))[None, :] < np.array(lengths)[:, None]
        words = np.where(valid, rng.integers(1, VOCAB, valid.shape), PAD)
        tags = np.where(valid, rng.integers(0, NUM_TAGS, valid.shape), 0)
        batches.append((words, tags))
    return batches


def _optimizer(torch, model):
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def train_batched(steps=3):
    batches = _tagging_batches(steps)

    def train(torch, nn, F, model):
        model.eval()  # the two libraries' dropout masks differ; the lockstep compares the deterministic path
        optimizer = _optimizer(torch, model)
        record = {"losses": []}
        for words, tags in batches:
            words, tags = torch.tensor(words), torch.tensor(tags)
            optimizer.zero_grad()
            loss = model(words, tags)
            loss.backward()
            record.setdefault("grads", gradients(model))
            record["grad_norm"] = array(nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5))
            optimizer.step()
            record["losses"].append(loss.item())
        with torch.no_grad():
            first_words, first_tags = torch.tensor(batches[0][0]), torch.tensor(batches[0][1])
            record["emissions"] = array(model._emissions(first_words)[0])
            record["first_batch_loss_after"] = model(first_words, first_tags).item()
            record["paths"] = model.decode(first_words)
        record["state"] = snapshot(model)
        return record

    return train


def test_the_batched_bilstm_crf_trains_and_decodes_as_torch(float64_default):
    ours, theirs = run_in_lockstep(batched_program, train_batched())
    assert ours.pop("paths") == theirs["paths"]
    assert [len(path) for path in theirs.pop("paths")] == [5, 3, 6, 2]
    assert_same_records(ours, theirs)
    assert theirs["first_batch_loss_after"] < theirs["losses"][0]


def test_the_batched_bilstm_crf_compiled_step_as_torch(float64_default):
    """zero_grad, the packed LSTM and the CRF's loss, backward, ``clip_grad_norm_`` and SGD in one graph."""
    batches = _tagging_batches(3)

    def train(torch, nn, F, model):
        model.eval()
        optimizer = _optimizer(torch, model)

        def train_step(words, tags):
            optimizer.zero_grad()
            loss = model(words, tags)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
            optimizer.step()
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        losses = [run(torch.tensor(words), torch.tensor(tags)).item() for words, tags in batches]
        with torch.no_grad():
            paths = model.decode(torch.tensor(batches[0][0]))
        return {"losses": losses, "state": snapshot(model), "paths": paths}

    ours, theirs = run_in_lockstep(batched_program, train)
    assert ours.pop("paths") == theirs.pop("paths")
    assert_same_records(ours, theirs)


def test_the_batched_bilstm_crf_in_float32_as_torch():
    """As usually trained: float32 weights and emissions, three SGD steps; the CRF's reductions and the dtypes too.
    float32's tolerance (rtol 1e-5): the two libraries' float32 kernels round differently in the last bits."""
    batches = _tagging_batches(3)

    def train(torch, nn, F, model):
        model.eval()
        optimizer = _optimizer(torch, model)
        record = {"losses": []}
        for words, tags in batches:
            optimizer.zero_grad()
            loss = model(torch.tensor(words), torch.tensor(tags))
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
            optimizer.step()
            record["losses"].append(loss.item())
        words, tags = torch.tensor(batches[0][0]), torch.tensor(batches[0][1])
        with torch.no_grad():
            emissions, mask = model._emissions(words)
            record["reductions"] = {reduction: array(model.crf(emissions, tags, mask=mask, reduction=reduction))
                                    for reduction in ("none", "sum", "mean", "token_mean")}
        record["dtypes"] = [str(emissions.dtype).split(".")[-1], str(mask.dtype).split(".")[-1], str(loss.dtype).split(".")[-1]]
        record["state"] = snapshot(model)
        return record

    ours, theirs = run_in_lockstep(batched_program, train)
    assert ours.pop("dtypes") == theirs.pop("dtypes") == ["float32", "bool", "float32"]
    assert_same_records(ours, theirs, rtol=1e-5, atol=1e-6)
