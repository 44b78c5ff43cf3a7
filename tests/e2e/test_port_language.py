"""pytorch/examples' ``word_language_model`` on kiln: the program's source written once against ``torch``-style names
(``lib`` is ``torch`` or ``kiln``, ``nn`` and ``F`` likewise), run by both and compared step by step in float64.

What the program does and these tests keep: a word-level corpus (here a slice of Python's own documentation) turned
into id tensors (``tensor(ids).type(torch.int64)``); ``batchify`` (``narrow``, ``view``, ``t``, ``contiguous``,
``to(device)``) and ``get_batch`` (slices, ``view(-1)``); ``RNNModel`` (LSTM, GRU, RNN_TANH; dropout; tied
encoder/decoder weights; ``init_hidden`` with ``new_zeros``) and ``TransformerModel`` in both of its published forms
(over ``nn.TransformerEncoder``, and as a subclass of ``nn.Transformer``), with ``PositionalEncoding`` registered as a
buffer built by index assignment and the square subsequent mask cached on the module; truncated back-propagation
through time with ``repackage_hidden`` (``detach``), ``clip_grad_norm_``, the update ``p.data.add_(p.grad,
alpha=-lr)``, ``evaluate`` under ``no_grad`` in eval mode, the learning rate annealed when the validation loss stops
falling, the best model saved through ``open(path, 'wb')`` and reloaded (its ``state_dict``: the classes here are
local to a function, which pickle cannot name; ``tests/runtime/test_port_language_whole_model.py`` saves a whole
model), ``generate``'s sampling loop (``squeeze().div(temperature).exp()``, ``multinomial``, ``fill_``,
``Tensor([[word_idx]]).long()``), and ``export_onnx`` (``LongTensor(n).zero_()``, ``kiln.onnx.export`` with the
nested ``(h, c)``) run by onnxruntime. The compiled path: ``kiln.compile_train_step`` of the transformer, and of the
LSTM with its state carried in buffers; evaluation through ``kiln.compile``.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
import kiln.onnx
from kiln.runtime.data import load_pydoc_corpus
from oracles import libraries, require

NTOKENS_TEXT = 1600
"""Characters of the documentation the corpus reads: a vocabulary of about 140 words."""
DEVICE = "cpu"
"""main.py's ``torch.device("cuda" if args.cuda else "cpu")``: kiln takes it and the backend places the data."""


_libraries = libraries


def word_language_model(lib, nn, F):
    """The program's ``model.py``: its two model classes, for ``lib``."""

    class RNNModel(nn.Module):
        def __init__(self, rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False):
            super().__init__()
            self.ntoken = ntoken
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(ntoken, ninp)
            if rnn_type in ["LSTM", "GRU"]:
                self.rnn = getattr(nn, rnn_type)(ninp, nhid, nlayers, dropout=dropout)
            else:
                nonlinearity = {"RNN_TANH": "tanh", "RNN_RELU": "relu"}[rnn_type]
                self.rnn = nn.RNN(ninp, nhid, nlayers, nonlinearity=nonlinearity, dropout=dropout)
            self.decoder = nn.Linear(nhid, ntoken)
            if tie_weights:
                self.decoder.weight = self.encoder.weight
            self.init_weights()
            self.rnn_type, self.nhid, self.nlayers = rnn_type, nhid, nlayers

        def init_weights(self):
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

        def forward(self, input, hidden):
            emb = self.drop(self.encoder(input))
            output, hidden = self.rnn(emb, hidden)
            output = self.drop(output)
            decoded = self.decoder(output).view(-1, self.ntoken)
            return F.log_softmax(decoded, dim=1), hidden

        def init_hidden(self, bsz):
            weight = next(self.parameters())
            if self.rnn_type == "LSTM":
                return weight.new_zeros(self.nlayers, bsz, self.nhid), weight.new_zeros(self.nlayers, bsz, self.nhid)
            return weight.new_zeros(self.nlayers, bsz, self.nhid)

    class PositionalEncoding(nn.Module):
        def __init__(self, d_model, dropout=0.1, max_len=64):
            super().__init__()
            self.dropout = nn.Dropout(p=dropout)
            pe = lib.zeros(max_len, d_model)
            position = lib.arange(0, max_len, dtype=lib.float).unsqueeze(1)
            div_term = lib.exp(lib.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
            pe[:, 0::2] = lib.sin(position * div_term)
            pe[:, 1::2] = lib.cos(position * div_term)
            self.register_buffer("pe", pe.unsqueeze(0).transpose(0, 1))

        def forward(self, x):
            return self.dropout(x + self.pe[:x.size(0), :])

    class TransformerModel(nn.Module):
        def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout=0.5):
            super().__init__()
            self.model_type = "Transformer"
            self.src_mask = None
            self.pos_encoder = PositionalEncoding(ninp, dropout)
            self.transformer_encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(ninp, nhead, nhid, dropout), nlayers)
            self.encoder = nn.Embedding(ntoken, ninp)
            self.ninp = ninp
            self.decoder = nn.Linear(ninp, ntoken)
            self.init_weights()

        def _generate_square_subsequent_mask(self, sz):
            mask = (lib.triu(lib.ones(sz, sz)) == 1).transpose(0, 1)
            return mask.float().masked_fill(mask == 0, float("-inf")).masked_fill(mask == 1, float(0.0))

        def init_weights(self):
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

        def forward(self, src, has_mask=True):
            if has_mask:
                if self.src_mask is None or self.src_mask.size(0) != len(src):
                    self.src_mask = self._generate_square_subsequent_mask(len(src)).to(src.device)
            else:
                self.src_mask = None
            src = self.pos_encoder(self.encoder(src) * math.sqrt(self.ninp))
            output = self.decoder(self.transformer_encoder(src, self.src_mask))
            return F.log_softmax(output, dim=-1)

    class TransformerSubclassModel(nn.Transformer):
        """model.py's current form: a subclass of nn.Transformer using its encoder (the decoder attribute replaced
        by the output layer), the mask as log(tril(ones))."""

        def __init__(self, ntoken, ninp, nhead, nhid, nlayers, dropout=0.5):
            super().__init__(d_model=ninp, nhead=nhead, dim_feedforward=nhid, num_encoder_layers=nlayers, dropout=dropout)
            self.model_type = "Transformer"
            self.src_mask = None
            self.pos_encoder = PositionalEncoding(ninp, dropout)
            self.input_emb = nn.Embedding(ntoken, ninp)
            self.ninp = ninp
            self.decoder = nn.Linear(ninp, ntoken)
            nn.init.uniform_(self.input_emb.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

        def _generate_square_subsequent_mask(self, sz):
            return lib.log(lib.tril(lib.ones(sz, sz)))

        def forward(self, src, has_mask=True):
            if has_mask:
                if self.src_mask is None or self.src_mask.size(0) != len(src):
                    self.src_mask = self._generate_square_subsequent_mask(len(src)).to(src.device)
            else:
                self.src_mask = None
            src = self.pos_encoder(self.input_emb(src) * math.sqrt(self.ninp))
            return F.log_softmax(self.decoder(self.encoder(src, mask=self.src_mask)), dim=-1)

    return RNNModel, TransformerModel, TransformerSubclassModel


class Corpus:
    """The program's ``data.py`` on a slice of Python's documentation: words split on white space, ``<eos>`` after
    each line, one id per new word; the first 70% of the lines train, the next 15% validate, the rest test."""

    def __init__(self, lib, text):
        self.idx2word, self.word2idx = [], {}
        lines = text.splitlines()
        cut, cut2 = int(len(lines) * 0.7), int(len(lines) * 0.85)
        self.train, self.valid, self.test = (self.tokenize(lib, part) for part in (lines[:cut], lines[cut:cut2], lines[cut2:]))

    def add_word(self, word):
        if word not in self.word2idx:
            self.idx2word.append(word)
            self.word2idx[word] = len(self.idx2word) - 1
        return self.word2idx[word]

    def tokenize(self, lib, lines):
        idss = []
        for line in lines:
            ids = [self.add_word(word) for word in line.split() + ["<eos>"]]
            idss.append(lib.tensor(ids).type(lib.int64))
        return lib.cat(idss)


def batchify(data, bsz):
    nbatch = data.size(0) // bsz
    data = data.narrow(0, 0, nbatch * bsz)
    return data.view(bsz, -1).t().contiguous().to(DEVICE)


def get_batch(source, i, bptt):
    seq_len = min(bptt, len(source) - 1 - i)
    return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].view(-1)


def repackage_hidden(lib, h):
    if isinstance(h, lib.Tensor):
        return h.detach()
    return tuple(repackage_hidden(lib, v) for v in h)


class Program:
    """``main.py``'s training and evaluation, for one library; ``batches`` limits an epoch to its first batches."""

    def __init__(self, lib, nn, model, ntokens, batch_size=4, bptt=5, clip=0.25, batches=2):
        self.lib, self.model, self.ntokens = lib, model, ntokens
        self.batch_size, self.bptt, self.clip, self.batches = batch_size, bptt, clip, batches
        self.criterion = nn.CrossEntropyLoss()
        self.is_transformer = getattr(model, "model_type", None) == "Transformer"

    def forward(self, data, hidden):
        if self.is_transformer:
            return self.model(data), hidden
        return self.model(data, repackage_hidden(self.lib, hidden))

    def train(self, train_data, lr):
        self.model.train()
        hidden = None if self.is_transformer else self.model.init_hidden(self.batch_size)
        losses = []
        for batch, i in enumerate(range(0, train_data.size(0) - 1, self.bptt)):
            if batch == self.batches:
                break
            data, targets = get_batch(train_data, i, self.bptt)
            self.model.zero_grad()
            output, hidden = self.forward(data, hidden)
            loss = self.criterion(output.view(-1, self.ntokens), targets)
            loss.backward()
            self.lib.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.sgd_update(lr)
            losses.append(loss.item())
        return losses

    def sgd_update(self, lr):
        for p in self.model.parameters():
            p.data.add_(p.grad, alpha=-lr)

    def evaluate(self, data_source):
        self.model.eval()
        total_loss = 0.0
        hidden = None if self.is_transformer else self.model.init_hidden(data_source.size(1))
        with self.lib.no_grad():
            for i in range(0, data_source.size(0) - 1, self.bptt):
                data, targets = get_batch(data_source, i, self.bptt)
                output, hidden = self.forward(data, hidden)
                total_loss += len(data) * self.criterion(output.view(-1, self.ntokens), targets).item()
        return total_loss / (len(data_source) - 1)


def _corpus(lib):
    return Corpus(lib, load_pydoc_corpus()[:NTOKENS_TEXT])


def _twins(torch, build_kiln, build_torch):
    """The kiln model in float64 and torch's, loaded with kiln's initial weights (tied weights stay tied)."""
    kiln.manual_seed(0)
    ours = build_kiln().double().to(kiln.device(DEVICE))
    theirs = build_torch().double()
    theirs.load_state_dict({key: torch.tensor(np.array(value)) for key, value in ours.state_dict().items()})
    return ours, theirs


def _assert_same_parameters(ours, theirs, rtol=1e-10):
    expected = dict(theirs.named_parameters())
    for name, parameter in ours.named_parameters():
        np.testing.assert_allclose(parameter.data, expected[name].detach().numpy(), rtol=rtol, atol=1e-12, err_msg=name)


def _rnn_builders(rnn_type, ntokens, dropout=0.0):
    tied = rnn_type == "LSTM"  # main.py's --tied: the decoder reads the encoder's weight
    ours, theirs = word_language_model(*_libraries("kiln"))[0], word_language_model(*_libraries("torch"))[0]
    return (lambda: ours(rnn_type, ntokens, 8, 8, 2, dropout, tied)), (lambda: theirs(rnn_type, ntokens, 8, 8, 2, dropout, tied))


def _transformer_builders(ntokens, dropout=0.0, which=1):
    ours, theirs = word_language_model(*_libraries("kiln"))[which], word_language_model(*_libraries("torch"))[which]
    return (lambda: ours(ntokens, 8, 2, 16, 2, dropout)), (lambda: theirs(ntokens, 8, 2, 16, 2, dropout))


def _programs(torch, builders):
    """Both programs, their models built by ``builders(ntokens)`` with the same weights, and both corpora."""
    corpora = _corpus(kiln), _corpus(torch)
    ntokens = len(corpora[0].idx2word)
    ours, theirs = _twins(torch, *builders(ntokens))
    (kiln_lib, kiln_nn, _), (torch_lib, torch_nn, _) = _libraries("kiln"), _libraries("torch")
    return (Program(kiln_lib, kiln_nn, ours, ntokens), Program(torch_lib, torch_nn, theirs, ntokens)), corpora


def _train_with_annealing(program, corpus, save_path, epochs=2, lr=20.0):
    """main.py's epoch loop: train, evaluate, save the model when validation improves, else divide lr by 4."""
    train_data, val_data = batchify(corpus.train, program.batch_size), batchify(corpus.valid, 3)
    history, best_val_loss = [], None
    for _ in range(epochs):
        losses = program.train(train_data, lr)
        val_loss = program.evaluate(val_data)
        history.append((losses, val_loss, lr))
        if not best_val_loss or val_loss < best_val_loss:
            with open(save_path, "wb") as f:  # main.py saves the whole model; its classes here are local to a function
                program.lib.save(program.model.state_dict(), f)
            best_val_loss = val_loss
        else:
            lr /= 4.0
    return history


@pytest.mark.parametrize("rnn_type", ["LSTM", "GRU", "RNN_TANH"])
def test_rnn_model_trains_in_lockstep_with_torch(rnn_type, tmp_path):
    torch = require("torch")
    (ours, theirs), (corpus, torch_corpus) = _programs(torch, lambda n: _rnn_builders(rnn_type, n))
    assert np.array_equal(np.asarray(corpus.train), torch_corpus.train.numpy())
    history = _train_with_annealing(ours, corpus, tmp_path / "model.pt", epochs=3)
    expected = _train_with_annealing(theirs, torch_corpus, tmp_path / "torch_model.pt", epochs=3)
    for (losses, val_loss, lr), (torch_losses, torch_val_loss, torch_lr) in zip(history, expected):
        np.testing.assert_allclose(losses, torch_losses, rtol=1e-10)
        assert val_loss == pytest.approx(torch_val_loss, rel=1e-10) and lr == torch_lr
    _assert_same_parameters(ours.model, theirs.model)
    if rnn_type == "LSTM":
        assert ours.model.decoder.weight is ours.model.encoder.weight
        assert history[-1][2] == 5.0  # the validation loss rose once: the last epoch trained at lr / 4
    fresh, torch_fresh = _rnn_builders(rnn_type, ours.ntokens)
    best, torch_best = _reloaded(kiln, fresh, tmp_path / "model.pt"), _reloaded(torch, torch_fresh, tmp_path / "torch_model.pt")
    best.rnn.flatten_parameters(), torch_best.rnn.flatten_parameters()
    ours.model, theirs.model = best, torch_best
    test_loss = ours.evaluate(batchify(corpus.test, 3))
    assert test_loss == pytest.approx(theirs.evaluate(batchify(torch_corpus.test, 3)), rel=1e-10)
    if rnn_type == "LSTM":
        tokens = get_batch(batchify(corpus.test, 1), 0, ours.bptt)[0]
        _exported_model_runs_in_onnxruntime_as_torchs(torch, ours, theirs, tmp_path / "model.onnx", tokens)


def _reloaded(lib, build, path):
    """The best model, as main.py reloads it after training (here from its state_dict)."""
    model = build().double()
    with open(path, "rb") as f:
        model.load_state_dict(lib.load(f))
    return model


def _exported_model_runs_in_onnxruntime_as_torchs(torch, ours, theirs, path, tokens):
    """main.py's export_onnx: a zero dummy input of (bptt, 1) and init_hidden(1), then onnxruntime on real tokens."""
    onnxruntime = require("onnxruntime")
    model = ours.model
    model.eval()
    dummy_input = kiln.LongTensor(ours.bptt * 1).zero_().view(-1, 1)
    kiln.onnx.export(model, (dummy_input, model.init_hidden(1)), path)
    h, c = (np.asarray(state) for state in model.init_hidden(1))
    feeds = {"input": np.asarray(tokens), "hidden.0": h, "hidden.1": c}
    log_probs, h_n, c_n = onnxruntime.InferenceSession(str(path)).run(None, feeds)
    theirs.model.eval()
    expected, (torch_h, torch_c) = theirs.model(torch.tensor(np.asarray(tokens)), theirs.model.init_hidden(1))
    np.testing.assert_allclose(log_probs, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c_n, torch_c.detach().numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("which", [1, 2], ids=["TransformerEncoder", "nn.Transformer-subclass"])
def test_transformer_model_trains_in_lockstep_with_torch(tmp_path, which):
    torch = require("torch")
    (ours, theirs), (corpus, torch_corpus) = _programs(torch, lambda n: _transformer_builders(n, which=which))
    np.testing.assert_allclose(ours.model.pos_encoder.pe.data, theirs.model.pos_encoder.pe.numpy(), rtol=1e-12, atol=1e-15)
    history = _train_with_annealing(ours, corpus, tmp_path / "model.pt")
    expected = _train_with_annealing(theirs, torch_corpus, tmp_path / "torch_model.pt")
    for (losses, val_loss, lr), (torch_losses, torch_val_loss, torch_lr) in zip(history, expected):
        np.testing.assert_allclose(losses, torch_losses, rtol=1e-10)
        assert val_loss == pytest.approx(torch_val_loss, rel=1e-10) and lr == torch_lr
    _assert_same_parameters(ours.model, theirs.model)
    onnxruntime = require("onnxruntime")
    kiln.onnx.export(ours.model, (kiln.LongTensor(ours.bptt).zero_().view(-1, 1),), tmp_path / "model.onnx")  # mask baked in
    tokens = np.asarray(get_batch(batchify(corpus.test, 1), 0, ours.bptt)[0])
    log_probs, = onnxruntime.InferenceSession(str(tmp_path / "model.onnx")).run(None, {"src": tokens})
    theirs.model.eval()
    np.testing.assert_allclose(log_probs, theirs.model(torch.tensor(tokens)).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_transformer_compiled_training_step_follows_torchs_loop_and_eager_evaluation_reuses_its_mask():
    torch = require("torch")
    (ours, theirs), (corpus, torch_corpus) = _programs(torch, _transformer_builders)
    model, ntokens = ours.model, ours.ntokens
    optimizer = kiln.optim.SGD(model.parameters(), lr=20.0)
    step = kiln.compile_train_step(model, lambda output, targets: ours.criterion(output.view(-1, ntokens), targets), optimizer,
                                   clip_grad_norm=ours.clip, batch_dim=None)
    train_data, torch_train_data = batchify(corpus.train, ours.batch_size), batchify(torch_corpus.train, ours.batch_size)
    theirs.model.train()
    for lr, i in zip((20.0, 20.0, 5.0), range(0, 15, ours.bptt)):  # an annealed lr is a graph input: no recompile
        optimizer.param_groups[0]["lr"] = lr
        loss = float(step(*get_batch(train_data, i, ours.bptt)))
        data, targets = get_batch(torch_train_data, i, ours.bptt)
        theirs.model.zero_grad()
        expected = theirs.criterion(theirs.model(data).view(-1, ntokens), targets)
        expected.backward()
        torch.nn.utils.clip_grad_norm_(theirs.model.parameters(), theirs.clip)
        theirs.sgd_update(lr)
        assert loss == pytest.approx(expected.item(), rel=1e-10)
    _assert_same_parameters(model, theirs.model)
    assert len(step.compiled) == 1
    assert ours.evaluate(batchify(corpus.valid, 3)) == pytest.approx(theirs.evaluate(batchify(torch_corpus.valid, 3)), rel=1e-10)


def generate(lib, model, corpus, words, temperature=1.0, follow=None):
    """generate.py's loop; returns the words and each step's ``word_weights``. ``follow`` (ids) replaces the draws,
    so a second library can walk the first one's path."""
    model.eval()
    is_transformer = getattr(model, "model_type", None) == "Transformer"
    ntokens = len(corpus.idx2word)
    hidden = None if is_transformer else model.init_hidden(1)
    input = lib.randint(ntokens, (1, 1), dtype=lib.long) if follow is None else lib.tensor([[follow[0]]], dtype=lib.long)
    text, weights, start = [], [], int(input[0, 0])
    with lib.no_grad():
        for i in range(words):
            if is_transformer:
                output = model(input, False)
                word_weights = output[-1].squeeze().div(temperature).exp().cpu()
            else:
                output, hidden = model(input, hidden)
                word_weights = output.squeeze().div(temperature).exp().cpu()
            word_idx = lib.multinomial(word_weights, 1)[0] if follow is None else follow[i + 1]
            if is_transformer:
                input = lib.cat([input, lib.Tensor([[word_idx]]).long()], 0)
            else:
                input.fill_(word_idx)
            text.append(corpus.idx2word[word_idx])
            weights.append(np.array(word_weights.numpy()))
    return text, weights, start


def _ids(corpus, start, text):
    return [start] + [corpus.word2idx[word] for word in text]


@pytest.mark.parametrize("kind", ["LSTM", "Transformer"])
def test_generate_samples_words_and_torch_gives_the_same_distributions_along_kilns_path(kind):
    torch = require("torch")
    builders = _transformer_builders if kind == "Transformer" else (lambda n: _rnn_builders(kind, n))
    (ours, theirs), (corpus, torch_corpus) = _programs(torch, builders)
    kiln.manual_seed(3)
    text, weights, start = generate(kiln, ours.model, corpus, words=6, temperature=0.8)
    assert len(text) == 6 and all(word in corpus.word2idx for word in text)
    _, torch_weights, _ = generate(torch, theirs.model, torch_corpus, words=6, temperature=0.8, follow=_ids(corpus, start, text))
    np.testing.assert_allclose(np.array(weights), np.array(torch_weights), rtol=1e-10)


class CarriedState(kiln.nn.Module):
    """The recurrent model compiled whole: its hidden state kept in buffers that each step overwrites with the new
    state, detached (``repackage_hidden`` inside the step), so consecutive batches carry it as main.py's loop does."""

    def __init__(self, model, batch_size):
        super().__init__()
        self.model, self.count = model, len(_states(model.init_hidden(batch_size)))
        for index, state in enumerate(_states(model.init_hidden(batch_size))):
            self.register_buffer(f"hidden{index}", state)

    def forward(self, data):
        states = tuple(getattr(self, f"hidden{index}") for index in range(self.count))
        output, hidden = self.model(data, states if self.count > 1 else states[0])
        for index, state in enumerate(_states(hidden)):
            getattr(self, f"hidden{index}").copy_(state.detach())
        return output


def _states(hidden):
    return hidden if isinstance(hidden, tuple) else (hidden,)


def test_lstm_compiled_training_step_carries_its_state_in_lockstep_with_torchs_loop():
    torch = require("torch")
    (ours, theirs), (corpus, torch_corpus) = _programs(torch, lambda n: _rnn_builders("LSTM", n))
    carried = CarriedState(ours.model, ours.batch_size)
    optimizer = kiln.optim.SGD(ours.model.parameters(), lr=20.0)
    step = kiln.compile_train_step(carried, ours.criterion, optimizer, clip_grad_norm=ours.clip, batch_dim=None)
    train_data, torch_train_data = batchify(corpus.train, ours.batch_size), batchify(torch_corpus.train, ours.batch_size)
    theirs.model.train()
    hidden = theirs.model.init_hidden(theirs.batch_size)
    for i in range(0, 3 * ours.bptt, ours.bptt):
        loss = float(step(*get_batch(train_data, i, ours.bptt)))
        data, targets = get_batch(torch_train_data, i, theirs.bptt)
        theirs.model.zero_grad()
        output, hidden = theirs.forward(data, hidden)
        expected = theirs.criterion(output, targets)
        expected.backward()
        torch.nn.utils.clip_grad_norm_(theirs.model.parameters(), theirs.clip)
        theirs.sgd_update(20.0)
        assert loss == pytest.approx(expected.item(), rel=1e-10)
    _assert_same_parameters(ours.model, theirs.model)
    np.testing.assert_allclose(carried.hidden1.data, hidden[1].detach().numpy(), rtol=1e-10, atol=1e-12)
    val_data = batchify(corpus.valid, 3)
    assert _compiled_evaluation(ours, val_data) == pytest.approx(ours.evaluate(val_data), rel=1e-10)


def _compiled_evaluation(program, data_source):
    """evaluate() with the model compiled by kiln.compile: one function per batch length, the state carried."""
    model = program.model
    model.eval()

    def loss_and_state(data, targets, h, c):
        output, (h, c) = model(data, (h, c))
        return program.criterion(output, targets), h, c

    run = kiln.compile(loss_and_state, batch_dim=None)
    h, c = (np.asarray(state) for state in model.init_hidden(data_source.size(1)))
    total_loss = 0.0
    for i in range(0, data_source.size(0) - 1, program.bptt):
        data, targets = get_batch(data_source, i, program.bptt)
        loss, h, c = run(np.asarray(data), np.asarray(targets), h, c)
        total_loss += len(data) * float(loss)
    return total_loss / (len(data_source) - 1)


def test_the_unmodified_port_with_dropout_learns_eagerly_and_compiled():
    """main.py as written (dropout 0.2, float32, kiln's own random draws): the training loss falls, both ways."""
    corpus = _corpus(kiln)
    ntokens = len(corpus.idx2word)
    RNNModel = word_language_model(*_libraries("kiln"))[0]
    train_data = batchify(corpus.train, 4)
    kiln.manual_seed(0)
    program = Program(kiln, kiln.nn, RNNModel("LSTM", ntokens, 16, 16, 2, 0.2, True), ntokens, batches=3)
    eager = [np.mean(program.train(train_data, lr=5.0)) for _ in range(3)]
    model = RNNModel("LSTM", ntokens, 16, 16, 2, 0.2, True)
    step = kiln.compile_train_step(CarriedState(model, 4), program.criterion, kiln.optim.SGD(model.parameters(), lr=5.0),
                                   clip_grad_norm=program.clip, batch_dim=None, seed=0)
    compiled = [np.mean([float(step(*get_batch(train_data, i, 5))) for i in range(0, 15, 5)]) for _ in range(3)]
    assert eager[-1] < eager[0] - 0.3 and compiled[-1] < compiled[0] - 0.3, (eager, compiled)
    data = get_batch(train_data, 0, 5)[0]
    for training, differ in ((True, True), (False, False)):  # dropout draws anew in training mode only
        model.train(training)
        outputs = [model(data, model.init_hidden(4))[0].numpy() for _ in range(2)]
        assert (not np.array_equal(*outputs)) == differ
