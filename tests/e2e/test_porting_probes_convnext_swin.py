"""Porting probes: a ConvNeXt stage and a Swin Transformer block, each written once as PyTorch code (``torch`` is
``torch`` or ``kiln``) and run in both from kiln's initial weights in float64: the first forward, the first gradients,
the losses and the state after a few AdamW steps agree to 1e-10, eagerly and with the whole step in one
``kiln.compile(fullgraph=True)`` graph (against torch's eager loop).

- ConvNeXt (facebookresearch/ConvNeXt's ``Block`` and ``LayerNorm``): depthwise 7x7 ``Conv2d(groups=dim)``, the
  channels-last ``nn.LayerNorm`` between ``permute(0, 2, 3, 1)`` and back, the hand-written channels-first LayerNorm
  (``u = x.mean(1, keepdim=True)``, ``s = (x - u).pow(2).mean(1, keepdim=True)``), an inverted bottleneck of two
  ``nn.Linear``, LayerScale ``gamma * x``, ``drop_path`` by ``x.new_empty(shape).bernoulli_(keep).div_(keep)``
  (eval mode in lockstep; in train mode its statistics are checked), ``trunc_normal_`` init through ``self.apply``, and
  AdamW with decay/no-decay groups.
- Swin (microsoft/Swin-Transformer's ``WindowAttention`` and ``SwinTransformerBlock``): ``window_partition`` and
  ``window_reverse`` by ``view``/``permute``/``contiguous``, the shifted window by ``torch.roll``, the attention mask
  built by slice assignment on ``img_mask`` and ``masked_fill``, the relative position bias table indexed by a
  registered buffer (``table[index.view(-1)].view(...)``), attention by hand (``q @ k.transpose(-2, -1)``, softmax)
  or by ``F.scaled_dot_product_attention(attn_mask=...)``; blocks optionally under
  ``torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)`` as Swin's ``use_checkpoint``. The key
  projection's bias gets a zero gradient in exact arithmetic, so AdamW steps it by ``g / sqrt(v)`` of rounding noise in
  both libraries: it agrees to 1e-10 absolute, not relative (as the ViT probe's ``in_proj_bias``). AdamW groups by
  Swin's ``set_weight_decay`` from ``@torch.jit.ignore``'d ``no_weight_decay``/``no_weight_decay_keywords``.

What broke: ``@torch.jit.ignore`` (kiln had no ``kiln.jit``; ``tests/frontend/test_jit_namespace_vs_torch.py``) and
timm's ``model.to(memory_format=torch.channels_last)`` (kiln had no memory formats; the compiled ConvNeXt step uses
them now; ``tests/frontend/test_memory_format_vs_torch.py``).
Otherwise both families ran unchanged in kiln, eagerly and compiled. Only a compiled *forward* with drop path in
train mode needs ``kiln.compile(fn, seed=0)`` (kiln refuses random ops in a compiled inference call without a seed,
where torch.compile draws from the global generator; a compiled training step draws its seed itself).
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import (array, assert_same_records, compiled_module_training, compiled_step_training, gradients,
                                run_in_lockstep, snapshot)
from oracles import libraries

# --- ConvNeXt -------------------------------------------------------------------------------------------------------


def convnext_stage(torch, nn, F, dim=8, depth=2, drop_path_rate=0.2, num_classes=3):
    def drop_path(x, drop_prob: float = 0., training: bool = False):
        if drop_prob == 0. or not training:
            return x
        keep_prob = 1 - drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
        if keep_prob > 0.0:
            random_tensor.div_(keep_prob)
        return x * random_tensor

    class DropPath(nn.Module):
        def __init__(self, drop_prob=None):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            return drop_path(x, self.drop_prob, self.training)

    class LayerNorm(nn.Module):
        def __init__(self, normalized_shape, eps=1e-6, data_format="channels_last"):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(normalized_shape))
            self.bias = nn.Parameter(torch.zeros(normalized_shape))
            self.eps = eps
            self.data_format = data_format
            self.normalized_shape = (normalized_shape,)

        def forward(self, x):
            if self.data_format == "channels_last":
                return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            u = x.mean(1, keepdim=True)
            s = (x - u).pow(2).mean(1, keepdim=True)
            x = (x - u) / torch.sqrt(s + self.eps)
            return self.weight[:, None, None] * x + self.bias[:, None, None]

    class Block(nn.Module):
        def __init__(self, dim, drop_path=0., layer_scale_init_value=1e-6):
            super().__init__()
            self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.pwconv1 = nn.Linear(dim, 4 * dim)
            self.act = nn.GELU()
            self.pwconv2 = nn.Linear(4 * dim, dim)
            self.gamma = nn.Parameter(layer_scale_init_value * torch.ones((dim)),
                                      requires_grad=True) if layer_scale_init_value > 0 else None
            self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

        def forward(self, x):
            input = x
            x = self.dwconv(x)
            x = x.permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
            x = self.norm(x)
            x = self.pwconv1(x)
            x = self.act(x)
            x = self.pwconv2(x)
            if self.gamma is not None:
                x = self.gamma * x
            x = x.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
            return input + self.drop_path(x)

    class ConvNeXtStage(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, dim, kernel_size=2, stride=2),
                                      LayerNorm(dim, eps=1e-6, data_format="channels_first"))
            rates = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
            self.blocks = nn.Sequential(*[Block(dim, drop_path=rates[j], layer_scale_init_value=0.5)
                                          for j in range(depth)])
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.head = nn.Linear(dim, num_classes)
            self.apply(self._init_weights)

        def _init_weights(self, m):
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=.2)
                nn.init.constant_(m.bias, 0)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.head(self.norm(x.mean([-2, -1])))

    return ConvNeXtStage()


def adamw_groups(torch, model, lr=1e-2, weight_decay=0.05):
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if len(param.shape) == 1 or name.endswith(".bias") or name.endswith("gamma"):
            no_decay.append(param)
        else:
            decay.append(param)
    return torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                              {"params": decay, "weight_decay": weight_decay}], lr=lr)


def train_classifier(images, labels, steps=3, train_mode=False, optimizer=adamw_groups):
    def train(torch, nn, F, model):
        opt = optimizer(torch, model)
        x, y = torch.tensor(images), torch.tensor(labels)
        record = {"losses": []}
        model.train(train_mode)
        for _ in range(steps):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            record.setdefault("output", array(logits))
            record.setdefault("grads", gradients(model))
            opt.step()
            record["losses"].append(loss.item())
        record["state"] = snapshot(model)
        return record

    return train


def test_convnext_trains_as_torch(float64_default):
    """Eval mode (drop path off): the lockstep is exact; train mode's drop path is random, checked below."""
    rng = np.random.default_rng(0)
    images, labels = rng.standard_normal((2, 3, 8, 8)), np.array([0, 2])
    ours, theirs = run_in_lockstep(convnext_stage, train_classifier(images, labels))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_convnext_compiled_step_as_torch(float64_default):
    rng = np.random.default_rng(1)
    images, labels = rng.standard_normal((2, 3, 8, 8)), np.array([1, 2])

    def loss_of(torch, nn, F, model, x, y):
        return F.cross_entropy(model(x), y)

    def optimizer(torch, model):  # timm's train.py with --channels-last
        model.eval()
        model.to(memory_format=torch.channels_last)
        return adamw_groups(torch, model)

    def batch(torch):
        return torch.tensor(images).contiguous(memory_format=torch.channels_last), torch.tensor(labels)

    train = compiled_step_training(batch, optimizer, loss_of)
    ours, theirs = run_in_lockstep(convnext_stage, train)
    assert_same_records(ours, theirs)


def test_convnext_drop_path_statistics(float64_default):
    """Train mode: each sample's residual branch is kept with probability 1 - p and scaled by 1 / (1 - p), so every
    output row is the identity or ``x + branch / (1 - p)``; over many samples the kept fraction is 1 - p. Eagerly and
    compiled (``seed=0``: kiln.compile refuses random ops in a compiled forward without a seed, unlike torch.compile;
    a compiled training step draws its seed itself)."""
    lib, nn, F = libraries("kiln")
    kiln.manual_seed(0)
    model = convnext_stage(lib, nn, F, drop_path_rate=0.6, depth=2)
    block = model.blocks[1]
    assert block.drop_path.drop_prob == pytest.approx(0.6)
    x = lib.tensor(np.random.default_rng(2).standard_normal((2000, 8, 2, 2)))
    block.eval()
    full = array(block(x)) - array(x)
    block.train()
    compiled = kiln.compile(lambda x: block(x), fullgraph=True, seed=0)
    masks = []
    for branch in (array(block(x)) - array(x), np.asarray(compiled(x)) - array(x), np.asarray(compiled(x)) - array(x)):
        kept = np.abs(branch).reshape(len(branch), -1).max(1) > 0
        np.testing.assert_allclose(branch[kept], full[kept] / 0.4, rtol=1e-12, atol=1e-15)
        assert np.all(branch[~kept] == 0)
        assert abs(kept.mean() - 0.4) < 4 * np.sqrt(0.4 * 0.6 / len(kept))
        masks.append(kept)
    assert (masks[1] != masks[2]).any(), "each compiled call draws its own mask"


# --- Swin Transformer block -----------------------------------------------------------------------------------------


def swin_block(torch, nn, F, fused_attention, use_checkpoint=False, dim=8, resolution=(4, 4), num_heads=2, window_size=2, shift_size=1,
               num_classes=3):
    def window_partition(x, window_size):
        B, H, W, C = x.shape
        x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
        return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)

    def window_reverse(windows, window_size, H, W):
        B = int(windows.shape[0] / (H * W / window_size / window_size))
        x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
        return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)

    class WindowAttention(nn.Module):
        def __init__(self, dim, window_size, num_heads, qkv_bias=True):
            super().__init__()
            self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
            head_dim = dim // num_heads
            self.scale = head_dim ** -0.5
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))
            coords_h = torch.arange(self.window_size[0])
            coords_w = torch.arange(self.window_size[1])
            coords = torch.stack(torch.meshgrid([coords_h, coords_w], indexing="ij"))  # 2, Wh, Ww
            coords_flatten = torch.flatten(coords, 1)  # 2, Wh*Ww
            relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]
            relative_coords = relative_coords.permute(1, 2, 0).contiguous()
            relative_coords[:, :, 0] += self.window_size[0] - 1
            relative_coords[:, :, 1] += self.window_size[1] - 1
            relative_coords[:, :, 0] *= 2 * self.window_size[1] - 1
            relative_position_index = relative_coords.sum(-1)
            self.register_buffer("relative_position_index", relative_position_index)
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.proj = nn.Linear(dim, dim)
            nn.init.trunc_normal_(self.relative_position_bias_table, std=.5)
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x, mask=None):
            B_, N, C = x.shape
            qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            relative_position_bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
                self.window_size[0] * self.window_size[1], self.window_size[0] * self.window_size[1], -1)
            relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()  # nH, Wh*Ww, Wh*Ww
            if fused_attention:
                bias = relative_position_bias.unsqueeze(0)
                if mask is not None:
                    nW = mask.shape[0]
                    bias = (bias.unsqueeze(1) + mask.unsqueeze(1).unsqueeze(0)).expand(B_ // nW, -1, -1, -1, -1)
                    bias = bias.reshape(B_, self.num_heads, N, N)
                x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
            else:
                q = q * self.scale
                attn = (q @ k.transpose(-2, -1)) + relative_position_bias.unsqueeze(0)
                if mask is not None:
                    nW = mask.shape[0]
                    attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
                    attn = attn.view(-1, self.num_heads, N, N)
                x = self.softmax(attn) @ v
            return self.proj(x.transpose(1, 2).reshape(B_, N, C))

    class SwinTransformerBlock(nn.Module):
        def __init__(self, dim, input_resolution, num_heads, window_size, shift_size, mlp_ratio=2.):
            super().__init__()
            self.input_resolution, self.window_size, self.shift_size = input_resolution, window_size, shift_size
            self.norm1 = nn.LayerNorm(dim)
            self.attn = WindowAttention(dim, (window_size, window_size), num_heads)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, int(dim * mlp_ratio)), nn.GELU(), nn.Linear(int(dim * mlp_ratio), dim))
            if self.shift_size > 0:
                H, W = self.input_resolution
                img_mask = torch.zeros((1, H, W, 1))
                slices = (slice(0, -self.window_size), slice(-self.window_size, -self.shift_size),
                          slice(-self.shift_size, None))
                cnt = 0
                for h in slices:
                    for w in slices:
                        img_mask[:, h, w, :] = cnt
                        cnt += 1
                mask_windows = window_partition(img_mask, self.window_size)
                mask_windows = mask_windows.view(-1, self.window_size * self.window_size)
                attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
                attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))
            else:
                attn_mask = None
            self.register_buffer("attn_mask", attn_mask)

        def forward(self, x):
            H, W = self.input_resolution
            B, L, C = x.shape
            shortcut = x
            x = self.norm1(x).view(B, H, W, C)
            if self.shift_size > 0:
                shifted_x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            else:
                shifted_x = x
            x_windows = window_partition(shifted_x, self.window_size).view(-1, self.window_size * self.window_size, C)
            attn_windows = self.attn(x_windows, mask=self.attn_mask)
            attn_windows = attn_windows.view(-1, self.window_size, self.window_size, C)
            shifted_x = window_reverse(attn_windows, self.window_size, H, W)
            if self.shift_size > 0:
                x = torch.roll(shifted_x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
            else:
                x = shifted_x
            x = shortcut + x.view(B, H * W, C)
            return x + self.mlp(self.norm2(x))

    class TinySwin(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(3, dim)
            self.blocks = nn.ModuleList([SwinTransformerBlock(dim, resolution, num_heads, window_size, 0),
                                         SwinTransformerBlock(dim, resolution, num_heads, window_size, shift_size)])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, num_classes)

        @torch.jit.ignore
        def no_weight_decay(self):
            return {"embed.weight"}

        @torch.jit.ignore
        def no_weight_decay_keywords(self):
            return {"relative_position_bias_table"}

        def forward(self, x):  # x: (B, 3, H, W)
            x = self.embed(x.flatten(2).transpose(1, 2))
            for block in self.blocks:
                if use_checkpoint:
                    x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            return self.head(self.norm(x).mean(1))

    return TinySwin()


def swin_optimizer(torch, model, lr=1e-2):
    """Swin's ``build_optimizer``: no decay for biases, norms and the names the model lists (``set_weight_decay``)."""
    skip, skip_keywords = model.no_weight_decay(), model.no_weight_decay_keywords()
    has_decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if len(param.shape) == 1 or name.endswith(".bias") or name in skip or any(k in name for k in skip_keywords):
            no_decay.append(param)
        else:
            has_decay.append(param)
    groups = [{"params": has_decay}, {"params": no_decay, "weight_decay": 0.}]
    return torch.optim.AdamW(groups, eps=1e-8, betas=(0.9, 0.999), lr=lr, weight_decay=0.05)


ATTENTION = {"manual softmax": False, "scaled_dot_product_attention": True}
# The key projection's bias gets a zero gradient in exact arithmetic (softmax does not see a constant added to a row of
# scores), so AdamW steps it by ``g / sqrt(v)`` of ~1e-19 rounding noise in both libraries: absolute 1e-10 there.
KEY_BIAS = {f"state/blocks.{i}.attn.qkv.bias": dict(rtol=0, atol=1e-10) for i in range(2)}


@pytest.mark.parametrize("attention, use_checkpoint", [("manual softmax", False), ("scaled_dot_product_attention", True)])
def test_swin_trains_as_torch(attention, use_checkpoint, float64_default):
    """``use_checkpoint`` runs each block under ``torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)``,
    as Swin's ``BasicLayer`` does."""
    rng = np.random.default_rng(3)
    images, labels = rng.standard_normal((2, 3, 4, 4)), np.array([0, 2])
    ours, theirs = run_in_lockstep(lambda torch, nn, F: swin_block(torch, nn, F, ATTENTION[attention], use_checkpoint),
                                   train_classifier(images, labels, train_mode=True, optimizer=swin_optimizer))
    assert_same_records(ours, theirs, looser=KEY_BIAS)
    assert theirs["losses"][-1] < theirs["losses"][0]


@pytest.mark.parametrize("attention, use_checkpoint", [("manual softmax", True), ("scaled_dot_product_attention", False)])
def test_swin_compiled_step_as_torch(attention, use_checkpoint, float64_default):
    rng = np.random.default_rng(4)
    images, labels = rng.standard_normal((2, 3, 4, 4)), np.array([1, 0])
    train = compiled_step_training(lambda lib: (lib.tensor(images), lib.tensor(labels)),
                                   swin_optimizer, lambda torch, nn, F, model, x, y: F.cross_entropy(model(x), y))
    ours, theirs = run_in_lockstep(lambda torch, nn, F: swin_block(torch, nn, F, ATTENTION[attention], use_checkpoint),
                                   train)
    assert_same_records(ours, theirs, looser=KEY_BIAS)


@pytest.mark.parametrize("family", ["ConvNeXt", "Swin"])
def test_compiled_model_in_the_eager_loop_as_torch(family, float64_default):
    """``model = torch.compile(model)`` then the usual eager loop (forward compiled, backward and AdamW eager)."""
    rng = np.random.default_rng(6)
    if family == "ConvNeXt":
        build, train = convnext_stage, train_classifier(rng.standard_normal((2, 3, 8, 8)), np.array([2, 1]))
    else:
        build = lambda torch, nn, F: swin_block(torch, nn, F, fused_attention=True)  # noqa: E731
        train = train_classifier(rng.standard_normal((2, 3, 4, 4)), np.array([2, 1]), train_mode=True, optimizer=swin_optimizer)
    ours, theirs = run_in_lockstep(build, compiled_module_training(train))
    assert_same_records(ours, theirs, looser=KEY_BIAS)
