"""Porting probe: FT-Transformer (Gorishniy et al. 2021) as rtdl 0.0.13 writes it, written once (``torch`` is
``torch`` or ``kiln``) and run in both from kiln's initial weights: the first forward, the first gradients, the losses
and the state after a few AdamW steps agree to 1e-10 in float64, eagerly and with the whole step one
``kiln.compile(fullgraph=True)`` graph against torch's eager loop; float32 (how rtdl trains) at float32's level.

What is in it: the numerical feature tokenizer (``self.weight[None] * x[..., None] + self.bias[None]``, uniform init
of ``1 / sqrt(d)``), the categorical one (``nn.Embedding`` of ``x + self.category_offsets[None]``, the offsets a
non-persistent buffer ``torch.tensor([0] + cardinalities[:-1]).cumsum(0)``), ``torch.cat`` of both token sets, the
CLS token appended by ``torch.cat([x, self.weight.view(1, -1).expand(len(x), 1, -1)], dim=1)``, PreNorm blocks in
``nn.ModuleDict``s (no attention norm in the first, ``first_prenormalization=False``), rtdl's multi-head attention
(``W_q/W_k/W_v`` xavier with gain ``1 / sqrt(2)``, heads by ``reshape``/``transpose``/``reshape`` to
``batch * heads``, ``q @ k.transpose(1, 2) / math.sqrt(d_head)``, softmax, attention dropout), the last layer
attending from the CLS token only (``x[:, [-1]]``, a list index), ReGLU (``a, b = x.chunk(2, dim=-1); a * F.relu(b)``)
with ``d_hidden = int(d_token * 4 / 3)``, residual dropout, the head (``x[:, -1]``, LayerNorm, ReLU, Linear), AdamW
with rtdl's ``optimization_param_groups`` (no weight decay for ``feature_tokenizer``, ``normalization`` and
``.bias`` names), ``BCEWithLogitsLoss`` on a float target (``squeeze(-1)``) and ``F.cross_entropy`` on class ids.

Dropout masks: both libraries' ``F.dropout`` are replaced by one that multiplies by the next mask of a list the step
is given (0 or ``1 / (1 - p)``, drawn by NumPy), so both drop the same units, eagerly and in kiln's compiled step
(where the masks are the compiled function's inputs).

What broke: a categorical code of -1 (pandas' code for a missing category) in the first feature read the embedding
table's last row in kiln, silently, where torch raises IndexError "index out of range in self"; F.embedding,
embedding_bag and index_select now check an eager index (``frontend/index_range_checks.py``,
``tests/frontend/test_index_range_vs_torch.py``; a traced index is still not checked at run time). ``W_k``'s bias is
compared at 1e-10 absolute (``KEY_BIAS``: softmax cancels it). Everything else agreed to 1e-10 as first written.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries, require_torch

N_NUM, CARDINALITIES, D_TOKEN, N_BLOCKS, N_HEADS, BATCH = 3, [3, 5, 2], 8, 2, 2, 6
ATTENTION_DROPOUT, FFN_DROPOUT, RESIDUAL_DROPOUT = 0.2, 0.1, 0.1


def ft_transformer(torch, nn, F, d_out=1, initialization="uniform"):
    """rtdl's FTTransformer.make_baseline-like configuration, small."""
    Tensor = torch.Tensor

    def _apply_init(x, d):
        d_sqrt_inv = 1 / math.sqrt(d)
        if initialization == "uniform":
            # used in the paper "Revisiting Deep Learning Models for Tabular Data"
            nn.init.uniform_(x, a=-d_sqrt_inv, b=d_sqrt_inv)
        else:
            nn.init.normal_(x, std=d_sqrt_inv)

    class NumericalFeatureTokenizer(nn.Module):
        def __init__(self, n_features, d_token, bias):
            super().__init__()
            self.weight = nn.Parameter(Tensor(n_features, d_token))
            self.bias = nn.Parameter(Tensor(n_features, d_token)) if bias else None
            for parameter in [self.weight, self.bias]:
                if parameter is not None:
                    _apply_init(parameter, d_token)

        def forward(self, x):
            x = self.weight[None] * x[..., None]
            if self.bias is not None:
                x = x + self.bias[None]
            return x

    class CategoricalFeatureTokenizer(nn.Module):
        def __init__(self, cardinalities, d_token, bias):
            super().__init__()
            category_offsets = torch.tensor([0] + cardinalities[:-1]).cumsum(0)
            self.register_buffer("category_offsets", category_offsets, persistent=False)
            self.embeddings = nn.Embedding(sum(cardinalities), d_token)
            self.bias = nn.Parameter(Tensor(len(cardinalities), d_token)) if bias else None
            for parameter in [self.embeddings.weight, self.bias]:
                if parameter is not None:
                    _apply_init(parameter, d_token)

        def forward(self, x):
            x = self.embeddings(x + self.category_offsets[None])
            if self.bias is not None:
                x = x + self.bias[None]
            return x

    class FeatureTokenizer(nn.Module):
        def __init__(self, n_num_features, cat_cardinalities, d_token):
            super().__init__()
            self.num_tokenizer = NumericalFeatureTokenizer(n_num_features, d_token, True) if n_num_features else None
            self.cat_tokenizer = (CategoricalFeatureTokenizer(cat_cardinalities, d_token, True)
                                  if cat_cardinalities else None)

        def forward(self, x_num, x_cat):
            x = []
            if self.num_tokenizer is not None:
                x.append(self.num_tokenizer(x_num))
            if self.cat_tokenizer is not None:
                x.append(self.cat_tokenizer(x_cat))
            return x[0] if len(x) == 1 else torch.cat(x, dim=1)

    class CLSToken(nn.Module):
        def __init__(self, d_token):
            super().__init__()
            self.weight = nn.Parameter(Tensor(d_token))
            _apply_init(self.weight, d_token)

        def expand(self, *leading_dimensions):
            if not leading_dimensions:
                return self.weight
            new_dims = (1,) * (len(leading_dimensions) - 1)
            return self.weight.view(*new_dims, -1).expand(*leading_dimensions, -1)

        def forward(self, x):
            return torch.cat([x, self.expand(len(x), 1)], dim=1)

    def reglu(x):
        assert x.shape[-1] % 2 == 0
        a, b = x.chunk(2, dim=-1)
        return a * F.relu(b)

    class ReGLU(nn.Module):
        def forward(self, x):
            return reglu(x)

    class MultiheadAttention(nn.Module):
        def __init__(self, *, d_token, n_heads, dropout, bias):
            super().__init__()
            if n_heads > 1:
                assert d_token % n_heads == 0, "d_token must be a multiple of n_heads"
            self.W_q = nn.Linear(d_token, d_token, bias)
            self.W_k = nn.Linear(d_token, d_token, bias)
            self.W_v = nn.Linear(d_token, d_token, bias)
            self.W_out = nn.Linear(d_token, d_token, bias) if n_heads > 1 else None
            self.n_heads = n_heads
            self.dropout = nn.Dropout(dropout) if dropout else None
            for m in [self.W_q, self.W_k, self.W_v]:
                # the "xavier" initialization; "kaiming" is PyTorch's default
                if m is not self.W_v or self.W_out is not None:
                    # gain is needed since W_qkv is represented with 3 separate layers
                    nn.init.xavier_uniform_(m.weight, gain=1 / math.sqrt(2))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            if self.W_out is not None:
                nn.init.zeros_(self.W_out.bias)

        def _reshape(self, x):
            batch_size, n_tokens, d = x.shape
            d_head = d // self.n_heads
            return (x.reshape(batch_size, n_tokens, self.n_heads, d_head).transpose(1, 2)
                    .reshape(batch_size * self.n_heads, n_tokens, d_head))

        def forward(self, x_q, x_kv):
            q, k, v = self.W_q(x_q), self.W_k(x_kv), self.W_v(x_kv)
            for tensor in [q, k, v]:
                assert tensor.shape[-1] % self.n_heads == 0
            batch_size = len(q)
            d_head_key = k.shape[-1] // self.n_heads
            d_head_value = v.shape[-1] // self.n_heads
            n_q_tokens = q.shape[1]
            q = self._reshape(q)
            k = self._reshape(k)
            attention_logits = q @ k.transpose(1, 2) / math.sqrt(d_head_key)
            attention_probs = F.softmax(attention_logits, dim=-1)
            if self.dropout is not None:
                attention_probs = self.dropout(attention_probs)
            x = attention_probs @ self._reshape(v)
            x = (x.reshape(batch_size, self.n_heads, n_q_tokens, d_head_value).transpose(1, 2)
                 .reshape(batch_size, n_q_tokens, self.n_heads * d_head_value))
            if self.W_out is not None:
                x = self.W_out(x)
            return x, {"attention_logits": attention_logits, "attention_probs": attention_probs}

    class FFN(nn.Module):
        def __init__(self, *, d_token, d_hidden, bias_first, bias_second, dropout, activation):
            super().__init__()
            self.linear_first = nn.Linear(d_token, d_hidden * (2 if activation is ReGLU else 1), bias_first)
            self.activation = activation()
            self.dropout = nn.Dropout(dropout)
            self.linear_second = nn.Linear(d_hidden, d_token, bias_second)

        def forward(self, x):
            x = self.linear_first(x)
            x = self.activation(x)
            x = self.dropout(x)
            return self.linear_second(x)

    class Head(nn.Module):
        def __init__(self, *, d_in, bias, activation, normalization, d_out):
            super().__init__()
            self.normalization = normalization(d_in)
            self.activation = activation()
            self.linear = nn.Linear(d_in, d_out, bias)

        def forward(self, x):
            x = x[:, -1]
            x = self.normalization(x)
            x = self.activation(x)
            return self.linear(x)

    class Transformer(nn.Module):
        def __init__(self, *, d_token, n_blocks, attention_n_heads, attention_dropout, ffn_d_hidden, ffn_dropout,
                     residual_dropout, prenormalization, first_prenormalization, last_layer_query_idx, d_out):
            super().__init__()
            self.blocks = nn.ModuleList([])
            for layer_idx in range(n_blocks):
                layer = nn.ModuleDict({
                    "attention": MultiheadAttention(d_token=d_token, n_heads=attention_n_heads,
                                                    dropout=attention_dropout, bias=True),
                    "ffn": FFN(d_token=d_token, d_hidden=ffn_d_hidden, bias_first=True, bias_second=True,
                               dropout=ffn_dropout, activation=ReGLU),
                    "attention_residual_dropout": nn.Dropout(residual_dropout),
                    "ffn_residual_dropout": nn.Dropout(residual_dropout),
                    "output": nn.Identity(),  # for hooks-based introspection
                })
                if layer_idx or not prenormalization or first_prenormalization:
                    layer["attention_normalization"] = nn.LayerNorm(d_token)
                layer["ffn_normalization"] = nn.LayerNorm(d_token)
                self.blocks.append(layer)
            self.head = Head(d_in=d_token, d_out=d_out, bias=True, activation=nn.ReLU, normalization=nn.LayerNorm)
            self.prenormalization = prenormalization
            self.last_layer_query_idx = last_layer_query_idx

        def _start_residual(self, layer, stage, x):
            x_residual = x
            if self.prenormalization:
                norm_key = f"{stage}_normalization"
                if norm_key in layer:
                    x_residual = layer[norm_key](x_residual)
            return x_residual

        def _end_residual(self, layer, stage, x, x_residual):
            x_residual = layer[f"{stage}_residual_dropout"](x_residual)
            x = x + x_residual
            if not self.prenormalization:
                x = layer[f"{stage}_normalization"](x)
            return x

        def forward(self, x):
            assert x.ndim == 3, "The input must have 3 dimensions: (n_objects, n_tokens, d_token)"
            for layer_idx, layer in enumerate(self.blocks):
                query_idx = self.last_layer_query_idx if layer_idx + 1 == len(self.blocks) else None
                x_residual = self._start_residual(layer, "attention", x)
                x_residual, _ = layer["attention"](
                    x_residual if query_idx is None else x_residual[:, query_idx], x_residual)
                if query_idx is not None:
                    x = x[:, query_idx]
                x = self._end_residual(layer, "attention", x, x_residual)
                x_residual = self._start_residual(layer, "ffn", x)
                x_residual = layer["ffn"](x_residual)
                x = self._end_residual(layer, "ffn", x, x_residual)
                x = layer["output"](x)
            return self.head(x)

    class FTTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.feature_tokenizer = FeatureTokenizer(N_NUM, CARDINALITIES, D_TOKEN)
            self.cls_token = CLSToken(D_TOKEN)
            self.transformer = Transformer(
                d_token=D_TOKEN, n_blocks=N_BLOCKS, attention_n_heads=N_HEADS, attention_dropout=ATTENTION_DROPOUT,
                ffn_d_hidden=int(D_TOKEN * 4 / 3), ffn_dropout=FFN_DROPOUT, residual_dropout=RESIDUAL_DROPOUT,
                prenormalization=True, first_prenormalization=False, last_layer_query_idx=[-1], d_out=d_out)

        def optimization_param_groups(self):
            no_wd_names = ["feature_tokenizer", "normalization", ".bias"]
            assert isinstance(getattr(self, no_wd_names[0], None), FeatureTokenizer)
            assert (sum(1 for name, _ in self.named_modules() if no_wd_names[1] in name)
                    == len(self.transformer.blocks) * 2
                    - int("attention_normalization" not in self.transformer.blocks[0]) + 1)

            def needs_wd(name):
                return all(x not in name for x in no_wd_names)

            return [
                {"params": [v for k, v in self.named_parameters() if needs_wd(k)]},
                {"params": [v for k, v in self.named_parameters() if not needs_wd(k)], "weight_decay": 0.0},
            ]

        def make_default_optimizer(self, lr=1e-4):
            return torch.optim.AdamW(self.optimization_param_groups(), lr=lr, weight_decay=1e-5)

        def forward(self, x_num, x_cat):
            x = self.feature_tokenizer(x_num, x_cat)
            x = self.cls_token(x)
            return self.transformer(x)

    return FTTransformer()


# --- dropout masks fed to both libraries ------------------------------------------------------------------------------


class MaskFeed:
    """Each ``F.dropout`` call in training multiplies by the next mask of ``self.masks`` (set per step), in either
    library; ``record`` instead notes the calls' shapes and probabilities (a first forward in torch)."""

    def __init__(self):
        self.masks, self.at, self.calls = None, 0, []

    def load(self, masks):
        self.masks, self.at = list(masks), 0

    def dropout(self, input, p=0.5, training=True, inplace=False):
        if not training or p == 0:
            return input
        if self.masks is None:
            self.calls.append((tuple(input.shape), p))
            return input
        self.at += 1
        return input * self.masks[self.at - 1]

    def draw(self, rng, dtype=np.float64):
        """One step's masks for the recorded calls: 0 or ``1 / (1 - p)``."""
        return [((rng.random(shape) >= p) / (1 - p)).astype(dtype) for shape, p in self.calls]


@pytest.fixture
def mask_feed(monkeypatch):
    torch = require_torch()
    import kiln.frontend.functional as kiln_functional

    feed = MaskFeed()
    monkeypatch.setattr(kiln_functional, "dropout", feed.dropout)
    monkeypatch.setattr(torch.nn.functional, "dropout", feed.dropout)
    torch.manual_seed(0)
    model = ft_transformer(torch, torch.nn, torch.nn.functional)
    x_num, x_cat, _ = _data(np.float32)
    model.float()(torch.tensor(x_num), torch.tensor(x_cat))
    assert len(feed.calls) == 4 * N_BLOCKS  # attention probabilities, FFN hidden, two residuals
    return feed


def _data(dtype=np.float64, n_classes=None):
    rng = np.random.default_rng(0)
    x_num = rng.standard_normal((BATCH, N_NUM)).astype(dtype)
    x_cat = np.stack([rng.integers(0, c, BATCH) for c in CARDINALITIES], axis=1)
    y = rng.integers(0, n_classes, BATCH) if n_classes else (rng.random(BATCH) < 0.5).astype(dtype)
    return x_num, x_cat, y


def train_ft_transformer(feed, steps=3, compiled=False, n_classes=None, dtype=np.float64):
    """rtdl's example loop: ``make_default_optimizer`` (AdamW, the param groups), ``loss_fn(model(x_num,
    x_cat).squeeze(1), y)`` with BCE-with-logits, or cross-entropy on class ids with ``n_classes``."""
    x_num, x_cat, y = _data(dtype, n_classes)
    rng = np.random.default_rng(1)
    step_masks = [feed.draw(rng, dtype) for _ in range(steps)]

    def train(torch, nn, F, model):
        optimizer = model.make_default_optimizer(lr=1e-2)
        loss_fn = F.cross_entropy if n_classes else F.binary_cross_entropy_with_logits
        record = {"losses": []}

        def apply_model(x_num, x_cat):
            return model(x_num, x_cat)

        def train_step(x_num, x_cat, y, *masks):
            feed.load(masks)
            model.train()
            optimizer.zero_grad()
            output = apply_model(x_num, x_cat)
            loss = loss_fn(output if n_classes else output.squeeze(1), y)
            loss.backward()
            if not compiled:
                record.setdefault("grads", gradients(model))
            optimizer.step()
            return loss

        run = kiln.compile(train_step, fullgraph=True) if compiled and torch is kiln else train_step
        with torch.no_grad():
            record["first_output"] = array(model.eval()(torch.tensor(x_num), torch.tensor(x_cat)))
        for masks in step_masks:
            loss = run(torch.tensor(x_num), torch.tensor(x_cat), torch.tensor(y), *map(torch.tensor, masks))
            record["losses"].append(loss.item())
        assert feed.at == len(feed.calls), "each recorded dropout call took its fed mask"
        record["state"] = snapshot(model)
        with torch.no_grad():
            record["eval_output"] = array(model.eval()(torch.tensor(x_num), torch.tensor(x_cat)))
        return record

    return train


# W_k's bias adds q . b_k to every logit of a query alike, so softmax cancels it: its gradient is rounding noise
# (~1e-18 in float64, checked), which AdamW (eps 1e-8) turns into steps of ~1e-12, differently in each library.
KEY_BIAS = {"W_k.bias": dict(rtol=0, atol=1e-10)}


def _ft_binary(torch, nn, F):
    return ft_transformer(torch, nn, F)


def _ft_multiclass(torch, nn, F):
    return ft_transformer(torch, nn, F, d_out=4)


@pytest.mark.parametrize("task, compiled", [("binary", False), ("binary", True), ("multiclass", True)],
                         ids=["binary eager", "binary compiled step", "multiclass compiled step"])
def test_ft_transformer_trains_as_torch(mask_feed, float64_default, task, compiled):
    build, n_classes = (_ft_binary, None) if task == "binary" else (_ft_multiclass, 4)
    ours, theirs = run_in_lockstep(build, train_ft_transformer(mask_feed, compiled=compiled, n_classes=n_classes))
    assert_same_records(ours, theirs, looser=KEY_BIAS)
    for record in (ours, theirs) if not compiled else ():
        assert all(np.abs(record["grads"][name]).max() < 1e-14 for name in record["grads"] if "W_k.bias" in name)
    assert ours["first_output"].dtype == theirs["first_output"].dtype == np.float64
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_ft_transformer_float32_compiled_step_as_torch(mask_feed):
    """rtdl trains in float32: the compiled step vs torch's eager loop, cross-entropy, at float32's level."""
    train = train_ft_transformer(mask_feed, compiled=True, n_classes=4, dtype=np.float32)
    ours, theirs = run_in_lockstep(_ft_multiclass, train)
    assert ours["eval_output"].dtype == theirs["eval_output"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6, looser={"W_k.bias": dict(rtol=0, atol=1e-2)})


@pytest.mark.parametrize("case", ["missing category (-1)", "unseen category", "one numerical feature too many"])
def test_bad_tabular_input_is_refused_as_torch(float64_default, case):
    """A categorical code of -1 (pandas' code for a missing value) or past its cardinality is torch's IndexError
    (kiln read the last row of the table for -1, silently); a batch with an extra numerical column is a RuntimeError in
    both (the tokenizer's broadcast)."""
    x_num, x_cat, _ = _data()
    if case == "missing category (-1)":
        x_cat[2, 0] = -1  # in a later feature, -1 + its offset is the previous feature's last row, in both
    elif case == "unseen category":
        x_cat[3, 2] = CARDINALITIES[2] + 3
    else:
        x_num = np.concatenate([x_num, x_num[:, :1]], axis=1)
    expected = RuntimeError if case == "one numerical feature too many" else IndexError
    for name in ("torch", "kiln"):
        torch, nn, F = libraries(name)
        model = ft_transformer(torch, nn, F).eval()
        with pytest.raises(expected) as raised:
            model(torch.tensor(x_num), torch.tensor(x_cat))
        assert expected is RuntimeError or "index out of range in self" in str(raised.value)


def train_over_ragged_batches(torch, nn, F, model):
    """The compiled step over batches of 6, 4, 1 and 6 rows (a DataLoader's last batch is short; one row makes the
    CLS ``expand(len(x), 1, -1)`` and the list index ``x[:, [-1]]`` size 1), dropout off, then ``kiln.compile(model)``
    predictions in eval mode for two batch sizes, as rtdl's ``evaluate`` under ``torch.no_grad()``."""
    model.eval()
    optimizer = model.make_default_optimizer(lr=1e-2)
    x_num, x_cat, _ = _data()
    y = np.array([0, 1, 2, 3, 1, 2])

    def step(x_num, x_cat, y):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_num, x_cat), y)
        loss.backward()
        optimizer.step()
        return loss

    run = kiln.compile(step, fullgraph=True) if torch is kiln else step
    rows = [slice(0, 6), slice(0, 4), slice(2, 3), slice(0, 6)]
    losses = [run(torch.tensor(x_num[r]), torch.tensor(x_cat[r]), torch.tensor(y[r])).item() for r in rows]
    predict = kiln.compile(model, fullgraph=True) if torch is kiln else model
    with torch.no_grad():
        predictions = {f"{r.stop - r.start} rows": array(predict(torch.tensor(x_num[r]), torch.tensor(x_cat[r])))
                       for r in rows[:2]}
    return {"losses": losses, "state": snapshot(model), "predictions": predictions}


def test_ft_transformer_compiled_over_ragged_batches_as_torch(float64_default):
    ours, theirs = run_in_lockstep(_ft_multiclass, train_over_ragged_batches)
    assert_same_records(ours, theirs, looser=KEY_BIAS)
    assert [p.shape for p in ours["predictions"].values()] == [(6, 4), (4, 4)]
