"""Porting probes: BERT masked-language modelling, CLIP's contrastive loss and a WaveNet, each written once as PyTorch
code (``torch`` is PyTorch or kiln) and trained in both from kiln's initial weights in float64: the first forward,
the first gradients, the losses, the learning rates and the state after a few steps agree to 1e-10, eagerly and with
the whole step (zero_grad, forward, backward, clipping, optimizer step, CLIP's clamp) one ``kiln.compile(fullgraph=True)``
graph against PyTorch's eager loop.

- BERT (Hugging Face's layout, tiny): word/position/token-type embeddings, post-LN encoder with GELU, the additive
  mask ``(1.0 - mask[:, None, None, :]) * torch.finfo(dtype).min``, the tanh pooler feeding a next-sentence head, an
  MLM head tied to the word embeddings; ``DataCollatorForLanguageModeling``'s masking (``torch.bernoulli(torch.full(
  shape, 0.15))``, 80/10/10, labels -100); AdamW with no-decay groups and ``get_linear_schedule_with_warmup`` as a
  ``LambdaLR``. Each library's collator draws from its own generator: kiln's draws are checked for their rates and
  rules, and both libraries train on the batches kiln's collator made.
- CLIP: an image tower and a text tower (features at the end-of-text token, ``text.argmax(dim=-1)``), ``F.normalize``,
  ``logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))``, ``.exp()``, the symmetric cross-entropy on
  ``torch.arange`` labels, and ``logit_scale.clamp_(0, 4.6052)`` under ``no_grad`` after each step (lr 1.0 on it,
  so the clamp bites: random pairs push the scale down to 0 in three steps). The key projection's bias gets a zero gradient in exact arithmetic (softmax does not see a
  constant added to every score), so AdamW steps it by ``lr * g / eps`` of rounding noise |g| <~ 1e-16 in both
  libraries (~1e-10 a step): its entries of ``in_proj_bias`` agree to 1e-9 absolute, not relative (as the ViT
  probe's); the query's and value's entries to 1e-10.
- WaveNet: mu-law quantized targets, dilated causal ``Conv1d`` (left ``F.pad``) under
  ``torch.nn.utils.parametrizations.weight_norm`` (or the deprecated ``nn.utils.weight_norm``), the gated ``tanh * sigmoid`` unit, residual and skip 1x1 convs,
  ``F.cross_entropy`` over dim 1 of (N, C, L) logits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries


def training(batches, make_optimizer, loss_of, compiled=False, steps=4, make_scheduler=None, after_step=None,
             clip=None):
    """A ``train`` for ``run_in_lockstep``: ``loss_of(torch, nn, F, model, *batch) -> (loss, output)`` stepped with
    the optimizer (clipping to ``clip``, then ``after_step(torch, model)``), the scheduler stepped after each call;
    ``compiled``: that step is one ``kiln.compile(fullgraph=True)`` graph in kiln, PyTorch's eager loop in torch."""

    def train(torch, nn, F, model):
        optimizer = make_optimizer(torch, model)
        scheduler = make_scheduler(torch, optimizer) if make_scheduler else None
        data = [tuple(torch.tensor(part) for part in batch) for batch in batches]

        def step(*batch):
            optimizer.zero_grad()
            loss, output = loss_of(torch, nn, F, model, *batch)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            if after_step is not None:
                after_step(torch, model)
            return loss, output

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record = {"losses": [], "lrs": []}
        model.train()
        for index in range(steps):
            loss, output = run(*data[index % len(data)])
            record.setdefault("output", array(output))
            record.setdefault("grads", gradients(model))
            record["losses"].append(loss.item())
            if scheduler is not None:
                scheduler.step()
                record["lrs"].append(scheduler.get_last_lr())
        record["state"] = snapshot(model)
        return record

    return train


def assert_trains_as_torch(build, train, **tolerances):
    ours, theirs = run_in_lockstep(build, train)
    assert_same_records(ours, theirs, **tolerances)
    assert theirs["losses"][-1] < theirs["losses"][0]
    return ours, theirs


# --- BERT masked-language modelling ----------------------------------------------------------------------------

PAD, CLS, SEP, MASK, VOCAB = 0, 1, 2, 3, 24


def bert(torch, nn, F, hidden=8, layers=2, heads=2, intermediate=16, max_positions=12):  # noqa: C901 - one model
    """Hugging Face's BertForPreTraining, tiny: MLM head tied to the word embeddings, NSP head on the tanh pooler."""

    class BertEmbeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.word_embeddings = nn.Embedding(VOCAB, hidden, padding_idx=PAD)
            self.position_embeddings = nn.Embedding(max_positions, hidden)
            self.token_type_embeddings = nn.Embedding(2, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
            self.dropout = nn.Dropout(0.0)
            self.register_buffer("position_ids", torch.arange(max_positions).expand((1, -1)), persistent=False)

        def forward(self, input_ids, token_type_ids):
            position_ids = self.position_ids[:, :input_ids.size(1)]
            embeddings = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
                          + self.position_embeddings(position_ids))
            return self.dropout(self.LayerNorm(embeddings))

    class BertSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.head_size = hidden // heads
            self.query, self.key, self.value = (nn.Linear(hidden, hidden) for _ in range(3))
            self.dropout = nn.Dropout(0.0)

        def transpose_for_scores(self, x):
            new_x_shape = x.size()[:-1] + (heads, self.head_size)
            return x.view(new_x_shape).permute(0, 2, 1, 3)

        def forward(self, hidden_states, attention_mask):
            query = self.transpose_for_scores(self.query(hidden_states))
            key = self.transpose_for_scores(self.key(hidden_states))
            value = self.transpose_for_scores(self.value(hidden_states))
            scores = torch.matmul(query, key.transpose(-1, -2)) / math.sqrt(self.head_size)
            probs = self.dropout(nn.functional.softmax(scores + attention_mask, dim=-1))
            context = torch.matmul(probs, value).permute(0, 2, 1, 3).contiguous()
            return context.view(context.size()[:-2] + (hidden,))

    class AddNorm(nn.Module):  # BertSelfOutput and BertOutput
        def __init__(self, width):
            super().__init__()
            self.dense = nn.Linear(width, hidden)
            self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
            self.dropout = nn.Dropout(0.0)

        def forward(self, hidden_states, input_tensor):
            return self.LayerNorm(self.dropout(self.dense(hidden_states)) + input_tensor)

    class BertLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = BertSelfAttention()
            self.attention_output = AddNorm(hidden)
            self.intermediate = nn.Linear(hidden, intermediate)
            self.output = AddNorm(intermediate)

        def forward(self, hidden_states, attention_mask):
            attended = self.attention_output(self.attention(hidden_states, attention_mask), hidden_states)
            return self.output(F.gelu(self.intermediate(attended)), attended)

    class BertPooler(nn.Module):
        def __init__(self):
            super().__init__()
            self.dense = nn.Linear(hidden, hidden)
            self.activation = nn.Tanh()

        def forward(self, hidden_states):
            return self.activation(self.dense(hidden_states[:, 0]))

    class BertLMPredictionHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.transform = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=1e-12))
            self.decoder = nn.Linear(hidden, VOCAB, bias=False)
            self.bias = nn.Parameter(torch.zeros(VOCAB))
            self.decoder.bias = self.bias

        def forward(self, hidden_states):
            return self.decoder(self.transform(hidden_states))

    class BertForPreTraining(nn.Module):
        def __init__(self):
            super().__init__()
            self.embeddings = BertEmbeddings()
            self.layer = nn.ModuleList([BertLayer() for _ in range(layers)])
            self.pooler = BertPooler()
            self.predictions = BertLMPredictionHead()
            self.seq_relationship = nn.Linear(hidden, 2)
            self.apply(self._init_weights)
            self.predictions.decoder.weight = self.embeddings.word_embeddings.weight  # tie_weights()

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                module.weight.data.normal_(mean=0.0, std=0.02)
                if module.bias is not None:
                    module.bias.data.zero_()
            elif isinstance(module, nn.Embedding):
                module.weight.data.normal_(mean=0.0, std=0.02)
                if module.padding_idx is not None:
                    module.weight.data[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                module.bias.data.zero_()
                module.weight.data.fill_(1.0)

        def forward(self, input_ids, attention_mask, token_type_ids, labels=None, next_sentence_label=None):
            dtype = self.embeddings.word_embeddings.weight.dtype
            extended = attention_mask[:, None, None, :].to(dtype=dtype)
            extended = (1.0 - extended) * torch.finfo(dtype).min
            hidden_states = self.embeddings(input_ids, token_type_ids)
            for layer in self.layer:
                hidden_states = layer(hidden_states, extended)
            prediction_scores = self.predictions(hidden_states)
            seq_relationship_score = self.seq_relationship(self.pooler(hidden_states))
            loss_fct = nn.CrossEntropyLoss()  # ignore_index -100
            masked_lm_loss = loss_fct(prediction_scores.view(-1, VOCAB), labels.view(-1))
            next_sentence_loss = loss_fct(seq_relationship_score.view(-1, 2), next_sentence_label.view(-1))
            return masked_lm_loss + next_sentence_loss, prediction_scores

    return BertForPreTraining()


def torch_mask_tokens(torch, inputs, mlm_probability=0.15):
    """DataCollatorForLanguageModeling.torch_mask_tokens: labels -100 where not masked; of the masked, 80% [MASK],
    10% a random word, 10% kept."""
    labels = inputs.clone()
    probability_matrix = torch.full(labels.shape, mlm_probability)
    special_tokens_mask = (inputs == PAD) | (inputs == CLS) | (inputs == SEP)
    probability_matrix.masked_fill_(special_tokens_mask, value=0.0)
    masked_indices = torch.bernoulli(probability_matrix).bool()
    labels[~masked_indices] = -100
    indices_replaced = torch.bernoulli(torch.full(labels.shape, 0.8)).bool() & masked_indices
    inputs[indices_replaced] = MASK
    indices_random = torch.bernoulli(torch.full(labels.shape, 0.5)).bool() & masked_indices & ~indices_replaced
    random_words = torch.randint(VOCAB, labels.shape, dtype=torch.long)
    inputs[indices_random] = random_words[indices_random]
    return inputs, labels


def sentence_pairs(rng, count, length=10):
    """[CLS] a [SEP] b [SEP] [PAD]...: ids, attention mask, token types, and whether b follows a."""
    ids, mask, types = np.zeros((count, length), np.int64), np.zeros((count, length), np.int64), np.zeros((count, length), np.int64)
    for row in range(count):
        first, second = rng.integers(2, 4), rng.integers(2, 4)
        words = [CLS, *rng.integers(4, VOCAB, first), SEP, *rng.integers(4, VOCAB, second), SEP]
        ids[row, :len(words)], mask[row, :len(words)], types[row, first + 2:len(words)] = words, 1, 1
    return ids, mask, types, rng.integers(0, 2, count)


def test_kilns_mlm_masking_draws_the_collators_rates_and_rules():
    """kiln's ``torch.bernoulli(torch.full(...))`` draws under the collator: about 15% of the ordinary tokens masked
    (never [CLS], [SEP], [PAD]), 80% of those [MASK], ~10% another word; labels keep the masked tokens, -100 elsewhere."""
    kiln.manual_seed(0)
    ids, _, _, _ = sentence_pairs(np.random.default_rng(0), 2000)
    inputs, labels = (array(t) for t in torch_mask_tokens(kiln, kiln.tensor(ids.copy())))
    masked, ordinary = labels != -100, ids >= 4
    assert not (masked & ~ordinary).any()
    np.testing.assert_array_equal(labels[masked], ids[masked])
    np.testing.assert_array_equal(inputs[~masked], ids[~masked])
    assert abs(masked.sum() / ordinary.sum() - 0.15) < 0.015
    assert abs((inputs[masked] == MASK).mean() - 0.8) < 0.03
    replaced_by_another_word = (inputs[masked] != ids[masked]) & (inputs[masked] != MASK)
    assert abs(replaced_by_another_word.mean() - 0.1 * (VOCAB - 1) / VOCAB) < 0.025  # a draw may be the same word


def bert_batches(count=2, size=4):
    """Batches masked by kiln's collator, given to both libraries."""
    rng = np.random.default_rng(1)
    kiln.manual_seed(1)
    batches = []
    for _ in range(count):
        ids, mask, types, follows = sentence_pairs(rng, size)
        inputs, labels = torch_mask_tokens(kiln, kiln.tensor(ids))
        batches.append((array(inputs), mask, types, array(labels), follows))
    return batches


def bert_optimizer(torch, model, weight_decay=0.01):
    no_decay = ["bias", "LayerNorm.weight"]
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)], "weight_decay": weight_decay},
        {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=1e-2)


def get_linear_schedule_with_warmup(torch, optimizer, num_warmup_steps, num_training_steps, last_epoch=-1):
    def lr_lambda(current_step: int):
        if current_step < num_warmup_steps:
            return float(current_step) / float(max(1, num_warmup_steps))
        return max(0.0, float(num_training_steps - current_step) / float(max(1, num_training_steps - num_warmup_steps)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda, last_epoch)


def bert_loss(torch, nn, F, model, input_ids, attention_mask, token_type_ids, labels, next_sentence_label):
    return model(input_ids, attention_mask, token_type_ids, labels=labels, next_sentence_label=next_sentence_label)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_bert_mlm_trains_as_torch(compiled, float64_default):
    train = training(bert_batches(), bert_optimizer, bert_loss, compiled=compiled, steps=5, clip=1.0,
                     make_scheduler=lambda torch, opt: get_linear_schedule_with_warmup(torch, opt, 1, 6))
    ours, theirs = assert_trains_as_torch(bert, train)
    assert theirs["lrs"][0] == [1e-2, 1e-2] and theirs["lrs"][-1][0] < 1e-2


# --- CLIP contrastive ------------------------------------------------------------------------------------------


def clip(torch, nn, F, embed_dim=6, width=8, vocab=16, context=5):
    """CLIP's two towers, tiny: a conv image encoder and a transformer text encoder read at the end-of-text token."""

    class CLIP(nn.Module):
        def __init__(self):
            super().__init__()
            self.visual = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.GELU(), nn.Flatten(),
                                        nn.Linear(4 * 4 * 4, width), nn.LayerNorm(width))
            self.visual_proj = nn.Parameter(torch.randn(width, embed_dim) * width ** -0.5)
            self.token_embedding = nn.Embedding(vocab, width)
            self.positional_embedding = nn.Parameter(torch.empty(context, width))
            nn.init.normal_(self.positional_embedding, std=0.01)
            layer = nn.TransformerEncoderLayer(width, 2, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
            self.transformer = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
            self.ln_final = nn.LayerNorm(width)
            self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
            nn.init.normal_(self.text_projection, std=width ** -0.5)
            self.logit_scale = nn.Parameter(torch.ones([]) * np.log(1 / 0.07))
            self.register_buffer("attn_mask", torch.empty(context, context).fill_(float("-inf")).triu_(1), persistent=False)

        def encode_image(self, image):
            return self.visual(image) @ self.visual_proj

        def encode_text(self, text):
            x = self.token_embedding(text) + self.positional_embedding
            x = self.ln_final(self.transformer(x, mask=self.attn_mask))
            # features from the eot embedding (the highest number in each sequence)
            return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.text_projection

        def forward(self, image, text):
            image_features = self.encode_image(image)
            image_features = image_features / image_features.norm(dim=1, keepdim=True)
            text_features = F.normalize(self.encode_text(text), dim=-1)
            logit_scale = self.logit_scale.exp()
            logits_per_image = logit_scale * image_features @ text_features.t()
            return logits_per_image, logits_per_image.t()

    return CLIP()


def clip_loss(torch, nn, F, model, image, text):
    logits_per_image, logits_per_text = model(image, text)
    labels = torch.arange(image.shape[0], device=image.device, dtype=torch.long)
    loss = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
    return loss, logits_per_image


def clamp_logit_scale(torch, model):
    with torch.no_grad():
        model.logit_scale.clamp_(0, 4.6052)  # ln(100): logits scaled by at most 100


def clip_optimizer(torch, model):
    others = [p for name, p in model.named_parameters() if name != "logit_scale"]
    return torch.optim.AdamW([{"params": others}, {"params": [model.logit_scale], "lr": 1.0, "weight_decay": 0.0}],
                             lr=1e-2, weight_decay=0.1)


def clip_batches(count=2, size=4, context=5, vocab=16):
    rng = np.random.default_rng(2)
    batches = []
    for _ in range(count):
        text = rng.integers(1, vocab - 1, (size, context))
        text[np.arange(size), rng.integers(2, context, size)] = vocab - 1  # the end-of-text token, the largest id
        batches.append((rng.standard_normal((size, 3, 8, 8)), text))
    return batches


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_clip_contrastive_trains_as_torch_and_clamps_its_logit_scale(compiled, float64_default):
    train = training(clip_batches(), clip_optimizer, clip_loss, compiled=compiled, steps=4,
                     after_step=clamp_logit_scale)
    ours, theirs = run_in_lockstep(clip, train)
    width = 8
    our_bias, their_bias = (record["state"].pop("transformer.layers.0.self_attn.in_proj_bias") for record in (ours, theirs))
    np.testing.assert_allclose(our_bias[width:2 * width], their_bias[width:2 * width], rtol=0, atol=1e-9)  # the key's
    our_bias[width:2 * width] = their_bias[width:2 * width]
    np.testing.assert_allclose(our_bias, their_bias, rtol=1e-10, atol=1e-12)
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]
    assert theirs["state"]["logit_scale"] == 0.0  # the clamp bit: random pairs push the scale down, by ~lr a step


# --- WaveNet ---------------------------------------------------------------------------------------------------

QUANTIZE = 16


def mu_law_encode(torch, audio, quantization_channels=QUANTIZE):
    mu = quantization_channels - 1
    safe_audio_abs = torch.clamp(audio.abs(), max=1.0)
    magnitude = torch.log1p(mu * safe_audio_abs) / math.log1p(mu)
    signal = torch.sign(audio) * magnitude
    return ((signal + 1) / 2 * mu + 0.5).to(torch.int64)


def wavenet(torch, nn, F, residual=6, skip=8, dilations=(1, 2, 4, 8), deprecated_weight_norm=False):
    weight_norm = torch.nn.utils.weight_norm if deprecated_weight_norm else torch.nn.utils.parametrizations.weight_norm

    class CausalConv1d(nn.Conv1d):
        def __init__(self, in_channels, out_channels, kernel_size, dilation=1):
            super().__init__(in_channels, out_channels, kernel_size, dilation=dilation)
            self.left_padding = (kernel_size - 1) * dilation

        def forward(self, x):
            return super().forward(F.pad(x, (self.left_padding, 0)))

    class ResidualBlock(nn.Module):
        def __init__(self, dilation):
            super().__init__()
            self.dilated = weight_norm(CausalConv1d(residual, 2 * residual, 2, dilation=dilation))
            self.residual = weight_norm(nn.Conv1d(residual, residual, 1))
            self.skip = nn.Conv1d(residual, skip, 1)

        def forward(self, x):
            filter, gate = self.dilated(x).chunk(2, dim=1)
            z = torch.tanh(filter) * torch.sigmoid(gate)
            return x + self.residual(z), self.skip(z)

    class WaveNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.causal = CausalConv1d(QUANTIZE, residual, 2)
            self.blocks = nn.ModuleList(ResidualBlock(d) for d in dilations)
            self.head = nn.Sequential(nn.ReLU(), nn.Conv1d(skip, skip, 1), nn.ReLU(), nn.Conv1d(skip, QUANTIZE, 1))

        def forward(self, x):  # x: (N, L) quantized samples
            h = self.causal(F.one_hot(x, QUANTIZE).to(self.causal.weight.dtype).transpose(1, 2))
            skips = 0
            for block in self.blocks:
                h, s = block(h)
                skips = skips + s
            return self.head(skips)  # (N, QUANTIZE, L)

    return WaveNet()


def wavenet_loss(torch, nn, F, model, audio):
    quantized = mu_law_encode(torch, audio)
    logits = model(quantized[:, :-1])
    return F.cross_entropy(logits, quantized[:, 1:]), logits


def wavenet_batches(count=2, size=3, length=24):
    rng = np.random.default_rng(3)
    time = np.arange(length + 1) / 6.0
    return [(np.sin(time[None] * rng.uniform(0.5, 2.0, (size, 1))) * 0.8 + 0.05 * rng.standard_normal((size, length + 1)),)
            for _ in range(count)]


@pytest.mark.filterwarnings("ignore:.*torch.nn.utils.weight_norm. is deprecated")
@pytest.mark.parametrize("deprecated", [False, True], ids=["parametrizations", "deprecated-weight_norm"])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_wavenet_with_weight_norm_trains_as_torch(compiled, deprecated, float64_default):
    """``parametrizations.weight_norm`` (original0/original1) and the deprecated ``nn.utils.weight_norm``
    (weight_g/weight_v, a forward pre-hook), which many WaveNet ports still use."""
    train = training(wavenet_batches(), lambda torch, model: torch.optim.Adam(model.parameters(), lr=1e-2),
                     wavenet_loss, compiled=compiled, steps=4)
    ours, theirs = assert_trains_as_torch(lambda *lib: wavenet(*lib, deprecated_weight_norm=deprecated), train)
    magnitude = "blocks.0.dilated.weight_g" if deprecated else "blocks.0.dilated.parametrizations.weight.original0"
    assert magnitude in theirs["state"]
