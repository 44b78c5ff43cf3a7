"""PVT (whai362/PVT ``pvt.py``), ConvMixer (locuslab/convmixer), gMLP (the common PyTorch port of the paper's spatial
gating unit), ResMLP (facebookresearch/deit ``resmlp_models.py``) and a MaxViT stage (timm ``maxxvit.py``'s MBConv
with squeeze-excitation, block and grid partitions, Swin's relative position bias), each a function of
``(torch, nn, F)`` as ``vit_variants_program.py``'s models (which holds the timm layers they share)."""

from __future__ import annotations

from e2e.vit_variants_program import CHANNELS, CLASSES, IMAGE, init_vit_weights, timm_layers

PVT_IMAGE = 16  # PVT's stage sizes assume its 4x4 first patch (img_size // 2 ** (i + 1))

# --- PVT (whai362/PVT pvt.py) ---------------------------------------------------------------------------------------


def pvt(torch, nn, F, embed_dims=(8, 16), num_heads=(1, 2), sr_ratios=(2, 1), depths=(1, 1), patch_size=4):
    """PyramidVisionTransformer (v1): spatial-reduction attention, a PatchEmbed per stage, the class token in the
    last stage, ``_get_pos_embed`` interpolating the position embedding where a stage's token count differs from the
    first stage's at training size (as the reference compares every stage with ``patch_embed1``)."""
    drop_path, DropPath, Mlp, _ = timm_layers(torch, nn, F)
    num_stages = len(depths)

    class Attention(nn.Module):
        def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0., proj_drop=0., sr_ratio=1):
            super().__init__()
            assert dim % num_heads == 0, f"dim {dim} should be divided by num_heads {num_heads}."
            self.dim = dim
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = qk_scale or head_dim ** -0.5
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
            self.kv = nn.Linear(dim, dim * 2, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)
            self.sr_ratio = sr_ratio
            if sr_ratio > 1:
                self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
                self.norm = nn.LayerNorm(dim)

        def forward(self, x, H, W):
            B, N, C = x.shape
            q = self.q(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
            if self.sr_ratio > 1:
                x_ = x.permute(0, 2, 1).reshape(B, C, H, W)
                x_ = self.sr(x_).reshape(B, C, -1).permute(0, 2, 1)
                x_ = self.norm(x_)
                kv = self.kv(x_).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            else:
                kv = self.kv(x).reshape(B, -1, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            k, v = kv[0], kv[1]
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = (attn @ v).transpose(1, 2).reshape(B, N, C)
            x = self.proj(x)
            return self.proj_drop(x)

    class Block(nn.Module):
        def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, drop_path=0., sr_ratio=1):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, sr_ratio=sr_ratio)
            self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio))

        def forward(self, x, H, W):
            x = x + self.drop_path(self.attn(self.norm1(x), H, W))
            x = x + self.drop_path(self.mlp(self.norm2(x)))
            return x

    class PatchEmbed(nn.Module):
        def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
            super().__init__()
            img_size, patch_size = (img_size, img_size), (patch_size, patch_size)
            self.img_size = img_size
            self.patch_size = patch_size
            self.H, self.W = img_size[0] // patch_size[0], img_size[1] // patch_size[1]
            self.num_patches = self.H * self.W
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
            self.norm = nn.LayerNorm(embed_dim)

        def forward(self, x):
            B, C, H, W = x.shape
            x = self.proj(x).flatten(2).transpose(1, 2)
            x = self.norm(x)
            H, W = H // self.patch_size[0], W // self.patch_size[1]
            return x, (H, W)

    class PyramidVisionTransformer(nn.Module):
        def __init__(self, img_size=PVT_IMAGE, in_chans=CHANNELS, num_classes=CLASSES, qkv_bias=True):
            super().__init__()
            self.num_classes = num_classes
            self.depths = depths
            self.num_stages = num_stages
            for i in range(num_stages):
                patch_embed = PatchEmbed(img_size=img_size if i == 0 else img_size // (2 ** (i + 1)),
                                         patch_size=patch_size if i == 0 else 2,
                                         in_chans=in_chans if i == 0 else embed_dims[i - 1],
                                         embed_dim=embed_dims[i])
                num_patches = patch_embed.num_patches if i != num_stages - 1 else patch_embed.num_patches + 1
                pos_embed = nn.Parameter(torch.zeros(1, num_patches, embed_dims[i]))
                pos_drop = nn.Dropout(p=0.)
                block = nn.ModuleList([Block(dim=embed_dims[i], num_heads=num_heads[i], qkv_bias=qkv_bias,
                                             sr_ratio=sr_ratios[i]) for j in range(depths[i])])
                setattr(self, f"patch_embed{i + 1}", patch_embed)
                setattr(self, f"pos_embed{i + 1}", pos_embed)
                setattr(self, f"pos_drop{i + 1}", pos_drop)
                setattr(self, f"block{i + 1}", block)
            self.norm = nn.LayerNorm(embed_dims[-1])
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[-1]))
            self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
            for i in range(num_stages):
                nn.init.trunc_normal_(getattr(self, f"pos_embed{i + 1}"), std=.02)
            nn.init.trunc_normal_(self.cls_token, std=.02)
            self.apply(init_vit_weights(nn))

        def _get_pos_embed(self, pos_embed, patch_embed, H, W):
            if H * W == self.patch_embed1.num_patches:
                return pos_embed
            else:
                return F.interpolate(
                    pos_embed.reshape(1, patch_embed.H, patch_embed.W, -1).permute(0, 3, 1, 2),
                    size=(H, W), mode="bilinear").reshape(1, -1, H * W).permute(0, 2, 1)

        def forward_features(self, x):
            B = x.shape[0]
            for i in range(self.num_stages):
                patch_embed = getattr(self, f"patch_embed{i + 1}")
                pos_embed = getattr(self, f"pos_embed{i + 1}")
                pos_drop = getattr(self, f"pos_drop{i + 1}")
                block = getattr(self, f"block{i + 1}")
                x, (H, W) = patch_embed(x)
                if i == self.num_stages - 1:
                    cls_tokens = self.cls_token.expand(B, -1, -1)
                    x = torch.cat((cls_tokens, x), dim=1)
                    pos_embed_ = self._get_pos_embed(pos_embed[:, 1:], patch_embed, H, W)
                    pos_embed = torch.cat((pos_embed[:, 0:1], pos_embed_), dim=1)
                else:
                    pos_embed = self._get_pos_embed(pos_embed, patch_embed, H, W)
                x = pos_drop(x + pos_embed)
                for blk in block:
                    x = blk(x, H, W)
                if i != self.num_stages - 1:
                    x = x.reshape(B, H, W, -1).permute(0, 3, 1, 2).contiguous()
            x = self.norm(x)
            return x[:, 0]

        def forward(self, x):
            x = self.forward_features(x)
            return self.head(x)

    return PyramidVisionTransformer()


# --- ConvMixer, gMLP, ResMLP ----------------------------------------------------------------------------------------


def conv_mixer(torch, nn, F, dim=8, depth=2, kernel_size=4, patch_size=2, n_classes=CLASSES):
    """locuslab/convmixer's ``ConvMixer`` (an even kernel: ``padding="same"`` pads one more on the right/bottom)."""

    class Residual(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x) + x

    return nn.Sequential(
        nn.Conv2d(CHANNELS, dim, kernel_size=patch_size, stride=patch_size),
        nn.GELU(),
        nn.BatchNorm2d(dim),
        *[nn.Sequential(
            Residual(nn.Sequential(
                nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"),
                nn.GELU(),
                nn.BatchNorm2d(dim)
            )),
            nn.Conv2d(dim, dim, kernel_size=1),
            nn.GELU(),
            nn.BatchNorm2d(dim)
        ) for i in range(depth)],
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(dim, n_classes)
    )


def gmlp(torch, nn, F, d_model=16, d_ffn=16, depth=2, patch_size=2):
    """gMLP for images: ``SpatialGatingUnit`` (``x.chunk(2, dim=-1)``, ``nn.Conv1d(seq_len, seq_len, 1)`` with zero
    weight and unit bias, so every block starts as the identity gate), patches by a strided conv."""
    seq_len = (IMAGE // patch_size) ** 2

    class SpatialGatingUnit(nn.Module):
        def __init__(self, d_ffn, seq_len):
            super().__init__()
            self.norm = nn.LayerNorm(d_ffn)
            self.spatial_proj = nn.Conv1d(seq_len, seq_len, kernel_size=1)
            nn.init.zeros_(self.spatial_proj.weight)
            nn.init.constant_(self.spatial_proj.bias, 1.0)

        def forward(self, x):
            u, v = x.chunk(2, dim=-1)
            v = self.norm(v)
            v = self.spatial_proj(v)
            out = u * v
            return out

    class gMLPBlock(nn.Module):
        def __init__(self, d_model, d_ffn, seq_len):
            super().__init__()
            self.norm = nn.LayerNorm(d_model)
            self.channel_proj1 = nn.Linear(d_model, d_ffn * 2)
            self.channel_proj2 = nn.Linear(d_ffn, d_model)
            self.sgu = SpatialGatingUnit(d_ffn, seq_len)

        def forward(self, x):
            residual = x
            x = self.norm(x)
            x = F.gelu(self.channel_proj1(x))
            x = self.sgu(x)
            x = self.channel_proj2(x)
            out = x + residual
            return out

    class gMLPForImageClassification(nn.Module):
        def __init__(self):
            super().__init__()
            self.patcher = nn.Conv2d(CHANNELS, d_model, kernel_size=patch_size, stride=patch_size)
            self.model = nn.Sequential(*[gMLPBlock(d_model, d_ffn, seq_len) for _ in range(depth)])
            self.classifier = nn.Linear(d_model, CLASSES)

        def forward(self, x):
            patches = self.patcher(x)
            batch_size, num_channels, _, _ = patches.shape
            patches = patches.permute(0, 2, 3, 1)
            patches = patches.view(batch_size, -1, num_channels)
            embedding = self.model(patches)
            embedding = embedding.mean(dim=1)
            return self.classifier(embedding)

    return gMLPForImageClassification()


def resmlp(torch, nn, F, embed_dim=16, depth=2, init_scale=0.1):
    """deit ``resmlp_models.py``: ``Affine`` in place of LayerNorm, the cross-patch Linear on ``x.transpose(1, 2)``,
    LayerScale ``gamma_1``/``gamma_2``."""
    drop_path, DropPath, Mlp, PatchEmbed = timm_layers(torch, nn, F)

    class Affine(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.alpha = nn.Parameter(torch.ones(dim))
            self.beta = nn.Parameter(torch.zeros(dim))

        def forward(self, x):
            return self.alpha * x + self.beta

    class layers_scale_mlp_blocks(nn.Module):
        def __init__(self, dim, drop=0., drop_path=0., act_layer=nn.GELU, init_values=1e-4, num_patches=196):
            super().__init__()
            self.norm1 = Affine(dim)
            self.attn = nn.Linear(num_patches, num_patches)
            self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()
            self.norm2 = Affine(dim)
            self.mlp = Mlp(in_features=dim, hidden_features=int(4.0 * dim), act_layer=act_layer, drop=drop)
            self.gamma_1 = nn.Parameter(init_values * torch.ones((dim)), requires_grad=True)
            self.gamma_2 = nn.Parameter(init_values * torch.ones((dim)), requires_grad=True)

        def forward(self, x):
            x = x + self.drop_path(self.gamma_1 * self.attn(self.norm1(x).transpose(1, 2)).transpose(1, 2))
            x = x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))
            return x

    class resmlp_models(nn.Module):
        def __init__(self, num_classes=CLASSES, drop_rate=0., drop_path_rate=0.0):
            super().__init__()
            self.num_classes = num_classes
            self.num_features = self.embed_dim = embed_dim
            self.patch_embed = PatchEmbed(embed_dim=embed_dim)
            num_patches = self.patch_embed.num_patches
            dpr = [drop_path_rate for i in range(depth)]
            self.blocks = nn.ModuleList([layers_scale_mlp_blocks(
                dim=embed_dim, drop=drop_rate, drop_path=dpr[i], init_values=init_scale, num_patches=num_patches)
                for i in range(depth)])
            self.norm = Affine(embed_dim)
            self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
            self.apply(init_vit_weights(nn))

        def forward_features(self, x):
            B = x.shape[0]
            x = self.patch_embed(x)
            for i, blk in enumerate(self.blocks):
                x = blk(x)
            x = self.norm(x)
            x = x.mean(dim=1).reshape(B, 1, -1)
            return x[:, 0]

        def forward(self, x):
            return self.head(self.forward_features(x))

    return resmlp_models()


# --- MaxViT (timm maxxvit.py, Swin's relative position bias) ---------------------------------------------------------


def window_partition(x, p):
    B, H, W, C = x.shape
    return x.view(B, H // p, p, W // p, p, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, p * p, C)


def window_reverse(windows, p, H, W):
    C = windows.shape[-1]
    x = windows.view(-1, H // p, W // p, p, p, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


def grid_partition(x, g):
    B, H, W, C = x.shape
    x = x.view(B, g, H // g, g, W // g, C)
    return x.permute(0, 2, 4, 1, 3, 5).contiguous().view(-1, g * g, C)


def grid_reverse(windows, g, H, W):
    C = windows.shape[-1]
    x = windows.view(-1, H // g, W // g, g, g, C)
    return x.permute(0, 3, 1, 4, 2, 5).contiguous().view(-1, H, W, C)


def maxvit(torch, nn, F, dim=8, num_heads=2, partition=2, drop_path_rate=0.2):
    """A MaxViT stage: stem, MBConv (pre-norm BatchNorm, 1x1 expand, depthwise 3x3, squeeze-excitation, 1x1) then
    block attention and grid attention, each with a relative position bias table indexed by a registered buffer."""
    drop_path, DropPath, Mlp, _ = timm_layers(torch, nn, F)

    class SqueezeExcite(nn.Module):
        def __init__(self, in_chs, rd_ratio=0.25):
            super().__init__()
            rd_channels = int(in_chs * rd_ratio)
            self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True)
            self.act1 = nn.SiLU(inplace=True)
            self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True)
            self.gate = nn.Sigmoid()

        def forward(self, x):
            x_se = x.mean((2, 3), keepdim=True)
            x_se = self.conv_reduce(x_se)
            x_se = self.act1(x_se)
            x_se = self.conv_expand(x_se)
            return x * self.gate(x_se)

    class BatchNormAct2d(nn.BatchNorm2d):
        def __init__(self, num_features, eps=1e-3, apply_act=True):
            super().__init__(num_features, eps=eps)
            self.act = nn.GELU() if apply_act else nn.Identity()

        def forward(self, x):
            return self.act(super().forward(x))

    class MbConvBlock(nn.Module):
        def __init__(self, in_chs, out_chs, expand_ratio=4.0, drop_path=0.):
            super().__init__()
            mid_chs = int(out_chs * expand_ratio)
            self.shortcut = nn.Identity()
            self.pre_norm = BatchNormAct2d(in_chs, apply_act=False)
            self.conv1_1x1 = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
            self.norm1 = BatchNormAct2d(mid_chs)
            self.conv2_kxk = nn.Conv2d(mid_chs, mid_chs, 3, padding=1, groups=mid_chs, bias=False)
            self.norm2 = BatchNormAct2d(mid_chs)
            self.se = SqueezeExcite(mid_chs, rd_ratio=0.0625 * 4)
            self.conv3_1x1 = nn.Conv2d(mid_chs, out_chs, 1, bias=True)
            self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

        def forward(self, x):
            shortcut = self.shortcut(x)
            x = self.pre_norm(x)
            x = self.conv1_1x1(x)
            x = self.norm1(x)
            x = self.conv2_kxk(x)
            x = self.norm2(x)
            x = self.se(x)
            x = self.conv3_1x1(x)
            return self.drop_path(x) + shortcut

    def get_relative_position_index(win_h, win_w):
        coords_h = torch.arange(win_h)
        coords_w = torch.arange(win_w)
        coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"))  # 2, Wh, Ww
        coords_flatten = torch.flatten(coords, 1)  # 2, Wh*Ww
        relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]  # 2, Wh*Ww, Wh*Ww
        relative_coords = relative_coords.permute(1, 2, 0).contiguous()  # Wh*Ww, Wh*Ww, 2
        relative_coords[:, :, 0] += win_h - 1  # shift to start from 0
        relative_coords[:, :, 1] += win_w - 1
        relative_coords[:, :, 0] *= 2 * win_w - 1
        return relative_coords.sum(-1)  # Wh*Ww, Wh*Ww

    class RelPosAttention(nn.Module):
        def __init__(self, dim, num_heads, window_size):
            super().__init__()
            self.num_heads = num_heads
            self.scale = (dim // num_heads) ** -0.5
            self.window_area = window_size * window_size
            self.qkv = nn.Linear(dim, dim * 3, bias=True)
            self.proj = nn.Linear(dim, dim)
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * window_size - 1) * (2 * window_size - 1), num_heads))
            self.register_buffer("relative_position_index", get_relative_position_index(window_size, window_size),
                                 persistent=False)
            nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)

        def _get_rel_pos_bias(self):
            relative_position_bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
                self.window_area, self.window_area, -1)  # Wh*Ww,Wh*Ww,nH
            relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()  # nH, Wh*Ww, Wh*Ww
            return relative_position_bias.unsqueeze(0)

        def forward(self, x):
            B_, N, C = x.shape
            qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            q = q * self.scale
            attn = q @ k.transpose(-2, -1) + self._get_rel_pos_bias()
            attn = attn.softmax(dim=-1)
            x = (attn @ v).transpose(1, 2).reshape(B_, N, -1)
            return self.proj(x)

    class PartitionAttentionCl(nn.Module):
        def __init__(self, dim, partition_type, drop_path=0.):
            super().__init__()
            self.partition_type = partition_type
            self.norm1 = nn.LayerNorm(dim, eps=1e-5)
            self.attn = RelPosAttention(dim, num_heads, partition)
            self.drop_path1 = DropPath(drop_path) if drop_path > 0. else nn.Identity()
            self.norm2 = nn.LayerNorm(dim, eps=1e-5)
            self.mlp = Mlp(in_features=dim, hidden_features=int(dim * 4))
            self.drop_path2 = DropPath(drop_path) if drop_path > 0. else nn.Identity()

        def _partition_attn(self, x):
            B, H, W, C = x.shape
            if self.partition_type == 'block':
                partitioned = window_partition(x, partition)
            else:
                partitioned = grid_partition(x, partition)
            partitioned = self.attn(partitioned)
            if self.partition_type == 'block':
                return window_reverse(partitioned, partition, H, W)
            return grid_reverse(partitioned, partition, H, W)

        def forward(self, x):
            x = x + self.drop_path1(self._partition_attn(self.norm1(x)))
            x = x + self.drop_path2(self.mlp(self.norm2(x)))
            return x

    class MaxxVitBlock(nn.Module):
        def __init__(self, dim, drop_path=0.):
            super().__init__()
            self.conv = MbConvBlock(dim, dim, drop_path=drop_path)
            self.attn_block = PartitionAttentionCl(dim, 'block', drop_path=drop_path)
            self.attn_grid = PartitionAttentionCl(dim, 'grid', drop_path=drop_path)

        def forward(self, x):
            x = self.conv(x)  # NCHW
            x = x.permute(0, 2, 3, 1)  # to NHWC (channels-last)
            x = self.attn_block(x)
            x = self.attn_grid(x)
            return x.permute(0, 3, 1, 2)  # back to NCHW

    class MaxVit(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(CHANNELS, dim, 3, stride=2, padding=1, bias=False), BatchNormAct2d(dim))
            self.stages = nn.Sequential(MaxxVitBlock(dim, drop_path=drop_path_rate))
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, CLASSES)

        def forward(self, x):
            x = self.stages(self.stem(x))
            x = x.mean((2, 3))
            return self.head(self.norm(x))

    return MaxVit()
