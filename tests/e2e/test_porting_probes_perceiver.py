"""Porting probe: a Perceiver as lucidrains' ``perceiver-pytorch`` writes it, without einops (its ``rearrange``/
``repeat`` as ``view``/``permute``/``reshape``/``expand``/``repeat``), run once in each library (``torch`` is ``torch``
or ``kiln``) from kiln's initial weights.

- Learned latents ``nn.Parameter(torch.randn(num_latents, latent_dim))`` broadcast to the batch
  (``self.latents.unsqueeze(0).expand(b, -1, -1)``, or ``.repeat(b, 1, 1)``).
- Fourier position encodings: ``torch.linspace(-1., 1., steps=size)`` per axis, ``torch.meshgrid(*axis_pos,
  indexing='ij')`` stacked, ``fourier_encode`` (``linspace`` of scales indexed by ``[(*((None,) * k), Ellipsis)]``,
  ``x * scales * pi``, ``cat([sin, cos])``, the raw position appended), flattened and expanded over the batch, joined to
  the data by ``cat`` on the channel axis.
- Cross-attention from the latents to the (flattened) input, with ``PreNorm`` normalising the context through
  ``kwargs.update(context=...)``, an optional padding mask (``sim.masked_fill_(~mask, -torch.finfo(sim.dtype).max)``),
  ``torch.einsum('b i d, b j d -> b i j', ...)`` with spaces; GEGLU feed-forward (``x.chunk(2, dim=-1)``,
  ``x * F.gelu(gates)``); latent self-attention blocks; weight sharing across depth by ``cache_fn`` (a ``nonlocal``
  dict memo under ``functools.wraps``): the same modules listed in several ``ModuleList``s.
- Mean over the latents, LayerNorm, a linear head; cross entropy; AdamW.

Checked against torch 2.13 in float64 to 1e-10 (first logits, first gradients, losses, state after 3 steps), with and
without the padding mask and weight tying, eagerly and with the whole step in one ``kiln.compile(fullgraph=True)``
graph; float32 (how Perceivers train) at float32's level (rtol 1e-5, atol 2e-6; the largest difference, 6e-7, is in
the embeddings).

What broke: nothing; every variant agreed as first written.
"""

from __future__ import annotations

from functools import wraps
from math import pi

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import (array, assert_same_records, compiled_module_training, gradients, run_in_lockstep,
                                snapshot)
from oracles import require_torch

BATCH, HEIGHT, WIDTH, CHANNELS, CLASSES = 2, 4, 3, 3, 5


def perceiver(torch, nn, F, weight_tie_layers=True, latents_by="expand", depth=2):
    def exists(val):
        return val is not None

    def default(val, d):
        return val if exists(val) else d

    def cache_fn(f):
        cache = dict()

        @wraps(f)
        def cached_fn(*args, _cache=True, key=None, **kwargs):
            if not _cache:
                return f(*args, **kwargs)
            nonlocal cache
            if key in cache:
                return cache[key]
            result = f(*args, **kwargs)
            cache[key] = result
            return result

        return cached_fn

    def fourier_encode(x, max_freq, num_bands=4):
        x = x.unsqueeze(-1)
        device, dtype, orig_x = x.device, x.dtype, x
        scales = torch.linspace(1., max_freq / 2, num_bands, device=device, dtype=dtype)
        scales = scales[(*((None,) * (len(x.shape) - 1)), Ellipsis)]
        x = x * scales * pi
        x = torch.cat([x.sin(), x.cos()], dim=-1)
        x = torch.cat((x, orig_x), dim=-1)
        return x

    class PreNorm(nn.Module):
        def __init__(self, dim, fn, context_dim=None):
            super().__init__()
            self.fn = fn
            self.norm = nn.LayerNorm(dim)
            self.norm_context = nn.LayerNorm(context_dim) if exists(context_dim) else None

        def forward(self, x, **kwargs):
            x = self.norm(x)
            if exists(self.norm_context):
                context = kwargs["context"]
                normed_context = self.norm_context(context)
                kwargs.update(context=normed_context)
            return self.fn(x, **kwargs)

    class GEGLU(nn.Module):
        def forward(self, x):
            x, gates = x.chunk(2, dim=-1)
            return x * F.gelu(gates)

    class FeedForward(nn.Module):
        def __init__(self, dim, mult=4, dropout=0.):
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(dim, dim * mult * 2),
                GEGLU(),
                nn.Linear(dim * mult, dim),
                nn.Dropout(dropout)
            )

        def forward(self, x):
            return self.net(x)

    class Attention(nn.Module):
        def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64, dropout=0.):
            super().__init__()
            inner_dim = dim_head * heads
            context_dim = default(context_dim, query_dim)
            self.scale = dim_head ** -0.5
            self.heads = heads
            self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
            self.to_kv = nn.Linear(context_dim, inner_dim * 2, bias=False)
            self.dropout = nn.Dropout(dropout)
            self.to_out = nn.Linear(inner_dim, query_dim)

        def forward(self, x, context=None, mask=None):
            h = self.heads
            q = self.to_q(x)
            context = default(context, x)
            k, v = self.to_kv(context).chunk(2, dim=-1)
            # rearrange(t, 'b n (h d) -> (b h) n d', h=h)
            q, k, v = map(lambda t: t.reshape(t.shape[0], t.shape[1], h, -1).permute(0, 2, 1, 3)
                          .reshape(t.shape[0] * h, t.shape[1], -1), (q, k, v))
            sim = torch.einsum("b i d, b j d -> b i j", q, k) * self.scale
            if exists(mask):
                mask = mask.reshape(mask.shape[0], -1)  # rearrange(mask, 'b ... -> b (...)')
                max_neg_value = -torch.finfo(sim.dtype).max
                mask = mask[:, None, :].repeat_interleave(h, dim=0)  # repeat(mask, 'b j -> (b h) () j', h=h)
                sim.masked_fill_(~mask, max_neg_value)
            attn = sim.softmax(dim=-1)
            attn = self.dropout(attn)
            out = torch.einsum("b i j, b j d -> b i d", attn, v)
            out = out.reshape(-1, h, out.shape[1], out.shape[2]).transpose(1, 2)  # '(b h) n d -> b n (h d)'
            out = out.reshape(out.shape[0], out.shape[1], -1)
            return self.to_out(out)

    class MeanOverLatents(nn.Module):
        def forward(self, x):  # Reduce('b n d -> b d', 'mean')
            return x.mean(dim=-2)

    class Perceiver(nn.Module):
        def __init__(self, *, num_freq_bands, depth, max_freq, input_channels=3, input_axis=2, num_latents=512,
                     latent_dim=512, cross_heads=1, latent_heads=8, cross_dim_head=64, latent_dim_head=64,
                     num_classes=1000, attn_dropout=0., ff_dropout=0., weight_tie_layers=False,
                     fourier_encode_data=True, self_per_cross_attn=1, final_classifier_head=True):
            super().__init__()
            self.input_axis = input_axis
            self.max_freq = max_freq
            self.num_freq_bands = num_freq_bands
            self.fourier_encode_data = fourier_encode_data
            fourier_channels = (input_axis * ((num_freq_bands * 2) + 1)) if fourier_encode_data else 0
            input_dim = fourier_channels + input_channels
            self.latents = nn.Parameter(torch.randn(num_latents, latent_dim))

            get_cross_attn = lambda: PreNorm(latent_dim, Attention(latent_dim, input_dim, heads=cross_heads,  # noqa: E731
                                                                   dim_head=cross_dim_head, dropout=attn_dropout),
                                             context_dim=input_dim)
            get_cross_ff = lambda: PreNorm(latent_dim, FeedForward(latent_dim, dropout=ff_dropout))  # noqa: E731
            get_latent_attn = lambda: PreNorm(latent_dim, Attention(latent_dim, heads=latent_heads,  # noqa: E731
                                                                    dim_head=latent_dim_head, dropout=attn_dropout))
            get_latent_ff = lambda: PreNorm(latent_dim, FeedForward(latent_dim, dropout=ff_dropout))  # noqa: E731
            get_cross_attn, get_cross_ff, get_latent_attn, get_latent_ff = map(
                cache_fn, (get_cross_attn, get_cross_ff, get_latent_attn, get_latent_ff))

            self.layers = nn.ModuleList([])
            for i in range(depth):
                should_cache = i > 0 and weight_tie_layers
                cache_args = {"_cache": should_cache}
                self_attns = nn.ModuleList([])
                for block_ind in range(self_per_cross_attn):
                    self_attns.append(nn.ModuleList([
                        get_latent_attn(**cache_args, key=block_ind),
                        get_latent_ff(**cache_args, key=block_ind)
                    ]))
                self.layers.append(nn.ModuleList([
                    get_cross_attn(**cache_args),
                    get_cross_ff(**cache_args),
                    self_attns
                ]))
            self.to_logits = nn.Sequential(
                MeanOverLatents(),
                nn.LayerNorm(latent_dim),
                nn.Linear(latent_dim, num_classes)
            ) if final_classifier_head else nn.Identity()

        def forward(self, data, mask=None, return_embeddings=False):
            b, *axis, _, device, dtype = *data.shape, data.device, data.dtype
            assert len(axis) == self.input_axis, "input data must have the right number of axis"
            if self.fourier_encode_data:
                # calculate fourier encoded positions in the range of [-1, 1], for all axis
                axis_pos = list(map(lambda size: torch.linspace(-1., 1., steps=size, device=device, dtype=dtype), axis))
                pos = torch.stack(torch.meshgrid(*axis_pos, indexing="ij"), dim=-1)
                enc_pos = fourier_encode(pos, self.max_freq, self.num_freq_bands)
                enc_pos = enc_pos.reshape(*enc_pos.shape[:-2], -1)  # rearrange('... n d -> ... (n d)')
                enc_pos = enc_pos.unsqueeze(0).expand(b, *enc_pos.shape)  # repeat('... -> b ...', b=b)
                data = torch.cat((data, enc_pos), dim=-1)
            data = data.reshape(b, -1, data.shape[-1])  # rearrange(data, 'b ... d -> b (...) d')
            if latents_by == "expand":
                x = self.latents.unsqueeze(0).expand(b, -1, -1)  # repeat(self.latents, 'n d -> b n d', b=b)
            else:
                x = self.latents.repeat(b, 1, 1)
            for cross_attn, cross_ff, self_attns in self.layers:
                x = cross_attn(x, context=data, mask=mask) + x
                x = cross_ff(x) + x
                for self_attn, self_ff in self_attns:
                    x = self_attn(x) + x
                    x = self_ff(x) + x
            if return_embeddings:
                return x
            return self.to_logits(x)

    return Perceiver(num_freq_bands=3, depth=depth, max_freq=10., input_channels=CHANNELS, input_axis=2,
                     num_latents=6, latent_dim=8, cross_heads=1, latent_heads=2, cross_dim_head=4, latent_dim_head=4,
                     num_classes=CLASSES, weight_tie_layers=weight_tie_layers, self_per_cross_attn=2)


def _data(steps=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((steps, BATCH, HEIGHT, WIDTH, CHANNELS))
    labels = rng.integers(0, CLASSES, (steps, BATCH))
    mask = np.ones((BATCH, HEIGHT, WIDTH), dtype=bool)
    mask[1, :, -1] = False  # the second image is narrower: its last column is padding
    return images, labels, mask


def train_perceiver(masked, steps=3):
    images, labels, padding = _data(steps)

    def train(torch, nn, F, model):
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
        mask = torch.tensor(padding) if masked else None
        record = {"losses": []}
        for step in range(steps):
            logits = model(torch.as_tensor(images[step], dtype=torch.get_default_dtype()), mask=mask)
            loss = F.cross_entropy(logits, torch.tensor(labels[step]))
            optimizer.zero_grad()
            loss.backward()
            record.setdefault("logits", array(logits))
            record.setdefault("grads", gradients(model))
            optimizer.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        x = torch.as_tensor(images[0], dtype=torch.get_default_dtype())
        record["embeddings"] = array(model(x, mask=mask, return_embeddings=True))
        return record

    return train


VARIANTS = {"tied, expand, masked": dict(masked=True), "tied, expand": dict(masked=False),
            "untied, repeat, masked": dict(masked=True, weight_tie_layers=False, latents_by="repeat")}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_perceiver_trains_as_torch(variant, float64_default):
    options = dict(VARIANTS[variant])
    masked = options.pop("masked")
    ours, theirs = run_in_lockstep(lambda torch, nn, F: perceiver(torch, nn, F, **options), train_perceiver(masked))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_perceiver_weight_tying_shares_parameters_as_torch(float64_default):
    """cache_fn hands the second layer the first one's modules: one set of parameters, two names in the state_dict,
    and a gradient that sums both uses."""
    torch = require_torch()
    counts = []
    for lib in (kiln, torch):
        tied = perceiver(lib, lib.nn, lib.nn.functional, depth=3)
        untied = perceiver(lib, lib.nn, lib.nn.functional, weight_tie_layers=False, depth=3)
        assert tied.layers[1][0] is tied.layers[2][0] and tied.layers[0][0] is not tied.layers[1][0]
        counts.append((len(list(tied.parameters())), len(tied.state_dict()), len(list(untied.parameters()))))
    assert counts[0] == counts[1]
    assert counts[0][0] < counts[0][1] == counts[0][2]


def test_perceiver_compiled_step_as_torch(float64_default):
    images, labels, padding = _data(3)

    def train(torch, nn, F, model):
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)

        def train_step(x, y, mask):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x, mask=mask), y)
            loss.backward()
            optimizer.step()
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        mask = torch.tensor(padding)
        losses = [run(torch.tensor(images[s]), torch.tensor(labels[s]), mask).item() for s in range(3)]
        return {"losses": losses, "state": snapshot(model)}

    ours, theirs = run_in_lockstep(perceiver, train)
    assert_same_records(ours, theirs)


def test_perceiver_compiled_model_as_torch(float64_default):
    """``model = kiln.compile(model, fullgraph=True)`` before the eager loop (torch 2.x's ``torch.compile(model)``)."""
    ours, theirs = run_in_lockstep(perceiver, compiled_module_training(train_perceiver(masked=True)))
    assert_same_records(ours, theirs)


def test_perceiver_float32_as_torch():
    require_torch()
    ours, theirs = run_in_lockstep(perceiver, train_perceiver(masked=True))
    assert ours["logits"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=1e-5, atol=2e-6)
