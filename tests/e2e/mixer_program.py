"""MLP-Mixer as timm's ``mlp_mixer.py`` writes it and gMLP's spatial gating unit in its two common PyTorch forms
(``torch`` is ``torch`` or ``kiln``).

- Mixer: ``PatchEmbed`` (``nn.Conv2d(kernel_size=patch, stride=patch)``, ``x.flatten(2).transpose(1, 2)``),
  ``MixerBlock`` (token mixing ``mlp_tokens(norm1(x).transpose(1, 2)).transpose(1, 2)``, channel mixing
  ``mlp_channels(norm2(x))``, ``LayerNorm(eps=1e-6)``, ``nn.GELU``), mean over the patches, a head; timm's flax-style
  init (``xavier_uniform_``, ``normal_(std=1e-6)`` biases in the MLPs, LeCun-normal ``trunc_normal_`` conv, zero head)
  by ``named_modules``.
- gMLP: ``x.chunk(2, dim=-1)``, ``LayerNorm`` of the gate, and the projection over the sequence either as
  ``nn.Conv1d(seq_len, seq_len, kernel_size=1)`` with ``nn.init.constant_(bias, 1.0)`` (the popular port) or
  lucidrains' ``g-mlp-pytorch``: ``nn.Parameter`` weights ``uniform_(-eps, eps)`` per head, biases ones, an optional
  causal ``triu_(1).bool()`` mask by ``masked_fill``, ``einsum('b h n d, h m n -> b h m d')``, without einops."""

from __future__ import annotations

import math
from functools import partial


def mixer(torch, nn, F, *, img_size=8, patch_size=4, in_chans=3, num_classes=5, embed_dim=8, num_blocks=2,
          mlp_ratio=(0.5, 4.0), timm_init=True):
    class Mlp(nn.Module):
        def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.):
            super().__init__()
            out_features = out_features or in_features
            hidden_features = hidden_features or in_features
            self.fc1 = nn.Linear(in_features, hidden_features)
            self.act = act_layer()
            self.drop1 = nn.Dropout(drop)
            self.fc2 = nn.Linear(hidden_features, out_features)
            self.drop2 = nn.Dropout(drop)

        def forward(self, x):
            x = self.fc1(x)
            x = self.act(x)
            x = self.drop1(x)
            x = self.fc2(x)
            x = self.drop2(x)
            return x

    class PatchEmbed(nn.Module):
        def __init__(self, img_size, patch_size, in_chans, embed_dim):
            super().__init__()
            self.grid_size = (img_size // patch_size, img_size // patch_size)
            self.num_patches = self.grid_size[0] * self.grid_size[1]
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
            self.norm = nn.Identity()

        def forward(self, x):
            x = self.proj(x)
            x = x.flatten(2).transpose(1, 2)  # NCHW -> NLC
            x = self.norm(x)
            return x

    class MixerBlock(nn.Module):
        def __init__(self, dim, seq_len, mlp_ratio=(0.5, 4.0), mlp_layer=Mlp,
                     norm_layer=partial(nn.LayerNorm, eps=1e-6), act_layer=nn.GELU, drop=0.):
            super().__init__()
            tokens_dim, channels_dim = [int(x * dim) for x in mlp_ratio]
            self.norm1 = norm_layer(dim)
            self.mlp_tokens = mlp_layer(seq_len, tokens_dim, act_layer=act_layer, drop=drop)
            self.drop_path = nn.Identity()
            self.norm2 = norm_layer(dim)
            self.mlp_channels = mlp_layer(dim, channels_dim, act_layer=act_layer, drop=drop)

        def forward(self, x):
            x = x + self.drop_path(self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2))
            x = x + self.drop_path(self.mlp_channels(self.norm2(x)))
            return x

    def lecun_normal_(tensor):
        fan_in = tensor.shape[1] * math.prod(tensor.shape[2:])
        std = math.sqrt(1.0 / fan_in) / .87962566103423978  # the std of a unit normal truncated to (-2, 2)
        nn.init.trunc_normal_(tensor, std=std)

    def init_weights(module, name, head_bias=0.):
        if isinstance(module, nn.Linear):
            if name.startswith("head"):
                nn.init.zeros_(module.weight)
                nn.init.constant_(module.bias, head_bias)
            else:
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    if "mlp" in name:
                        nn.init.normal_(module.bias, std=1e-6)
                    else:
                        nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d):
            lecun_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    class MlpMixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_classes = num_classes
            self.stem = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
            self.blocks = nn.Sequential(*[MixerBlock(embed_dim, self.stem.num_patches, mlp_ratio)
                                          for _ in range(num_blocks)])
            self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
            self.head = nn.Linear(embed_dim, num_classes)
            if timm_init:
                for module_name, module in self.named_modules():
                    init_weights(module, module_name)

        def forward_features(self, x):
            x = self.stem(x)
            x = self.blocks(x)
            x = self.norm(x)
            return x

        def forward(self, x):
            x = self.forward_features(x)
            x = x.mean(dim=1)
            return self.head(x)

    return MlpMixer()


def gmlp(torch, nn, F, *, sgu="conv1d", num_tokens=None, img_size=8, patch_size=4, in_chans=3, num_classes=5,
         d_model=8, d_ffn=12, seq_len=4, depth=2, heads=1, causal=False):
    """A gMLP classifier over patches (``num_tokens=None``) or a token model (``num_tokens`` given: per-position
    logits) with ``sgu`` ``"conv1d"`` or ``"lucidrains"``."""

    class ConvSpatialGatingUnit(nn.Module):
        def __init__(self, d_ffn, seq_len):
            super().__init__()
            self.norm = nn.LayerNorm(d_ffn // 2)
            self.spatial_proj = nn.Conv1d(seq_len, seq_len, kernel_size=1)
            nn.init.constant_(self.spatial_proj.bias, 1.0)

        def forward(self, x):
            u, v = x.chunk(2, dim=-1)
            v = self.norm(v)
            v = self.spatial_proj(v)
            out = u * v
            return out

    class SpatialGatingUnit(nn.Module):
        def __init__(self, dim, dim_seq, causal=False, act=nn.Identity(), heads=1, init_eps=1e-3):
            super().__init__()
            dim_out = dim // 2
            self.heads = heads
            self.causal = causal
            self.norm = nn.LayerNorm(dim_out)
            self.act = act
            self.weight = nn.Parameter(torch.zeros(heads, dim_seq, dim_seq))
            self.bias = nn.Parameter(torch.ones(heads, dim_seq))
            init_eps /= dim_seq
            nn.init.uniform_(self.weight, -init_eps, init_eps)

        def forward(self, x, gate_res=None):
            device, n, h = x.device, x.shape[1], self.heads
            res, gate = x.chunk(2, dim=-1)
            gate = self.norm(gate)
            weight, bias = self.weight, self.bias
            if self.causal:
                weight, bias = weight[:, :n, :n], bias[:, :n]
                mask = torch.ones(weight.shape[-2:], device=device).triu_(1).bool()
                mask = mask[None]  # rearrange(mask, 'i j -> () i j')
                weight = weight.masked_fill(mask, 0.)
            b, _, d = gate.shape
            gate = gate.reshape(b, n, h, d // h).permute(0, 2, 1, 3)  # 'b n (h d) -> b h n d'
            gate = torch.einsum('b h n d, h m n -> b h m d', gate, weight)
            gate = gate + bias[None, :, :, None]  # rearrange(bias, 'h n -> () h n ()')
            gate = gate.permute(0, 2, 1, 3).reshape(b, n, d)  # 'b h n d -> b n (h d)'
            if gate_res is not None:
                gate = gate + gate_res
            return self.act(gate) * res

    class gMLPBlock(nn.Module):  # noqa: N801  (the paper's name)
        def __init__(self, d_model, d_ffn, seq_len):
            super().__init__()
            self.norm = nn.LayerNorm(d_model)
            self.channel_proj1 = nn.Linear(d_model, d_ffn * 2)
            self.channel_proj2 = nn.Linear(d_ffn, d_model)
            if sgu == "conv1d":
                self.sgu = ConvSpatialGatingUnit(d_ffn * 2, seq_len)
            else:
                self.sgu = SpatialGatingUnit(d_ffn * 2, seq_len, causal=causal, heads=heads)

        def forward(self, x):
            residual = x
            x = self.norm(x)
            x = F.gelu(self.channel_proj1(x))
            x = self.sgu(x)
            x = self.channel_proj2(x)
            return x + residual

    class gMLP(nn.Module):  # noqa: N801
        def __init__(self):
            super().__init__()
            if num_tokens is None:
                self.patcher = nn.Conv2d(in_chans, d_model, kernel_size=patch_size, stride=patch_size)
            else:
                self.to_embed = nn.Embedding(num_tokens, d_model)
            self.layers = nn.ModuleList([gMLPBlock(d_model, d_ffn, seq_len) for _ in range(depth)])
            self.to_logits = nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, num_tokens or num_classes))

        def forward(self, x):
            if num_tokens is None:
                x = self.patcher(x)
                b, c, h, w = x.shape
                x = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # rearrange('b c h w -> b (h w) c')
            else:
                x = self.to_embed(x)
            for layer in self.layers:
                x = layer(x)
            if num_tokens is None:
                x = x.mean(dim=1)
            return self.to_logits(x)

    return gMLP()
