"""Porting probe: the PyTorch tutorial "Advanced: Making Dynamic Decisions and the Bi-LSTM CRF", verbatim, run in
``torch`` and ``kiln`` from kiln's initial weights in float64: the Viterbi score and path before and after training, the
first gradients, the losses, the parameters after an epoch of ``SGD(lr=0.01, weight_decay=1e-4)`` agree to 1e-10.

One sentence at a time: START/STOP tags written into ``transitions.data``, the forward algorithm by its
``log_sum_exp`` helper (``argmax`` by ``torch.max(vec, 1)`` and ``.item()``, ``view(1, -1).expand``), the gold score
by indexing ``transitions[tags[i + 1], tags[i]]`` with 0-d tensors, Viterbi with Python lists of backpointers. Its
``init_hidden`` draws ``torch.randn``: the probe feeds the same numbers to both libraries instead. Everything agreed as
first written. The batched tagger (pytorch-crf, packed LSTM, compiled step) is ``test_porting_probes_bilstm_crf.py``.
"""

from __future__ import annotations

import numpy as np

from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot

START_TAG, STOP_TAG = "<START>", "<STOP>"
TAG_TO_IX = {"B": 0, "I": 1, "O": 2, START_TAG: 3, STOP_TAG: 4}
HIDDEN = 6


# --- the tutorial's tagger (one sentence at a time) -------------------------------------------------------------


def tutorial_program(torch, nn, F, vocab_size, embedding_dim=5, hidden_dim=HIDDEN):
    def argmax(vec):
        # return the argmax as a python int
        _, idx = torch.max(vec, 1)
        return idx.item()

    def log_sum_exp(vec):
        max_score = vec[0, argmax(vec)]
        max_score_broadcast = max_score.view(1, -1).expand(1, vec.size()[1])
        return max_score + torch.log(torch.sum(torch.exp(vec - max_score_broadcast)))

    class BiLSTM_CRF(nn.Module):
        def __init__(self, vocab_size, tag_to_ix, embedding_dim, hidden_dim):
            super(BiLSTM_CRF, self).__init__()
            self.embedding_dim = embedding_dim
            self.hidden_dim = hidden_dim
            self.vocab_size = vocab_size
            self.tag_to_ix = tag_to_ix
            self.tagset_size = len(tag_to_ix)
            self.word_embeds = nn.Embedding(vocab_size, embedding_dim)
            self.lstm = nn.LSTM(embedding_dim, hidden_dim // 2, num_layers=1, bidirectional=True)
            self.hidden2tag = nn.Linear(hidden_dim, self.tagset_size)
            self.transitions = nn.Parameter(torch.randn(self.tagset_size, self.tagset_size))
            self.transitions.data[tag_to_ix[START_TAG], :] = -10000
            self.transitions.data[:, tag_to_ix[STOP_TAG]] = -10000
            self.hidden = self.init_hidden()

        def init_hidden(self):
            return (torch.randn(2, 1, self.hidden_dim // 2), torch.randn(2, 1, self.hidden_dim // 2))

        def _forward_alg(self, feats):
            init_alphas = torch.full((1, self.tagset_size), -10000.)
            init_alphas[0][self.tag_to_ix[START_TAG]] = 0.
            forward_var = init_alphas
            for feat in feats:
                alphas_t = []
                for next_tag in range(self.tagset_size):
                    emit_score = feat[next_tag].view(1, -1).expand(1, self.tagset_size)
                    trans_score = self.transitions[next_tag].view(1, -1)
                    next_tag_var = forward_var + trans_score + emit_score
                    alphas_t.append(log_sum_exp(next_tag_var).view(1))
                forward_var = torch.cat(alphas_t).view(1, -1)
            terminal_var = forward_var + self.transitions[self.tag_to_ix[STOP_TAG]]
            alpha = log_sum_exp(terminal_var)
            return alpha

        def _get_lstm_features(self, sentence):
            self.hidden = self.init_hidden()
            embeds = self.word_embeds(sentence).view(len(sentence), 1, -1)
            lstm_out, self.hidden = self.lstm(embeds, self.hidden)
            lstm_out = lstm_out.view(len(sentence), self.hidden_dim)
            lstm_feats = self.hidden2tag(lstm_out)
            return lstm_feats

        def _score_sentence(self, feats, tags):
            score = torch.zeros(1)
            tags = torch.cat([torch.tensor([self.tag_to_ix[START_TAG]], dtype=torch.long), tags])
            for i, feat in enumerate(feats):
                score = score + self.transitions[tags[i + 1], tags[i]] + feat[tags[i + 1]]
            score = score + self.transitions[self.tag_to_ix[STOP_TAG], tags[-1]]
            return score

        def _viterbi_decode(self, feats):
            backpointers = []
            init_vvars = torch.full((1, self.tagset_size), -10000.)
            init_vvars[0][self.tag_to_ix[START_TAG]] = 0
            forward_var = init_vvars
            for feat in feats:
                bptrs_t = []
                viterbivars_t = []
                for next_tag in range(self.tagset_size):
                    next_tag_var = forward_var + self.transitions[next_tag]
                    best_tag_id = argmax(next_tag_var)
                    bptrs_t.append(best_tag_id)
                    viterbivars_t.append(next_tag_var[0][best_tag_id].view(1))
                forward_var = (torch.cat(viterbivars_t) + feat).view(1, -1)
                backpointers.append(bptrs_t)
            terminal_var = forward_var + self.transitions[self.tag_to_ix[STOP_TAG]]
            best_tag_id = argmax(terminal_var)
            path_score = terminal_var[0][best_tag_id]
            best_path = [best_tag_id]
            for bptrs_t in reversed(backpointers):
                best_tag_id = bptrs_t[best_tag_id]
                best_path.append(best_tag_id)
            start = best_path.pop()
            assert start == self.tag_to_ix[START_TAG]  # Sanity check
            best_path.reverse()
            return path_score, best_path

        def neg_log_likelihood(self, sentence, tags):
            feats = self._get_lstm_features(sentence)
            forward_score = self._forward_alg(feats)
            gold_score = self._score_sentence(feats, tags)
            return forward_score - gold_score

        def forward(self, sentence):
            lstm_feats = self._get_lstm_features(sentence)
            score, tag_seq = self._viterbi_decode(lstm_feats)
            return score, tag_seq

    return BiLSTM_CRF(vocab_size, TAG_TO_IX, embedding_dim, hidden_dim)


TRAINING_DATA = [(
    "the wall street journal reported today that apple corporation made money".split(),
    "B I I I O O O B I O O".split()
), (
    "georgia tech is a university in georgia".split(),
    "B I O O O O B".split()
)]
WORD_TO_IX = {}
for _sentence, _ in TRAINING_DATA:
    for _word in _sentence:
        WORD_TO_IX.setdefault(_word, len(WORD_TO_IX))


def prepare_sequence(torch, seq, to_ix):
    idxs = [to_ix[w] for w in seq]
    return torch.tensor(idxs, dtype=torch.long)


def _fed_hidden(steps_of_states):
    """``init_hidden``'s ``torch.randn`` draws, fed: the same numbers, one pair per call, in both libraries."""
    rng = np.random.default_rng(3)
    return [rng.standard_normal((2, 2, 1, HIDDEN // 2)) for _ in range(steps_of_states)]


def train_tutorial(epochs=1):
    hidden_states = _fed_hidden(4 * epochs + 4)

    def train(torch, nn, F, model):
        states = iter(hidden_states)
        model.init_hidden = lambda: tuple(torch.tensor(s) for s in next(states))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, weight_decay=1e-4)
        record = {"losses": []}
        with torch.no_grad():
            precheck_sent = prepare_sequence(torch, TRAINING_DATA[0][0], WORD_TO_IX)
            score, path = model(precheck_sent)
            record["before"] = {"score": array(score), "path": path}
        for epoch in range(epochs):
            for sentence, tags in TRAINING_DATA:
                model.zero_grad()
                sentence_in = prepare_sequence(torch, sentence, WORD_TO_IX)
                targets = torch.tensor([TAG_TO_IX[t] for t in tags], dtype=torch.long)
                loss = model.neg_log_likelihood(sentence_in, targets)
                loss.backward()
                record.setdefault("grads", gradients(model))
                optimizer.step()
                record["losses"].append(array(loss))
        with torch.no_grad():
            sentence_in = prepare_sequence(torch, TRAINING_DATA[0][0], WORD_TO_IX)
            score, path = model(sentence_in)
            record["after"] = {"score": array(score), "path": path}
            targets = torch.tensor([TAG_TO_IX[t] for t in TRAINING_DATA[0][1]], dtype=torch.long)
            record["first_loss_after"] = array(model.neg_log_likelihood(sentence_in, targets))
        record["state"] = snapshot(model)
        return record

    return train


def test_the_tutorial_bilstm_crf_trains_and_decodes_as_torch(float64_default):
    ours, theirs = run_in_lockstep(lambda torch, nn, F: tutorial_program(torch, nn, F, len(WORD_TO_IX)), train_tutorial())
    paths = lambda record: (record["before"].pop("path"), record["after"].pop("path"))  # noqa: E731
    assert paths(ours) == paths(theirs)
    assert_same_records(ours, theirs)
    assert theirs["first_loss_after"] < theirs["losses"][0]
