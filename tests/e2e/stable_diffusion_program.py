"""A tiny Stable Diffusion as CompVis/stable-diffusion's ``ldm`` writes it (``torch`` is ``torch`` or ``kiln``), for
``test_porting_probes_stable_diffusion.py``: ``modules/diffusionmodules/util.py`` (``timestep_embedding``,
``zero_module``, ``GroupNorm32``, ``extract_into_tensor``, the beta and DDIM schedules), ``modules/attention.py``
(``CrossAttention``, ``GEGLU``, ``BasicTransformerBlock``, ``SpatialTransformer``), ``modules/diffusionmodules/
openaimodel.py`` (``TimestepEmbedSequential``, ``ResBlock``, ``Downsample``, ``Upsample``, ``UNetModel`` with spatial
transformers); the attention modules and the UNet as Stability-AI/stablediffusion (SD 2) writes them, a superset of
v1's that computes v1's at its defaults (``use_linear_in_transformer``, ``disable_self_attentions``, the similarity
under ``torch.autocast(enabled=False, device_type='cuda')`` in float32), ``modules/diffusionmodules/model.py`` (the VAE's ``Encoder``/``Decoder``, ``ResnetBlock``,
``AttnBlock``), ``modules/distributions/distributions.py`` (``DiagonalGaussianDistribution``), ``models/autoencoder.py``
(``AutoencoderKL``) with the KL + reconstruction part of ``LPIPSWithDiscriminator`` (before ``disc_start``, no LPIPS),
``modules/encoders/modules.py`` (``ClassEmbedder``), ``models/diffusion/ddpm.py`` (``register_schedule``, ``q_sample``,
``p_losses`` with ``logvar`` and ``lvlb_weights``) and ``models/diffusion/ddim.py`` (``DDIMSampler``).

Changes from the reference, each the one a user makes: einops' ``rearrange`` written as ``reshape``/``permute`` (einops
is not installed here); ``GroupNorm(32, ...)`` with ``GROUPS`` groups at these widths; the samplers' random draws
(``posterior.sample()``, the noise of ``p_losses``) take the noise as an argument where the probe feeds it, since the
two libraries' generators differ; ``DDIMSampler.register_buffer`` moves tensors to the CPU, not CUDA. For float64 runs
``float_dtype`` replaces the reference's float32 (``.float()``, ``dtype=torch.float32``) in the timestep embedding,
``GroupNorm32``, the attention's fp32 similarity, ``UNetModel.dtype`` and the schedules' ``to_torch``; None keeps the
reference's float32.
"""

from __future__ import annotations

import math
from abc import abstractmethod


GROUPS, IMAGE, CHANNELS, CLASSES, TIMESTEPS = 4, 8, 3, 5, 20
_ATTN_PRECISION = "fp32"  # os.environ.get("ATTN_PRECISION", "fp32") in SD 2's attention.py


def sd_modules(torch, nn, F, float_dtype=None):
    """The classes and functions of ``ldm``, as a namespace dict."""

    def as_float(x):
        return x.float() if float_dtype is None else x.to(float_dtype)

    # --- modules/diffusionmodules/util.py ------------------------------------------------------------------------

    def timestep_embedding(timesteps, dim, max_period=10000, repeat_only=False):
        if not repeat_only:
            half = dim // 2
            freqs = torch.exp(
                -math.log(max_period) * torch.arange(start=0, end=half, dtype=float_dtype or torch.float32) / half
            ).to(device=timesteps.device)
            args = as_float(timesteps[:, None]) * freqs[None]
            embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
            if dim % 2:
                embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
        else:
            embedding = timesteps[:, None].repeat(1, dim)  # repeat(timesteps, 'b -> b d', d=dim)
        return embedding

    def zero_module(module):
        for p in module.parameters():
            p.detach().zero_()
        return module

    class GroupNorm32(nn.GroupNorm):
        def forward(self, x):
            return super().forward(as_float(x)).type(x.dtype)

    def normalization(channels):
        return GroupNorm32(GROUPS, channels)

    def conv_nd(dims, *args, **kwargs):
        if dims == 1:
            return nn.Conv1d(*args, **kwargs)
        elif dims == 2:
            return nn.Conv2d(*args, **kwargs)
        raise ValueError(f"unsupported dimensions: {dims}")

    def linear(*args, **kwargs):
        return nn.Linear(*args, **kwargs)

    def avg_pool_nd(dims, *args, **kwargs):
        if dims == 2:
            return nn.AvgPool2d(*args, **kwargs)
        raise ValueError(f"unsupported dimensions: {dims}")

    def checkpoint(func, inputs, params, flag):
        return func(*inputs)  # use_checkpoint False

    def exists(val):
        return val is not None

    def default(val, d):
        if exists(val):
            return val
        return d() if callable(d) else d

    # --- modules/attention.py ------------------------------------------------------------------------------------

    class GEGLU(nn.Module):
        def __init__(self, dim_in, dim_out):
            super().__init__()
            self.proj = nn.Linear(dim_in, dim_out * 2)

        def forward(self, x):
            x, gate = self.proj(x).chunk(2, dim=-1)
            return x * F.gelu(gate)

    class FeedForward(nn.Module):
        def __init__(self, dim, dim_out=None, mult=4, glu=False, dropout=0.):
            super().__init__()
            inner_dim = int(dim * mult)
            dim_out = default(dim_out, dim)
            project_in = nn.Sequential(nn.Linear(dim, inner_dim), nn.GELU()) if not glu else GEGLU(dim, inner_dim)
            self.net = nn.Sequential(project_in, nn.Dropout(dropout), nn.Linear(inner_dim, dim_out))

        def forward(self, x):
            return self.net(x)

    def Normalize(in_channels):
        return torch.nn.GroupNorm(num_groups=GROUPS, num_channels=in_channels, eps=1e-6, affine=True)

    class CrossAttention(nn.Module):
        def __init__(self, query_dim, context_dim=None, heads=8, dim_head=64, dropout=0.):
            super().__init__()
            inner_dim = dim_head * heads
            context_dim = default(context_dim, query_dim)
            self.scale = dim_head ** -0.5
            self.heads = heads
            self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
            self.to_k = nn.Linear(context_dim, inner_dim, bias=False)
            self.to_v = nn.Linear(context_dim, inner_dim, bias=False)
            self.to_out = nn.Sequential(nn.Linear(inner_dim, query_dim), nn.Dropout(dropout))

        def forward(self, x, context=None, mask=None):
            h = self.heads
            q = self.to_q(x)
            context = default(context, x)
            k = self.to_k(context)
            v = self.to_v(context)

            def split_heads(t):  # rearrange(t, 'b n (h d) -> (b h) n d', h=h)
                b, n, _ = t.shape
                return t.reshape(b, n, h, -1).permute(0, 2, 1, 3).reshape(b * h, n, -1)

            q, k, v = map(split_heads, (q, k, v))
            # force cast to fp32 to avoid overflowing
            if _ATTN_PRECISION == "fp32":
                with torch.autocast(enabled=False, device_type='cuda'):
                    q, k = as_float(q), as_float(k)
                    sim = torch.einsum('b i d, b j d -> b i j', q, k) * self.scale
            else:
                sim = torch.einsum('b i d, b j d -> b i j', q, k) * self.scale
            del q, k
            if exists(mask):
                mask = mask.reshape(mask.shape[0], -1)  # rearrange(mask, 'b ... -> b (...)')
                max_neg_value = -torch.finfo(sim.dtype).max
                mask = mask[:, None, :].repeat_interleave(h, dim=0)  # repeat(mask, 'b j -> (b h) () j', h=h)
                sim.masked_fill_(~mask, max_neg_value)
            # attention, what we cannot get enough of
            sim = sim.softmax(dim=-1)
            out = torch.einsum('b i j, b j d -> b i d', sim, v)
            b_h, n, d = out.shape  # rearrange(out, '(b h) n d -> b n (h d)', h=h)
            out = out.reshape(b_h // h, h, n, d).permute(0, 2, 1, 3).reshape(b_h // h, n, h * d)
            return self.to_out(out)

    class BasicTransformerBlock(nn.Module):
        def __init__(self, dim, n_heads, d_head, dropout=0., context_dim=None, gated_ff=True, checkpoint=True,
                     disable_self_attn=False):
            super().__init__()
            self.disable_self_attn = disable_self_attn
            self.attn1 = CrossAttention(query_dim=dim, heads=n_heads, dim_head=d_head, dropout=dropout,
                                        context_dim=context_dim if self.disable_self_attn else None)
            self.ff = FeedForward(dim, dropout=dropout, glu=gated_ff)
            self.attn2 = CrossAttention(query_dim=dim, context_dim=context_dim, heads=n_heads, dim_head=d_head,
                                        dropout=dropout)
            self.norm1 = nn.LayerNorm(dim)
            self.norm2 = nn.LayerNorm(dim)
            self.norm3 = nn.LayerNorm(dim)
            self.checkpoint = checkpoint

        def forward(self, x, context=None):
            return checkpoint(self._forward, (x, context), self.parameters(), self.checkpoint)

        def _forward(self, x, context=None):
            x = self.attn1(self.norm1(x), context=context if self.disable_self_attn else None) + x
            x = self.attn2(self.norm2(x), context=context) + x
            x = self.ff(self.norm3(x)) + x
            return x

    class SpatialTransformer(nn.Module):
        def __init__(self, in_channels, n_heads, d_head, depth=1, dropout=0., context_dim=None,
                     disable_self_attn=False, use_linear=False, use_checkpoint=True):
            super().__init__()
            if exists(context_dim) and not isinstance(context_dim, list):
                context_dim = [context_dim]
            self.in_channels = in_channels
            inner_dim = n_heads * d_head
            self.norm = Normalize(in_channels)
            if not use_linear:
                self.proj_in = nn.Conv2d(in_channels, inner_dim, kernel_size=1, stride=1, padding=0)
            else:
                self.proj_in = nn.Linear(in_channels, inner_dim)
            self.transformer_blocks = nn.ModuleList(
                [BasicTransformerBlock(inner_dim, n_heads, d_head, dropout=dropout, context_dim=context_dim[d],
                                       disable_self_attn=disable_self_attn, checkpoint=use_checkpoint)
                 for d in range(depth)]
            )
            if not use_linear:
                self.proj_out = zero_module(nn.Conv2d(inner_dim, in_channels, kernel_size=1, stride=1, padding=0))
            else:
                self.proj_out = zero_module(nn.Linear(in_channels, inner_dim))
            self.use_linear = use_linear

        def forward(self, x, context=None):
            # note: if no context is given, cross-attention defaults to self-attention
            if not isinstance(context, list):
                context = [context]
            b, c, h, w = x.shape
            x_in = x
            x = self.norm(x)
            if not self.use_linear:
                x = self.proj_in(x)
            x = x.permute(0, 2, 3, 1).reshape(b, h * w, -1).contiguous()  # rearrange(x, 'b c h w -> b (h w) c')
            if self.use_linear:
                x = self.proj_in(x)
            for i, block in enumerate(self.transformer_blocks):
                x = block(x, context=context[i])
            if self.use_linear:
                x = self.proj_out(x)
            x = x.reshape(b, h, w, -1).permute(0, 3, 1, 2).contiguous()  # rearrange(x, 'b (h w) c -> b c h w')
            if not self.use_linear:
                x = self.proj_out(x)
            return x + x_in

    # --- modules/diffusionmodules/openaimodel.py -----------------------------------------------------------------

    class TimestepBlock(nn.Module):
        @abstractmethod
        def forward(self, x, emb):
            """Apply the module to `x` given `emb` timestep embeddings."""

    class TimestepEmbedSequential(nn.Sequential, TimestepBlock):
        def forward(self, x, emb, context=None):
            for layer in self:
                if isinstance(layer, TimestepBlock):
                    x = layer(x, emb)
                elif isinstance(layer, SpatialTransformer):
                    x = layer(x, context)
                else:
                    x = layer(x)
            return x

    class Upsample(nn.Module):
        def __init__(self, channels, use_conv, dims=2, out_channels=None, padding=1):
            super().__init__()
            self.channels = channels
            self.out_channels = out_channels or channels
            self.use_conv = use_conv
            self.dims = dims
            if use_conv:
                self.conv = conv_nd(dims, self.channels, self.out_channels, 3, padding=padding)

        def forward(self, x):
            assert x.shape[1] == self.channels
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            if self.use_conv:
                x = self.conv(x)
            return x

    class Downsample(nn.Module):
        def __init__(self, channels, use_conv, dims=2, out_channels=None, padding=1):
            super().__init__()
            self.channels = channels
            self.out_channels = out_channels or channels
            self.use_conv = use_conv
            self.dims = dims
            stride = 2 if dims != 3 else (1, 2, 2)
            if use_conv:
                self.op = conv_nd(dims, self.channels, self.out_channels, 3, stride=stride, padding=padding)
            else:
                assert self.channels == self.out_channels
                self.op = avg_pool_nd(dims, kernel_size=stride, stride=stride)

        def forward(self, x):
            assert x.shape[1] == self.channels
            return self.op(x)

    class ResBlock(TimestepBlock):
        def __init__(self, channels, emb_channels, dropout, out_channels=None, use_conv=False,
                     use_scale_shift_norm=False, dims=2, use_checkpoint=False, up=False, down=False):
            super().__init__()
            self.channels = channels
            self.emb_channels = emb_channels
            self.dropout = dropout
            self.out_channels = out_channels or channels
            self.use_conv = use_conv
            self.use_checkpoint = use_checkpoint
            self.use_scale_shift_norm = use_scale_shift_norm
            self.in_layers = nn.Sequential(
                normalization(channels),
                nn.SiLU(),
                conv_nd(dims, channels, self.out_channels, 3, padding=1),
            )
            self.updown = up or down
            if up:
                self.h_upd = Upsample(channels, False, dims)
                self.x_upd = Upsample(channels, False, dims)
            elif down:
                self.h_upd = Downsample(channels, False, dims)
                self.x_upd = Downsample(channels, False, dims)
            else:
                self.h_upd = self.x_upd = nn.Identity()
            self.emb_layers = nn.Sequential(
                nn.SiLU(),
                linear(emb_channels, 2 * self.out_channels if use_scale_shift_norm else self.out_channels),
            )
            self.out_layers = nn.Sequential(
                normalization(self.out_channels),
                nn.SiLU(),
                nn.Dropout(p=dropout),
                zero_module(conv_nd(dims, self.out_channels, self.out_channels, 3, padding=1)),
            )
            if self.out_channels == channels:
                self.skip_connection = nn.Identity()
            elif use_conv:
                self.skip_connection = conv_nd(dims, channels, self.out_channels, 3, padding=1)
            else:
                self.skip_connection = conv_nd(dims, channels, self.out_channels, 1)

        def forward(self, x, emb):
            return checkpoint(self._forward, (x, emb), self.parameters(), self.use_checkpoint)

        def _forward(self, x, emb):
            if self.updown:
                in_rest, in_conv = self.in_layers[:-1], self.in_layers[-1]
                h = in_rest(x)
                h = self.h_upd(h)
                x = self.x_upd(x)
                h = in_conv(h)
            else:
                h = self.in_layers(x)
            emb_out = self.emb_layers(emb).type(h.dtype)
            while len(emb_out.shape) < len(h.shape):
                emb_out = emb_out[..., None]
            if self.use_scale_shift_norm:
                out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
                scale, shift = torch.chunk(emb_out, 2, dim=1)
                h = out_norm(h) * (1 + scale) + shift
                h = out_rest(h)
            else:
                h = h + emb_out
                h = self.out_layers(h)
            return self.skip_connection(x) + h

    class UNetModel(nn.Module):
        def __init__(self, image_size, in_channels, model_channels, out_channels, num_res_blocks,
                     attention_resolutions, dropout=0, channel_mult=(1, 2, 4, 8), conv_resample=True, dims=2,
                     num_classes=None, use_checkpoint=False, use_fp16=False, num_heads=-1, num_head_channels=-1,
                     num_heads_upsample=-1, use_scale_shift_norm=False, resblock_updown=False,
                     use_spatial_transformer=False, transformer_depth=1, context_dim=None, legacy=True,
                     disable_self_attentions=None, use_linear_in_transformer=False):
            super().__init__()
            assert use_spatial_transformer and context_dim is not None  # the probe's path (no AttentionBlock)
            if num_heads_upsample == -1:
                num_heads_upsample = num_heads
            self.image_size = image_size
            self.in_channels = in_channels
            self.model_channels = model_channels
            self.out_channels = out_channels
            self.num_res_blocks = num_res_blocks
            self.attention_resolutions = attention_resolutions
            self.dropout = dropout
            self.channel_mult = channel_mult
            self.conv_resample = conv_resample
            self.num_classes = num_classes
            self.use_checkpoint = use_checkpoint
            self.dtype = torch.float16 if use_fp16 else float_dtype or torch.float32
            self.num_heads = num_heads
            self.num_head_channels = num_head_channels
            self.num_heads_upsample = num_heads_upsample

            time_embed_dim = model_channels * 4
            self.time_embed = nn.Sequential(
                linear(model_channels, time_embed_dim),
                nn.SiLU(),
                linear(time_embed_dim, time_embed_dim),
            )
            if self.num_classes is not None:
                self.label_emb = nn.Embedding(num_classes, time_embed_dim)

            self.input_blocks = nn.ModuleList(
                [TimestepEmbedSequential(conv_nd(dims, in_channels, model_channels, 3, padding=1))]
            )
            self._feature_size = model_channels
            input_block_chans = [model_channels]
            ch = model_channels
            ds = 1
            for level, mult in enumerate(channel_mult):
                for _ in range(num_res_blocks):
                    layers = [ResBlock(ch, time_embed_dim, dropout, out_channels=mult * model_channels, dims=dims,
                                       use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm)]
                    ch = mult * model_channels
                    if ds in attention_resolutions:
                        if num_head_channels == -1:
                            dim_head = ch // num_heads
                        else:
                            num_heads = ch // num_head_channels
                            dim_head = num_head_channels
                        if legacy:
                            dim_head = ch // num_heads if use_spatial_transformer else num_head_channels
                        if exists(disable_self_attentions):
                            disabled_sa = disable_self_attentions[level]
                        else:
                            disabled_sa = False
                        layers.append(SpatialTransformer(ch, num_heads, dim_head, depth=transformer_depth,
                                                         context_dim=context_dim, disable_self_attn=disabled_sa,
                                                         use_linear=use_linear_in_transformer,
                                                         use_checkpoint=use_checkpoint))
                    self.input_blocks.append(TimestepEmbedSequential(*layers))
                    self._feature_size += ch
                    input_block_chans.append(ch)
                if level != len(channel_mult) - 1:
                    out_ch = ch
                    self.input_blocks.append(TimestepEmbedSequential(
                        ResBlock(ch, time_embed_dim, dropout, out_channels=out_ch, dims=dims,
                                 use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm, down=True)
                        if resblock_updown else Downsample(ch, conv_resample, dims=dims, out_channels=out_ch)
                    ))
                    ch = out_ch
                    input_block_chans.append(ch)
                    ds *= 2
                    self._feature_size += ch

            if num_head_channels == -1:
                dim_head = ch // num_heads
            else:
                num_heads = ch // num_head_channels
                dim_head = num_head_channels
            if legacy:
                dim_head = ch // num_heads if use_spatial_transformer else num_head_channels
            self.middle_block = TimestepEmbedSequential(
                ResBlock(ch, time_embed_dim, dropout, dims=dims, use_checkpoint=use_checkpoint,
                         use_scale_shift_norm=use_scale_shift_norm),
                SpatialTransformer(ch, num_heads, dim_head, depth=transformer_depth, context_dim=context_dim,
                                   disable_self_attn=False, use_linear=use_linear_in_transformer,
                                   use_checkpoint=use_checkpoint),
                ResBlock(ch, time_embed_dim, dropout, dims=dims, use_checkpoint=use_checkpoint,
                         use_scale_shift_norm=use_scale_shift_norm),
            )
            self._feature_size += ch

            self.output_blocks = nn.ModuleList([])
            for level, mult in list(enumerate(channel_mult))[::-1]:
                for i in range(num_res_blocks + 1):
                    ich = input_block_chans.pop()
                    layers = [ResBlock(ch + ich, time_embed_dim, dropout, out_channels=model_channels * mult,
                                       dims=dims, use_checkpoint=use_checkpoint,
                                       use_scale_shift_norm=use_scale_shift_norm)]
                    ch = model_channels * mult
                    if ds in attention_resolutions:
                        if num_head_channels == -1:
                            dim_head = ch // num_heads
                        else:
                            num_heads = ch // num_head_channels
                            dim_head = num_head_channels
                        if legacy:
                            dim_head = ch // num_heads if use_spatial_transformer else num_head_channels
                        if exists(disable_self_attentions):
                            disabled_sa = disable_self_attentions[level]
                        else:
                            disabled_sa = False
                        layers.append(SpatialTransformer(ch, num_heads, dim_head, depth=transformer_depth,
                                                         context_dim=context_dim, disable_self_attn=disabled_sa,
                                                         use_linear=use_linear_in_transformer,
                                                         use_checkpoint=use_checkpoint))
                    if level and i == num_res_blocks:
                        out_ch = ch
                        layers.append(
                            ResBlock(ch, time_embed_dim, dropout, out_channels=out_ch, dims=dims,
                                     use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm,
                                     up=True)
                            if resblock_updown else Upsample(ch, conv_resample, dims=dims, out_channels=out_ch)
                        )
                        ds //= 2
                    self.output_blocks.append(TimestepEmbedSequential(*layers))
                    self._feature_size += ch

            self.out = nn.Sequential(
                normalization(ch),
                nn.SiLU(),
                zero_module(conv_nd(dims, model_channels, out_channels, 3, padding=1)),
            )

        def forward(self, x, timesteps=None, context=None, y=None, **kwargs):
            assert (y is not None) == (
                self.num_classes is not None
            ), "must specify y if and only if the model is class-conditional"
            hs = []
            t_emb = timestep_embedding(timesteps, self.model_channels, repeat_only=False)
            emb = self.time_embed(t_emb)
            if self.num_classes is not None:
                assert y.shape == (x.shape[0],)
                emb = emb + self.label_emb(y)
            h = x.type(self.dtype)
            for module in self.input_blocks:
                h = module(h, emb, context)
                hs.append(h)
            h = self.middle_block(h, emb, context)
            for module in self.output_blocks:
                h = torch.cat([h, hs.pop()], dim=1)
                h = module(h, emb, context)
            h = h.type(x.dtype)
            return self.out(h)

    return dict(locals())

