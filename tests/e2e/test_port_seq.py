"""pytorch/examples' ``language_translation`` and ``gcn`` on kiln: each program's source written once against
``torch``-style names (``lib`` is ``torch`` or ``kiln``, ``nn`` and ``F`` likewise), run by both and compared step by
step in float64.

``language_translation`` keeps: ``PositionalEncoding`` (a buffer built by strided index assignment, ``unsqueeze(-2)``,
sliced by ``token_embedding.size(0)``); ``Translator`` over ``nn.Transformer`` (sequence first, as the program) with
source and target ``nn.Embedding``; ``generate_square_subsequent_mask`` (``triu(ones) == 1``, ``transpose``,
``float().masked_fill``) and ``create_mask`` (a bool all-False source mask, key padding masks from ``src == PAD_IDX``);
``tensor_transform``'s ``cat`` of BOS, ids and EOS; a ``DataLoader`` whose ``collate_fn`` pads with
``nn.utils.rnn.pad_sequence``; ``CrossEntropyLoss(ignore_index=PAD_IDX)``; ``Adam(betas=(0.9, 0.98), eps=1e-9)``;
``train``/``validate`` (``optim.zero_grad``, ``loss.backward``, ``optim.step``, ``loss.item``, ``model.train/eval``);
the best model's ``state_dict`` saved and reloaded; ``greedy_decode`` (``ones(1, 1).fill_(start).type(torch.long)``,
``transpose``, ``torch.max(prob, dim=1)``, ``item``, ``cat`` with ``type_as(src.data).fill_``). The corpus is
synthetic (a target is its source reversed, each word mapped to another), in place of Multi30k and spacy.
The published ``encode``/``decode`` pass extra arguments to ``pos_enc`` (a bug of the example); the port calls
``transformer.encoder(pos_enc(embed), src_mask)`` and ``transformer.decoder(pos_enc(embed), memory, tgt_mask)``.

``gcn`` keeps: ``GraphConv`` (``nn.Parameter(torch.Tensor(in, out))`` then ``xavier_normal_``, ``zeros_``;
``torch.mm`` then ``torch.spmm``), ``GCN`` (relu, dropout, ``log_softmax(dim=1)``), the renormalised adjacency
``D^-1/2 (A + I) D^-1/2`` with the ``[x == inf] = 0`` guards, ``randperm`` splits, ``Adam(weight_decay=...)``,
``NLLLoss`` on ``output[mask_train]`` (an index tensor), and ``test``'s accuracy
``(output.argmax(dim=1) == target).float().sum() / len(target)``. ``load_cora``'s sparse calls run as written
(``sparse_coo_tensor`` of the edge list, ``diag(...).to_sparse()``, sparse ``@``): kiln has one layout and builds them
dense, torch trains on real sparse tensors. The graph is a small stochastic block model whose features are correlated
with the block.

``mnist_hogwild`` (``Net``: conv, ``Dropout2d``, ``max_pool2d``, ``F.dropout(training=self.training)``; ``train_epoch``
and ``test_epoch`` with ``nll_loss(..., size_average=False)``, ``output.max(1)[1]``, ``pred.eq(target).sum().item()``):
kiln refuses ``model.share_memory()`` (Hogwild workers would each train a private copy), so the workers' ``train`` runs
in turn in one process, in lockstep with torch's, on the bundled digits scaled to 28x28.

The compiled path: ``kiln.compile_train_step`` of the translator and the GCN, in lockstep with torch's eager loop.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

import kiln
from oracles import libraries, require

UNK_IDX, PAD_IDX, BOS_IDX, EOS_IDX = 0, 1, 2, 3
DEVICE = "cpu"
"""main.py's ``torch.device("cuda" if torch.cuda.is_available() else "cpu")``: kiln takes it; the backend places data."""
SRC_VOCAB, TGT_VOCAB = 14, 14


_libraries = libraries


# ---------------------------------------------------------------------------------------------- language_translation


def translation_program(lib, nn, F, batch_first=False):
    """``src/model.py`` and ``src/data.py``'s masks, for ``lib``; ``batch_first``: the same program with
    ``nn.Transformer(batch_first=True)``, ``(batch, length)`` tokens and untransposed padding masks."""

    class PositionalEncoding(nn.Module):
        def __init__(self, emb_size, dropout, maxlen=64):
            super().__init__()
            den = lib.exp(-lib.arange(0, emb_size, 2) * math.log(10000) / emb_size)
            pos = lib.arange(0, maxlen).reshape(maxlen, 1)
            pos_embedding = lib.zeros((maxlen, emb_size))
            pos_embedding[:, 0::2] = lib.sin(pos * den)
            pos_embedding[:, 1::2] = lib.cos(pos * den)
            pos_embedding = pos_embedding.unsqueeze(-2)
            self.dropout = nn.Dropout(dropout)
            self.register_buffer("pos_embedding", pos_embedding)

        def forward(self, token_embedding):
            if batch_first:
                return self.dropout(token_embedding + self.pos_embedding[:token_embedding.size(1), :].transpose(0, 1))
            return self.dropout(token_embedding + self.pos_embedding[:token_embedding.size(0), :])

    class Translator(nn.Module):
        def __init__(self, num_encoder_layers, num_decoder_layers, embed_size, num_heads, src_vocab_size, tgt_vocab_size,
                     dim_feedforward, dropout):
            super().__init__()
            self.src_embedding = nn.Embedding(src_vocab_size, embed_size)
            self.tgt_embedding = nn.Embedding(tgt_vocab_size, embed_size)
            self.pos_enc = PositionalEncoding(embed_size, dropout)
            self.transformer = nn.Transformer(d_model=embed_size, nhead=num_heads, num_encoder_layers=num_encoder_layers,
                                              num_decoder_layers=num_decoder_layers, dim_feedforward=dim_feedforward, dropout=dropout,
                                              batch_first=batch_first)
            self.ff = nn.Linear(embed_size, tgt_vocab_size)

        def forward(self, src, trg, src_mask, tgt_mask, src_padding_mask, tgt_padding_mask, memory_key_padding_mask):
            src_emb = self.pos_enc(self.src_embedding(src))
            tgt_emb = self.pos_enc(self.tgt_embedding(trg))
            outs = self.transformer(src_emb, tgt_emb, src_mask, tgt_mask, None, src_padding_mask, tgt_padding_mask,
                                    memory_key_padding_mask)
            return self.ff(outs)

        def encode(self, src, src_mask):
            return self.transformer.encoder(self.pos_enc(self.src_embedding(src)), src_mask)

        def decode(self, tgt, memory, tgt_mask):
            return self.transformer.decoder(self.pos_enc(self.tgt_embedding(tgt)), memory, tgt_mask)

    def generate_square_subsequent_mask(size, device=DEVICE):
        mask = (lib.triu(lib.ones((size, size), device=device)) == 1).transpose(0, 1)
        return mask.float().masked_fill(mask == 0, float("-inf")).masked_fill(mask == 1, float(0.0))

    def create_mask(src, tgt, pad_idx):
        src_seq_len, tgt_seq_len = src.shape[int(batch_first)], tgt.shape[int(batch_first)]
        tgt_mask = generate_square_subsequent_mask(tgt_seq_len)
        src_mask = lib.zeros((src_seq_len, src_seq_len), device=DEVICE).type(lib.bool)
        src_padding_mask = (src == pad_idx) if batch_first else (src == pad_idx).transpose(0, 1)
        tgt_padding_mask = (tgt == pad_idx) if batch_first else (tgt == pad_idx).transpose(0, 1)
        return src_mask, tgt_mask, src_padding_mask, tgt_padding_mask

    return Translator, generate_square_subsequent_mask, create_mask


def parallel_corpus(count, seed):
    """Pairs of id lists: a target is its source reversed, each word ``w`` becoming ``(w * 3) % 10 + 4``."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        src = [int(w) for w in rng.integers(4, SRC_VOCAB, size=int(rng.integers(2, 6)))]
        pairs.append((src, [(w * 3) % 10 + 4 for w in reversed(src)]))
    return pairs


class TranslationRun:
    """``main.py``'s data pipeline, train, validate and greedy_decode, for one library."""

    def __init__(self, lib, nn, F, model, batch_size=4, lr=1e-3, batch_first=False):
        self.lib, self.model = lib, model
        _, self.square_mask, self.create_mask = translation_program(lib, nn, F, batch_first)
        self.batch_first = batch_first
        self.loss_fn = nn.CrossEntropyLoss(ignore_index=PAD_IDX)
        self.optim = lib.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98), eps=1e-9)
        self.batch_size = batch_size

    def tensor_transform(self, token_ids):
        lib = self.lib
        return lib.cat((lib.tensor([BOS_IDX]), lib.tensor(token_ids), lib.tensor([EOS_IDX])))

    def collate_fn(self, batch):
        pad_sequence = self.lib.nn.utils.rnn.pad_sequence
        src_batch = [self.tensor_transform(src) for src, _ in batch]
        tgt_batch = [self.tensor_transform(tgt) for _, tgt in batch]
        return (pad_sequence(src_batch, batch_first=self.batch_first, padding_value=PAD_IDX),
                pad_sequence(tgt_batch, batch_first=self.batch_first, padding_value=PAD_IDX))

    def loader(self, pairs):
        return self.lib.utils.data.DataLoader(pairs, batch_size=self.batch_size, collate_fn=self.collate_fn)

    def logits_and_target(self, src, tgt):
        src, tgt = src.to(DEVICE), tgt.to(DEVICE)
        tgt_input, tgt_out = self.shifted(tgt)
        src_mask, tgt_mask, src_padding_mask, tgt_padding_mask = self.create_mask(src, tgt_input, PAD_IDX)
        logits = self.model(src, tgt_input, src_mask, tgt_mask, src_padding_mask, tgt_padding_mask, src_padding_mask)
        return logits, tgt_out

    def shifted(self, tgt):
        """The decoder's input and the targets: the sequence without its last and without its first token."""
        return (tgt[:, :-1], tgt[:, 1:]) if self.batch_first else (tgt[:-1, :], tgt[1:, :])

    def train(self, train_dl):
        self.model.train()
        losses = []
        for src, tgt in train_dl:
            logits, tgt_out = self.logits_and_target(src, tgt)
            self.optim.zero_grad()
            loss = self.loss_fn(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1))
            loss.backward()
            self.optim.step()
            losses.append(loss.item())
        return losses

    def validate(self, valid_dl):
        self.model.eval()
        losses = 0
        for src, tgt in valid_dl:
            logits, tgt_out = self.logits_and_target(src, tgt)
            losses += self.loss_fn(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1)).item()
        return losses / len(list(valid_dl))

    def greedy_decode(self, src, src_mask, max_len, start_symbol, end_symbol):
        lib, model = self.lib, self.model
        src, src_mask = src.to(DEVICE), src_mask.to(DEVICE)
        memory = model.encode(src, src_mask)
        ys = lib.ones(1, 1).fill_(start_symbol).type(lib.long).to(DEVICE)
        for _ in range(max_len - 1):
            memory = memory.to(DEVICE)
            tgt_mask = (self.square_mask(ys.size(0), DEVICE).type(lib.bool)).to(DEVICE)
            out = model.decode(ys, memory, tgt_mask).transpose(0, 1)
            prob = model.ff(out[:, -1])
            _, next_word = lib.max(prob, dim=1)
            next_word = next_word.item()
            ys = lib.cat([ys, lib.ones(1, 1).type_as(src.data).fill_(next_word)], dim=0)
            if next_word == end_symbol:
                break
        return ys

    def translate(self, source_ids):
        self.model.eval()
        src = self.tensor_transform(source_ids).view(-1, 1)
        num_tokens = src.shape[0]
        src_mask = self.lib.zeros(num_tokens, num_tokens).type(self.lib.bool)
        with self.lib.no_grad():
            tokens = self.greedy_decode(src, src_mask, num_tokens + 5, BOS_IDX, EOS_IDX).flatten()
        return list(tokens.cpu().numpy())


def _translator_twins(torch, dropout=0.0, batch_first=False):
    """kiln's Translator in float64 and torch's, loaded with kiln's initial weights."""
    kiln.manual_seed(0)
    build = lambda name: translation_program(*_libraries(name), batch_first)[0](2, 2, 8, 2, SRC_VOCAB, TGT_VOCAB, 16, dropout)
    ours, theirs = build("kiln").double().to(kiln.device(DEVICE)), build("torch").double()
    theirs.load_state_dict({key: torch.tensor(np.array(value)) for key, value in ours.state_dict().items()})
    return ours, theirs


def _assert_same_parameters(ours, theirs, rtol=1e-10, atol=1e-10):
    """``atol``: the key part of ``in_proj_bias`` has a zero gradient (softmax ignores a shift), so it holds roundoff."""
    expected = dict(theirs.named_parameters())
    assert set(expected) == {name for name, _ in ours.named_parameters()}
    for name, parameter in ours.named_parameters():
        np.testing.assert_allclose(np.asarray(parameter.data), expected[name].detach().numpy(), rtol=rtol, atol=atol, err_msg=name)


def _translation_runs(torch, batch_first=False):
    ours, theirs = _translator_twins(torch, batch_first=batch_first)
    return (TranslationRun(*_libraries("kiln"), ours, batch_first=batch_first),
            TranslationRun(*_libraries("torch"), theirs, batch_first=batch_first))


def test_translation_masks_and_batches_match_torchs():
    torch = require("torch")
    ours, theirs = _translation_runs(torch)
    np.testing.assert_array_equal(np.asarray(ours.square_mask(4)), theirs.square_mask(4).numpy())
    (src, tgt), = list(ours.loader(parallel_corpus(3, seed=1)))
    (torch_src, torch_tgt), = list(theirs.loader(parallel_corpus(3, seed=1)))
    np.testing.assert_array_equal(np.asarray(src), torch_src.numpy())
    np.testing.assert_array_equal(np.asarray(tgt), torch_tgt.numpy())
    assert (np.asarray(src) == PAD_IDX).any()  # the batch has padding: the key padding masks matter
    for mask, torch_mask in zip(ours.create_mask(src, tgt[:-1, :], PAD_IDX), theirs.create_mask(torch_src, torch_tgt[:-1, :], PAD_IDX)):
        np.testing.assert_array_equal(np.asarray(mask), torch_mask.numpy())


def test_translation_trains_in_lockstep_with_torch_saves_the_best_and_decodes_greedily(tmp_path):
    torch = require("torch")
    ours, theirs = _translation_runs(torch)
    np.testing.assert_array_equal(np.asarray(ours.model.pos_enc.pos_embedding), theirs.model.pos_enc.pos_embedding.numpy())
    train_pairs, valid_pairs = parallel_corpus(12, seed=2), parallel_corpus(4, seed=3)
    best_val_loss = {id(ours): 1e6, id(theirs): 1e6}
    for _ in range(2):
        for run, path in ((ours, tmp_path / "best.pt"), (theirs, tmp_path / "torch_best.pt")):
            run.history = run.train(run.loader(train_pairs)), run.validate(run.loader(valid_pairs))
            if run.history[1] < best_val_loss[id(run)]:
                best_val_loss[id(run)] = run.history[1]
                run.lib.save(run.model.state_dict(), path)
        np.testing.assert_allclose(ours.history[0], theirs.history[0], rtol=1e-10)
        assert ours.history[1] == pytest.approx(theirs.history[1], rel=1e-10)
    _assert_same_parameters(ours.model, theirs.model)
    reloaded, torch_reloaded = _translator_twins(torch)
    reloaded.load_state_dict(kiln.load(tmp_path / "best.pt"))
    torch_reloaded.load_state_dict(torch.load(tmp_path / "torch_best.pt"))
    _assert_same_parameters(reloaded, torch_reloaded)
    ours.model, theirs.model = reloaded, torch_reloaded
    for source, _ in valid_pairs:
        assert ours.translate(source) == theirs.translate(source)


@pytest.mark.parametrize("batch_first", [False, True], ids=["as-written", "batch_first"])
def test_translation_compiled_training_step_follows_torchs_loop(batch_first):
    torch = require("torch")
    ours, theirs = _translation_runs(torch, batch_first)
    model = ours.model
    step = kiln.compile_train_step(model, lambda logits, tgt_out: ours.loss_fn(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1)),
                                   ours.optim, batch_dim=None)
    model.train()
    pairs = parallel_corpus(12, seed=4)
    for (src, tgt), (torch_src, torch_tgt) in zip(ours.loader(pairs), theirs.loader(pairs)):
        tgt_input, tgt_out = ours.shifted(tgt)
        masks = ours.create_mask(src, tgt_input, PAD_IDX)
        loss = float(step(src, tgt_input, *masks, masks[2], tgt_out))
        expected = theirs.train([(torch_src, torch_tgt)])[0]
        assert loss == pytest.approx(expected, rel=1e-10)
    _assert_same_parameters(model, theirs.model)


# --------------------------------------------------------------------------------------------------------------- gcn


def gcn_program(lib, nn, F):
    """``gcn/main.py``'s two model classes, for ``lib``."""

    class GraphConv(nn.Module):
        def __init__(self, input_dim, output_dim, use_bias=False):
            super().__init__()
            self.kernel = nn.Parameter(lib.Tensor(input_dim, output_dim))
            nn.init.xavier_normal_(self.kernel)
            self.bias = None
            if use_bias:
                self.bias = nn.Parameter(lib.Tensor(output_dim))
                nn.init.zeros_(self.bias)

        def forward(self, input_tensor, adj_mat):
            support = lib.mm(input_tensor, self.kernel)
            output = lib.spmm(adj_mat, support)
            if self.bias is not None:
                output = output + self.bias
            return output

    class GCN(nn.Module):
        def __init__(self, input_dim, hidden_dim, output_dim, use_bias=True, dropout_p=0.1):
            super().__init__()
            self.gc1 = GraphConv(input_dim, hidden_dim, use_bias=use_bias)
            self.gc2 = GraphConv(hidden_dim, output_dim, use_bias=use_bias)
            self.dropout = nn.Dropout(dropout_p)

        def forward(self, input_tensor, adj_mat):
            x = self.dropout(F.relu(self.gc1(input_tensor, adj_mat)))
            return F.log_softmax(self.gc2(x, adj_mat), dim=1)

    return GCN


def block_graph(nodes=60, blocks=3, features=12, seed=0):
    """A stochastic block model: edges 0.3 likely within a block, 0.02 across; binary features, a block's own third of
    the columns 0.5 likely and the rest 0.1; a few nodes isolated and featureless (the ``inf`` guards fire)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(nodes) % blocks
    same = labels[:, None] == labels[None, :]
    upper = np.triu(rng.random((nodes, nodes)) < np.where(same, 0.3, 0.02), 1)
    upper[:3, :] = upper[:, :3] = False
    edges = np.argwhere(upper | upper.T)
    own = (np.arange(features)[None, :] * blocks // features) == labels[:, None]
    content = (rng.random((nodes, features)) < np.where(own, 0.5, 0.1)).astype(np.int32)
    content[:2] = 0
    return content, labels, edges


def load_graph(lib, content, labels, edges):
    """``load_cora``'s processing: row-normalised features and ``D^-1/2 (A + I) D^-1/2``, through torch's sparse
    calls (kiln builds them dense), then in float64 for the lockstep."""
    features = lib.FloatTensor(content)
    scale_vector = lib.sum(features, dim=1)
    scale_vector = 1 / scale_vector
    scale_vector[scale_vector == float("inf")] = 0
    scale_vector = lib.diag(scale_vector).to_sparse()
    features = scale_vector @ features
    V, E = len(labels), edges.shape[0]
    adj_mat = lib.sparse_coo_tensor(edges.T, lib.ones(E), (V, V), dtype=lib.int64)
    adj_mat = lib.eye(V) + adj_mat
    degree_mat = lib.sum(adj_mat, dim=1)
    degree_mat = lib.sqrt(1 / degree_mat)
    degree_mat[degree_mat == float("inf")] = 0
    degree_mat = lib.diag(degree_mat).to_sparse()
    adj_mat = degree_mat @ adj_mat @ degree_mat
    return features.to_sparse().double(), lib.LongTensor(labels), adj_mat.to_sparse().double()


class GCNRun:
    """``main.py``'s train_iter and test, for one library."""

    def __init__(self, lib, nn, model, lr=0.01, l2=5e-4):
        self.lib, self.model = lib, model
        self.optimizer = lib.optim.Adam(model.parameters(), lr=lr, weight_decay=l2)
        self.criterion = nn.NLLLoss()

    def train_iter(self, input, target, mask_train, mask_val):
        self.model.train()
        self.optimizer.zero_grad()
        output = self.model(*input)
        loss = self.criterion(output[mask_train], target[mask_train])
        loss.backward()
        self.optimizer.step()
        return loss.item(), self.test(input, target, mask_train), self.test(input, target, mask_val)

    def test(self, input, target, mask):
        self.model.eval()
        with self.lib.no_grad():
            output = self.model(*input)
            output, target = output[mask], target[mask]
            loss = self.criterion(output, target)
            acc = (output.argmax(dim=1) == target).float().sum() / len(target)
        return loss.item(), acc.item()


def _gcn_runs(torch, dropout_p=0.0):
    """Both programs with kiln's initial weights, and each one's graph; torch's processing (float32, as main.py's
    ``FloatTensor``) differs from kiln's in the last bit, so torch trains on kiln's arrays, made sparse as main.py's."""
    features, labels, adj_mat = load_graph(kiln, *block_graph())
    as_torch = lambda value: torch.tensor(np.asarray(value))
    graphs = [(features, labels, adj_mat), (as_torch(features).to_sparse(), as_torch(labels), as_torch(adj_mat).to_sparse())]
    kiln.manual_seed(0)
    build = lambda name: gcn_program(*_libraries(name))(graphs[0][0].shape[1], 16, labels.max().item() + 1, True, dropout_p)
    ours, theirs = build("kiln").double(), build("torch").double()
    theirs.load_state_dict({key: torch.tensor(np.array(value)) for key, value in ours.state_dict().items()})
    return (GCNRun(*_libraries("kiln")[:2], ours), GCNRun(*_libraries("torch")[:2], theirs)), graphs


def _splits(lib, nodes=60):
    idx = lib.tensor(np.random.default_rng(1).permutation(nodes))  # main.py's torch.randperm, one draw for both
    return idx[:20], idx[20:30], idx[30:]


def test_gcn_graph_processing_matches_torchs():
    torch = require("torch")
    graph = block_graph()
    for ours, theirs in zip(load_graph(kiln, *graph), load_graph(torch, *graph)):  # float32 arithmetic, then double
        assert not ours.is_sparse and theirs.is_sparse == (theirs.dtype == torch.float64)
        np.testing.assert_allclose(np.asarray(ours), theirs.to_dense().numpy(), rtol=1e-6, atol=1e-7)


def test_gcn_trains_in_lockstep_with_torch_and_learns_the_blocks():
    torch = require("torch")
    (ours, theirs), graphs = _gcn_runs(torch)
    (features, labels, adj), (torch_features, torch_labels, torch_adj) = graphs
    (idx_test, idx_val, idx_train), (torch_test, torch_val, torch_train) = _splits(kiln), _splits(torch)
    for _ in range(30):
        got = ours.train_iter((features, adj), labels, idx_train, idx_val)
        expected = theirs.train_iter((torch_features, torch_adj), torch_labels, torch_train, torch_val)
        np.testing.assert_allclose(np.hstack(got), np.hstack(expected), rtol=1e-10, atol=1e-12)
    _assert_same_parameters(ours.model, theirs.model)
    loss_test, acc_test = ours.test((features, adj), labels, idx_test)
    assert (loss_test, acc_test) == pytest.approx(theirs.test((torch_features, torch_adj), torch_labels, torch_test), rel=1e-10)
    assert acc_test > 0.8


def test_gcn_compiled_training_step_follows_torchs_loop():
    torch = require("torch")
    (ours, theirs), graphs = _gcn_runs(torch)
    (features, labels, adj), (torch_features, torch_labels, torch_adj) = graphs
    _, idx_val, idx_train = _splits(kiln)
    _, torch_val, torch_train = _splits(torch)
    step = kiln.compile_train_step(ours.model, lambda output, target: ours.criterion(output[idx_train], target[idx_train]),
                                   ours.optimizer, batch_dim=None)  # the train mask, fixed, is a constant of the step
    ours.model.train()
    for _ in range(5):
        loss = float(step(features, adj, labels))
        expected, _, _ = theirs.train_iter((torch_features, torch_adj), torch_labels, torch_train, torch_val)
        assert loss == pytest.approx(expected, rel=1e-10)
    _assert_same_parameters(ours.model, theirs.model)


def test_the_programs_with_their_dropout_learn_gcn_eagerly_and_the_translator_compiled():
    kiln_lib, nn, F = _libraries("kiln")
    features, labels, adj = load_graph(kiln, *block_graph())
    idx_test, idx_val, idx_train = _splits(kiln)
    kiln.manual_seed(1)
    gcn = GCNRun(kiln_lib, nn, gcn_program(kiln_lib, nn, F)(features.shape[1], 16, 3, True, 0.5).double())  # main.py's --dropout-p
    for _ in range(40):
        gcn.train_iter((features, adj), labels, idx_train, idx_val)
    assert gcn.test((features, adj), labels, idx_test)[1] > 0.8
    translator = translation_program(kiln_lib, nn, F)[0](1, 1, 16, 2, SRC_VOCAB, TGT_VOCAB, 32, 0.1)  # main.py's --dropout
    run = TranslationRun(kiln_lib, nn, F, translator, batch_size=8, lr=1e-2)
    step = kiln.compile_train_step(translator, lambda logits, tgt_out: run.loss_fn(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1)),
                                   run.optim, batch_dim=None)
    pairs = parallel_corpus(32, seed=5)
    first = run.validate(run.loader(pairs))
    for _ in range(25):
        translator.train()
        for src, tgt in run.loader(pairs):
            masks = run.create_mask(src, tgt[:-1, :], PAD_IDX)
            step(src, tgt[:-1, :], *masks, masks[2], tgt[1:, :])
    assert run.validate(run.loader(pairs)) < 0.25 * first


# ------------------------------------------------------------------------------------------------------ mnist_hogwild


def hogwild_program(lib, nn, F):
    """``mnist_hogwild``'s ``Net`` and ``train.py``'s loops, for ``lib``. ``Net(p)``: the program's dropouts are 0.5;
    the lockstep passes 0 (two libraries cannot draw the same masks)."""

    class Net(nn.Module):
        def __init__(self, p=0.5):
            super().__init__()
            self.p = p
            self.conv1 = nn.Conv2d(1, 10, kernel_size=5)
            self.conv2 = nn.Conv2d(10, 20, kernel_size=5)
            self.conv2_drop = nn.Dropout2d(p)
            self.fc1 = nn.Linear(320, 50)
            self.fc2 = nn.Linear(50, 10)

        def forward(self, x):
            x = F.relu(F.max_pool2d(self.conv1(x), 2))
            x = F.relu(F.max_pool2d(self.conv2_drop(self.conv2(x)), 2))
            x = x.view(-1, 320)
            x = F.relu(self.fc1(x))
            x = F.dropout(x, p=self.p, training=self.training)
            return F.log_softmax(self.fc2(x), dim=1)

    def train_epoch(model, data_loader, optimizer):
        model.train()
        losses = []
        for batch_idx, (data, target) in enumerate(data_loader):
            optimizer.zero_grad()
            loss = F.nll_loss(model(data), target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        return losses

    def test_epoch(model, data_loader):
        model.eval()
        test_loss, correct = 0, 0
        with lib.no_grad():
            for data, target in data_loader:
                output = model(data)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # size_average's deprecation warning, as torch's
                    test_loss += F.nll_loss(output, target, size_average=False).item()
                pred = output.max(1)[1]
                correct += pred.eq(target).sum().item()
        return test_loss / len(data_loader.dataset), correct

    return Net, train_epoch, test_epoch


def digits_28(lib, start, stop):
    """The bundled 8x8 digits as 1x28x28 images (each pixel 3x3, a 2-pixel border), normalised as MNIST's transform."""
    from kiln.runtime.data import load_digits

    x, y = load_digits()
    images = np.pad(np.kron(x[start:stop].reshape(-1, 8, 8), np.ones((3, 3))), ((0, 0), (2, 2), (2, 2)))[:, None]
    images = (images / max(images.max(), 1.0) - 0.1307) / 0.3081
    return lib.utils.data.TensorDataset(lib.tensor(images).double(), lib.tensor(y[start:stop]).long())


def test_hogwild_workers_loop_run_in_turn_trains_in_lockstep_with_torch_after_share_memory_is_refused():
    """main.py with ``model.share_memory()`` refused (see ``tests/frontend/test_port_seq_share_memory.py``): each
    worker's ``train`` run in turn in the one process, as the refusal says, on the one model; ``shuffle=False`` here (the
    two libraries' shuffles draw differently)."""
    torch = require("torch")
    programs = hogwild_program(*_libraries("kiln")), hogwild_program(*_libraries("torch"))
    kiln.manual_seed(1)
    model, theirs = programs[0][0](p=0.0).double(), programs[1][0](p=0.0).double()
    theirs.load_state_dict({key: torch.tensor(np.array(value)) for key, value in model.state_dict().items()})
    with pytest.raises(kiln.TraceError, match="Hogwild"):
        model.share_memory()
    theirs.share_memory()
    for (Net, train_epoch, test_epoch), lib, net in zip(programs, (kiln, torch), (model, theirs)):
        loader = lib.utils.data.DataLoader(digits_28(lib, 0, 32), batch_size=16, shuffle=False)
        net.history = []
        for rank in range(2):  # --num-processes 2, in turn
            optimizer = lib.optim.SGD(net.parameters(), lr=0.01, momentum=0.5)
            net.history.append(train_epoch(net, loader, optimizer))
        net.history.append(test_epoch(net, lib.utils.data.DataLoader(digits_28(lib, 32, 64), batch_size=32)))
    np.testing.assert_allclose(np.hstack(model.history[:2]), np.hstack(theirs.history[:2]), rtol=1e-10)
    assert model.history[2][0] == pytest.approx(theirs.history[2][0], rel=1e-10) and model.history[2][1] == theirs.history[2][1]
    _assert_same_parameters(model, theirs)
