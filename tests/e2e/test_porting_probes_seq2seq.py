"""Porting probes: the two PyTorch translation tutorials, written as the tutorials write them (``torch`` is ``torch``
or ``kiln``), run in both libraries from kiln's initial weights.

- "NLP From Scratch: Translation with a Sequence to Sequence Network and Attention": ``EncoderRNN`` (``nn.Embedding``,
  ``nn.GRU(batch_first=True)``, ``nn.Dropout``), ``BahdanauAttention`` (``Wa``/``Ua``/``Va`` Linear,
  ``scores.squeeze(2).unsqueeze(1)``, softmax, ``torch.bmm``), ``AttnDecoderRNN`` (the start token by
  ``torch.empty(..., dtype=torch.long).fill_(SOS_token)``, ``hidden.permute(1, 0, 2)`` as the query, ``cat`` of the
  embedding and context into the GRU, teacher forcing by ``target_tensor[:, i].unsqueeze(1)`` or, without a target,
  greedy decoding by ``decoder_output.topk(1)`` and ``topi.squeeze(-1).detach()``), ``log_softmax`` then
  ``nn.NLLLoss`` over ``view(-1, ...)``; two Adam optimizers stepped together; ``evaluate`` under ``torch.no_grad()``.
- "Language Translation with nn.Transformer": ``Seq2SeqTransformer`` on ``nn.Transformer`` (sequence first),
  ``TokenEmbedding`` scaled by ``math.sqrt(emb_size)``, the ``PositionalEncoding`` buffer (``pos_embedding[:, 0::2] =
  torch.sin(pos * den)``), the tutorial's ``generate_square_subsequent_mask`` (``triu(...) == 1).transpose(0, 1)``,
  ``masked_fill`` with ``-inf``) and ``nn.Transformer.generate_square_subsequent_mask``, a boolean ``src_mask``, padding
  masks ``(src == PAD_IDX).transpose(0, 1)``, xavier init of every matrix, ``CrossEntropyLoss(ignore_index=PAD_IDX)``
  with and without label smoothing, Adam ``betas=(0.9, 0.98), eps=1e-9``; then ``greedy_decode`` (``torch.max`` over
  the generator's last position, ``.item()``, ``cat`` of ``torch.ones(1, 1).type_as(src.data).fill_(next_word)``, a
  float mask ``.type(torch.bool)``) and a beam search (``topk`` over the flattened beam scores, ``torch.div(...,
  rounding_mode='floor')`` and ``%`` for beam and token, ``index_select`` of the kept beams).

Checked against torch 2.13 in float64 to 1e-10 (first outputs, first gradients, losses, parameters and buffers after
the steps, decoded tokens, attention weights, beam scores), eagerly and with the whole training step (both optimizers'
``zero_grad``, forward, backward, ``step``) in one ``kiln.compile(fullgraph=True)`` graph against torch's eager loop;
float32 (how both tutorials train) at float32's level.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot, split_key_bias

SOS_token, EOS_token, MAX_LENGTH = 0, 1, 5
INPUT_WORDS, OUTPUT_WORDS, HIDDEN, BATCH = 9, 8, 6, 3


# --- NLP From Scratch: GRU encoder, Bahdanau attention decoder --------------------------------------------------------


def gru_attention_seq2seq(torch, nn, F, dropout_p=0.0):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    class EncoderRNN(nn.Module):
        def __init__(self, input_size, hidden_size, dropout_p=0.1):
            super(EncoderRNN, self).__init__()
            self.hidden_size = hidden_size
            self.embedding = nn.Embedding(input_size, hidden_size)
            self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
            self.dropout = nn.Dropout(dropout_p)

        def forward(self, input):
            embedded = self.dropout(self.embedding(input))
            output, hidden = self.gru(embedded)
            return output, hidden

    class BahdanauAttention(nn.Module):
        def __init__(self, hidden_size):
            super(BahdanauAttention, self).__init__()
            self.Wa = nn.Linear(hidden_size, hidden_size)
            self.Ua = nn.Linear(hidden_size, hidden_size)
            self.Va = nn.Linear(hidden_size, 1)

        def forward(self, query, keys):
            scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))
            scores = scores.squeeze(2).unsqueeze(1)
            weights = F.softmax(scores, dim=-1)
            context = torch.bmm(weights, keys)
            return context, weights

    class AttnDecoderRNN(nn.Module):
        def __init__(self, hidden_size, output_size, dropout_p=0.1):
            super(AttnDecoderRNN, self).__init__()
            self.embedding = nn.Embedding(output_size, hidden_size)
            self.attention = BahdanauAttention(hidden_size)
            self.gru = nn.GRU(2 * hidden_size, hidden_size, batch_first=True)
            self.out = nn.Linear(hidden_size, output_size)
            self.dropout = nn.Dropout(dropout_p)

        def forward(self, encoder_outputs, encoder_hidden, target_tensor=None):
            batch_size = encoder_outputs.size(0)
            decoder_input = torch.empty(batch_size, 1, dtype=torch.long, device=device).fill_(SOS_token)
            decoder_hidden = encoder_hidden
            decoder_outputs = []
            attentions = []

            for i in range(MAX_LENGTH):
                decoder_output, decoder_hidden, attn_weights = self.forward_step(
                    decoder_input, decoder_hidden, encoder_outputs
                )
                decoder_outputs.append(decoder_output)
                attentions.append(attn_weights)

                if target_tensor is not None:
                    # Teacher forcing: Feed the target as the next input
                    decoder_input = target_tensor[:, i].unsqueeze(1)  # Teacher forcing
                else:
                    # Without teacher forcing: use its own predictions as the next input
                    _, topi = decoder_output.topk(1)
                    decoder_input = topi.squeeze(-1).detach()  # detach from history as input

            decoder_outputs = torch.cat(decoder_outputs, dim=1)
            decoder_outputs = F.log_softmax(decoder_outputs, dim=-1)
            attentions = torch.cat(attentions, dim=1)

            return decoder_outputs, decoder_hidden, attentions

        def forward_step(self, input, hidden, encoder_outputs):
            embedded = self.dropout(self.embedding(input))

            query = hidden.permute(1, 0, 2)
            context, attn_weights = self.attention(query, encoder_outputs)
            input_gru = torch.cat((embedded, context), dim=2)

            output, hidden = self.gru(input_gru, hidden)
            output = self.out(output)

            return output, hidden, attn_weights

    class Translator(nn.Module):  # holds both halves, so one state_dict carries kiln's initial weights to torch
        def __init__(self):
            super().__init__()
            self.encoder = EncoderRNN(INPUT_WORDS, HIDDEN, dropout_p).to(device)
            self.decoder = AttnDecoderRNN(HIDDEN, OUTPUT_WORDS, dropout_p).to(device)

    return Translator()


def _pairs(seed=0):
    """The tutorial's ``get_dataloader``: word ids, EOS_token, then zeros to MAX_LENGTH, in int64 arrays."""
    rng = np.random.default_rng(seed)
    inputs = np.zeros((BATCH, MAX_LENGTH), dtype=np.int64)
    targets = np.zeros((BATCH, MAX_LENGTH), dtype=np.int64)
    for row, (n, m) in enumerate([(4, 3), (2, 4), (3, 2)]):
        inputs[row, :n], inputs[row, n] = rng.integers(2, INPUT_WORDS, n), EOS_token
        targets[row, :m], targets[row, m] = rng.integers(2, OUTPUT_WORDS, m), EOS_token
    return inputs, targets


def train_gru_seq2seq(steps=3, lr=0.01):
    input_ids, target_ids = _pairs()

    def train(torch, nn, F, model):
        encoder, decoder = model.encoder, model.decoder
        encoder_optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
        decoder_optimizer = torch.optim.Adam(decoder.parameters(), lr=lr)
        criterion = nn.NLLLoss()
        input_tensor, target_tensor = torch.LongTensor(input_ids), torch.LongTensor(target_ids)
        record = {"losses": []}
        for _ in range(steps):
            encoder_optimizer.zero_grad()
            decoder_optimizer.zero_grad()

            encoder_outputs, encoder_hidden = encoder(input_tensor)
            decoder_outputs, _, attentions = decoder(encoder_outputs, encoder_hidden, target_tensor)

            loss = criterion(
                decoder_outputs.view(-1, decoder_outputs.size(-1)),
                target_tensor.view(-1)
            )
            loss.backward()
            record.setdefault("log_probs", array(decoder_outputs))
            record.setdefault("attentions", array(attentions))
            record.setdefault("grads", gradients(model))

            encoder_optimizer.step()
            decoder_optimizer.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        record.update(evaluate(torch, encoder, decoder, input_tensor))
        return record

    return train


def evaluate(torch, encoder, decoder, input_tensor):
    encoder.eval()
    decoder.eval()
    with torch.no_grad():
        encoder_outputs, encoder_hidden = encoder(input_tensor)
        decoder_outputs, decoder_hidden, decoder_attn = decoder(encoder_outputs, encoder_hidden)

        _, topi = decoder_outputs.topk(1)
        decoded_ids = topi.squeeze()
    assert decoded_ids.dtype == torch.int64 and tuple(decoded_ids.shape) == (BATCH, MAX_LENGTH)
    return {"decoded_ids": array(decoded_ids), "decoder_attn": array(decoder_attn), "hidden": array(decoder_hidden)}


def test_gru_attention_seq2seq_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(gru_attention_seq2seq, train_gru_seq2seq())
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_gru_attention_seq2seq_with_dropout_evaluates_as_torch(float64_default):
    """Built with the tutorial's ``dropout_p=0.1``: in ``eval()`` the dropout is the identity in both."""
    input_ids, _ = _pairs()

    def train(torch, nn, F, model):
        return evaluate(torch, model.encoder, model.decoder, torch.LongTensor(input_ids))

    ours, theirs = run_in_lockstep(lambda torch, nn, F: gru_attention_seq2seq(torch, nn, F, dropout_p=0.1), train)
    assert_same_records(ours, theirs)


def test_gru_attention_seq2seq_compiled_step_as_torch(float64_default):
    input_ids, target_ids = _pairs()

    def train(torch, nn, F, model):
        encoder, decoder = model.encoder, model.decoder
        encoder_optimizer = torch.optim.Adam(encoder.parameters(), lr=0.01)
        decoder_optimizer = torch.optim.Adam(decoder.parameters(), lr=0.01)
        criterion = nn.NLLLoss()

        def train_step(input_tensor, target_tensor):
            encoder_optimizer.zero_grad()
            decoder_optimizer.zero_grad()
            encoder_outputs, encoder_hidden = encoder(input_tensor)
            decoder_outputs, _, _ = decoder(encoder_outputs, encoder_hidden, target_tensor)
            loss = criterion(decoder_outputs.view(-1, decoder_outputs.size(-1)), target_tensor.view(-1))
            loss.backward()
            encoder_optimizer.step()
            decoder_optimizer.step()
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        batch = torch.LongTensor(input_ids), torch.LongTensor(target_ids)
        losses = [run(*batch).item() for _ in range(3)]
        return {"losses": losses, "state": snapshot(model)}

    ours, theirs = run_in_lockstep(gru_attention_seq2seq, train)
    assert_same_records(ours, theirs)


def test_gru_attention_seq2seq_float32_as_torch():
    ours, theirs = run_in_lockstep(gru_attention_seq2seq, train_gru_seq2seq())
    assert ours["log_probs"].dtype == np.float32
    # Va's bias shifts every score alike, so softmax cancels it: its gradient is rounding noise (1e-19 in float64,
    # 1e-10 in float32, against Adam's eps of 1e-8), which Adam turns into steps of up to lr in float32, either way.
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6, looser={"Va.bias": dict(rtol=0, atol=3 * 0.01)})


# --- Language Translation with nn.Transformer -------------------------------------------------------------------------

UNK_IDX, PAD_IDX, BOS_IDX, EOS_IDX = 0, 1, 2, 3
SRC_VOCAB_SIZE, TGT_VOCAB_SIZE, EMB_SIZE, NHEAD, FFN_HID_DIM = 11, 10, 8, 2, 16


def transformer_seq2seq(torch, nn, F, dropout=0.0):
    Tensor, Transformer = torch.Tensor, nn.Transformer

    class PositionalEncoding(nn.Module):
        def __init__(self, emb_size: int, dropout: float, maxlen: int = 5000):
            super(PositionalEncoding, self).__init__()
            den = torch.exp(- torch.arange(0, emb_size, 2) * math.log(10000) / emb_size)
            pos = torch.arange(0, maxlen).reshape(maxlen, 1)
            pos_embedding = torch.zeros((maxlen, emb_size))
            pos_embedding[:, 0::2] = torch.sin(pos * den)
            pos_embedding[:, 1::2] = torch.cos(pos * den)
            pos_embedding = pos_embedding.unsqueeze(-2)

            self.dropout = nn.Dropout(dropout)
            self.register_buffer('pos_embedding', pos_embedding)

        def forward(self, token_embedding: Tensor):
            return self.dropout(token_embedding + self.pos_embedding[:token_embedding.size(0), :])

    class TokenEmbedding(nn.Module):
        def __init__(self, vocab_size: int, emb_size):
            super(TokenEmbedding, self).__init__()
            self.embedding = nn.Embedding(vocab_size, emb_size)
            self.emb_size = emb_size

        def forward(self, tokens: Tensor):
            return self.embedding(tokens.long()) * math.sqrt(self.emb_size)

    class Seq2SeqTransformer(nn.Module):
        def __init__(self, num_encoder_layers: int, num_decoder_layers: int, emb_size: int, nhead: int,
                     src_vocab_size: int, tgt_vocab_size: int, dim_feedforward: int = 512, dropout: float = 0.1):
            super(Seq2SeqTransformer, self).__init__()
            self.transformer = Transformer(d_model=emb_size,
                                           nhead=nhead,
                                           num_encoder_layers=num_encoder_layers,
                                           num_decoder_layers=num_decoder_layers,
                                           dim_feedforward=dim_feedforward,
                                           dropout=dropout)
            self.generator = nn.Linear(emb_size, tgt_vocab_size)
            self.src_tok_emb = TokenEmbedding(src_vocab_size, emb_size)
            self.tgt_tok_emb = TokenEmbedding(tgt_vocab_size, emb_size)
            self.positional_encoding = PositionalEncoding(emb_size, dropout=dropout, maxlen=64)

        def forward(self, src: Tensor, trg: Tensor, src_mask: Tensor, tgt_mask: Tensor, src_padding_mask: Tensor,
                    tgt_padding_mask: Tensor, memory_key_padding_mask: Tensor):
            src_emb = self.positional_encoding(self.src_tok_emb(src))
            tgt_emb = self.positional_encoding(self.tgt_tok_emb(trg))
            outs = self.transformer(src_emb, tgt_emb, src_mask, tgt_mask, None,
                                    src_padding_mask, tgt_padding_mask, memory_key_padding_mask)
            return self.generator(outs)

        def encode(self, src: Tensor, src_mask: Tensor):
            return self.transformer.encoder(self.positional_encoding(
                                self.src_tok_emb(src)), src_mask)

        def decode(self, tgt: Tensor, memory: Tensor, tgt_mask: Tensor):
            return self.transformer.decoder(self.positional_encoding(
                              self.tgt_tok_emb(tgt)), memory,
                              tgt_mask)

    transformer = Seq2SeqTransformer(2, 2, EMB_SIZE, NHEAD, SRC_VOCAB_SIZE, TGT_VOCAB_SIZE, FFN_HID_DIM, dropout)
    for p in transformer.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    return transformer


def translation_helpers(torch, nn):
    DEVICE = torch.device('cpu')

    def generate_square_subsequent_mask(sz):
        mask = (torch.triu(torch.ones((sz, sz), device=DEVICE)) == 1).transpose(0, 1)
        mask = mask.float().masked_fill(mask == 0, float('-inf')).masked_fill(mask == 1, float(0.0))
        return mask

    def create_mask(src, tgt):
        src_seq_len = src.shape[0]
        tgt_seq_len = tgt.shape[0]

        tgt_mask = generate_square_subsequent_mask(tgt_seq_len)
        src_mask = torch.zeros((src_seq_len, src_seq_len), device=DEVICE).type(torch.bool)

        src_padding_mask = (src == PAD_IDX).transpose(0, 1)
        tgt_padding_mask = (tgt == PAD_IDX).transpose(0, 1)
        return src_mask, tgt_mask, src_padding_mask, tgt_padding_mask

    def greedy_decode(model, src, src_mask, max_len, start_symbol):
        src = src.to(DEVICE)
        src_mask = src_mask.to(DEVICE)

        memory = model.encode(src, src_mask)
        ys = torch.ones(1, 1).fill_(start_symbol).type(torch.long).to(DEVICE)
        for i in range(max_len-1):
            memory = memory.to(DEVICE)
            tgt_mask = (generate_square_subsequent_mask(ys.size(0))
                        .type(torch.bool)).to(DEVICE)
            out = model.decode(ys, memory, tgt_mask)
            out = out.transpose(0, 1)
            prob = model.generator(out[:, -1])
            _, next_word = torch.max(prob, dim=1)
            next_word = next_word.item()

            ys = torch.cat([ys,
                            torch.ones(1, 1).type_as(src.data).fill_(next_word)], dim=0)
            if next_word == EOS_IDX:
                break
        return ys

    def beam_search(model, src, src_mask, max_len, start_symbol, beam_size=3):
        memory = model.encode(src, src_mask)
        ys = torch.full((1, 1), start_symbol, dtype=torch.long)
        scores = torch.zeros(1, dtype=memory.dtype)
        for _ in range(max_len - 1):
            tgt_mask = nn.Transformer.generate_square_subsequent_mask(ys.size(0))
            out = model.decode(ys, memory.expand(-1, ys.size(1), -1), tgt_mask).transpose(0, 1)
            log_probs = torch.log_softmax(model.generator(out[:, -1]), dim=-1)
            vocab = log_probs.size(-1)
            candidates = (scores.unsqueeze(1) + log_probs).view(-1)
            scores, flat = torch.topk(candidates, min(beam_size, candidates.numel()))
            beams, tokens = torch.div(flat, vocab, rounding_mode='floor'), flat % vocab
            ys = torch.cat([ys.index_select(1, beams), tokens.unsqueeze(0)], dim=0)
        return ys, scores

    return generate_square_subsequent_mask, create_mask, greedy_decode, beam_search


def _translation_batch(seed=0):
    """Sequence-first token ids as the tutorial's ``collate_fn`` pads them: BOS, words, EOS, then PAD_IDX."""
    rng = np.random.default_rng(seed)
    src = np.full((7, BATCH), PAD_IDX, dtype=np.int64)
    tgt = np.full((6, BATCH), PAD_IDX, dtype=np.int64)
    for column, (n, m) in enumerate([(5, 4), (3, 2), (4, 3)]):
        src[0, column], src[1:n + 1, column], src[n + 1, column] = BOS_IDX, rng.integers(4, SRC_VOCAB_SIZE, n), EOS_IDX
        tgt[0, column], tgt[1:m + 1, column], tgt[m + 1, column] = BOS_IDX, rng.integers(4, TGT_VOCAB_SIZE, m), EOS_IDX
    return src, tgt


def transformer_loss_step(torch, nn, model, loss_fn, src, tgt):
    _, create_mask, _, _ = translation_helpers(torch, nn)
    tgt_input = tgt[:-1, :]
    src_mask, tgt_mask, src_padding_mask, tgt_padding_mask = create_mask(src, tgt_input)
    logits = model(src, tgt_input, src_mask, tgt_mask, src_padding_mask, tgt_padding_mask, src_padding_mask)
    tgt_out = tgt[1:, :]
    return logits, loss_fn(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1))


def train_transformer_seq2seq(label_smoothing=0.0, steps=3):
    src_ids, tgt_ids = _translation_batch()

    def train(torch, nn, F, model):
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=PAD_IDX, label_smoothing=label_smoothing)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.98), eps=1e-9)
        src, tgt = torch.tensor(src_ids), torch.tensor(tgt_ids)
        record = {"losses": []}
        model.train()
        for _ in range(steps):
            logits, loss = transformer_loss_step(torch, nn, model, loss_fn, src, tgt)
            optimizer.zero_grad()
            loss.backward()
            record.setdefault("logits", array(logits))
            record.setdefault("grads", gradients(model))
            optimizer.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        record.update(translate(torch, nn, model, src_ids))
        return record

    return train


def translate(torch, nn, model, src_ids):
    """The tutorial's ``translate`` on each source column (greedy), and a beam search of the first."""
    _, _, greedy_decode, beam_search = translation_helpers(torch, nn)
    model.eval()
    decoded = {}
    for column in range(src_ids.shape[1]):
        src = torch.tensor(src_ids[:, column]).view(-1, 1)
        num_tokens = src.shape[0]
        src_mask = (torch.zeros(num_tokens, num_tokens)).type(torch.bool)
        tgt_tokens = greedy_decode(model, src, src_mask, max_len=num_tokens + 5, start_symbol=BOS_IDX).flatten()
        decoded[f"greedy {column}"] = array(tgt_tokens)
    with torch.no_grad():
        src = torch.tensor(src_ids[:, :1])
        beams, scores = beam_search(model, src, torch.zeros(src.shape[0], src.shape[0]).bool(), 5, BOS_IDX)
    assert beams.dtype == torch.int64 and scores.dtype == torch.get_default_dtype()
    decoded.update(beams=array(beams), beam_scores=array(scores))
    return decoded


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_transformer_seq2seq_trains_as_torch(label_smoothing, float64_default):
    ours, theirs = map(split_key_bias, run_in_lockstep(transformer_seq2seq, train_transformer_seq2seq(label_smoothing)))
    assert_same_records(ours, theirs, looser={"key bias": dict(rtol=0, atol=1e-9)})
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_transformer_masks_as_torch(float64_default):
    """The tutorial's mask helper, nn.Transformer's static one and the padding masks: same values and dtypes."""
    src_ids, tgt_ids = _translation_batch()
    masks = []
    for torch, nn in ((kiln, kiln.nn), (float64_default, float64_default.nn)):
        generate, create_mask, _, _ = translation_helpers(torch, nn)
        made = create_mask(torch.tensor(src_ids), torch.tensor(tgt_ids[:-1]))
        made += (nn.Transformer.generate_square_subsequent_mask(4), generate(4).type(torch.bool))
        masks.append([(array(m), str(m.dtype).split('.')[-1]) for m in made])
    for (ours, our_dtype), (theirs, their_dtype) in zip(*masks):
        assert our_dtype == their_dtype
        np.testing.assert_array_equal(ours, theirs)


def test_transformer_seq2seq_compiled_step_as_torch(float64_default):
    src_ids, tgt_ids = _translation_batch()

    def train(torch, nn, F, model):
        loss_fn = torch.nn.CrossEntropyLoss(ignore_index=PAD_IDX, label_smoothing=0.1)
        optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.98), eps=1e-9)

        def train_step(src, tgt):
            optimizer.zero_grad()
            _, loss = transformer_loss_step(torch, nn, model, loss_fn, src, tgt)
            loss.backward()
            optimizer.step()
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        losses = [run(torch.tensor(src_ids), torch.tensor(tgt_ids)).item() for _ in range(3)]
        return {"losses": losses, "state": snapshot(model)}

    ours, theirs = map(split_key_bias, run_in_lockstep(transformer_seq2seq, train))
    assert_same_records(ours, theirs, looser={"key bias": dict(rtol=0, atol=1e-9)})


def test_transformer_seq2seq_float32_as_torch():
    ours, theirs = map(split_key_bias, run_in_lockstep(transformer_seq2seq, train_transformer_seq2seq(0.1)))
    assert ours["logits"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6, looser={"key bias": dict(rtol=0, atol=2 * 3 * 0.01)})
