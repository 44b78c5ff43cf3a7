"""Stable Diffusion's first stage as CompVis/stable-diffusion writes it (``torch`` is ``torch`` or ``kiln``), for
``test_porting_probes_stable_diffusion.py``: ``modules/diffusionmodules/model.py`` (``Encoder``, ``Decoder``,
``ResnetBlock``, ``AttnBlock`` by ``torch.bmm``, ``Downsample`` with its asymmetric ``F.pad``, ``Upsample``),
``modules/distributions/distributions.py`` (``DiagonalGaussianDistribution``: ``torch.chunk``, ``clamp(-30, 20)``, KL,
NLL), ``models/autoencoder.py`` (``AutoencoderKL``) and the KL + reconstruction part of
``modules/losses/contperceptual.py``'s ``LPIPSWithDiscriminator`` (a learned 0-d ``logvar``; before ``disc_start``,
without LPIPS). ``GroupNorm(32, ...)`` is ``GroupNorm(GROUPS, ...)`` at these widths; ``sample`` takes its noise (see
``stable_diffusion_program.py``).
"""

from __future__ import annotations

import numpy as np

from e2e.stable_diffusion_program import GROUPS


def autoencoder_modules(torch, nn, F):
    """The first stage's classes, as a namespace dict."""

    def nonlinearity(x):
        # swish
        return x * torch.sigmoid(x)

    def Normalize(in_channels, num_groups=GROUPS):
        return torch.nn.GroupNorm(num_groups=num_groups, num_channels=in_channels, eps=1e-6, affine=True)

    class Upsample(nn.Module):
        def __init__(self, in_channels, with_conv):
            super().__init__()
            self.with_conv = with_conv
            if self.with_conv:
                self.conv = torch.nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1)

        def forward(self, x):
            x = torch.nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            if self.with_conv:
                x = self.conv(x)
            return x

    class Downsample(nn.Module):
        def __init__(self, in_channels, with_conv):
            super().__init__()
            self.with_conv = with_conv
            if self.with_conv:
                # no asymmetric padding in torch conv, must do it ourselves
                self.conv = torch.nn.Conv2d(in_channels, in_channels, kernel_size=3, stride=2, padding=0)

        def forward(self, x):
            if self.with_conv:
                pad = (0, 1, 0, 1)
                x = torch.nn.functional.pad(x, pad, mode="constant", value=0)
                x = self.conv(x)
            else:
                x = torch.nn.functional.avg_pool2d(x, kernel_size=2, stride=2)
            return x

    class ResnetBlock(nn.Module):
        def __init__(self, *, in_channels, out_channels=None, conv_shortcut=False, dropout, temb_channels=512):
            super().__init__()
            self.in_channels = in_channels
            out_channels = in_channels if out_channels is None else out_channels
            self.out_channels = out_channels
            self.use_conv_shortcut = conv_shortcut
            self.norm1 = Normalize(in_channels)
            self.conv1 = torch.nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
            if temb_channels > 0:
                self.temb_proj = torch.nn.Linear(temb_channels, out_channels)
            self.norm2 = Normalize(out_channels)
            self.dropout = torch.nn.Dropout(dropout)
            self.conv2 = torch.nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
            if self.in_channels != self.out_channels:
                if self.use_conv_shortcut:
                    self.conv_shortcut = torch.nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1,
                                                         padding=1)
                else:
                    self.nin_shortcut = torch.nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1,
                                                        padding=0)

        def forward(self, x, temb):
            h = x
            h = self.norm1(h)
            h = nonlinearity(h)
            h = self.conv1(h)
            if temb is not None:
                h = h + self.temb_proj(nonlinearity(temb))[:, :, None, None]
            h = self.norm2(h)
            h = nonlinearity(h)
            h = self.dropout(h)
            h = self.conv2(h)
            if self.in_channels != self.out_channels:
                if self.use_conv_shortcut:
                    x = self.conv_shortcut(x)
                else:
                    x = self.nin_shortcut(x)
            return x + h

    class AttnBlock(nn.Module):
        def __init__(self, in_channels):
            super().__init__()
            self.in_channels = in_channels
            self.norm = Normalize(in_channels)
            self.q = torch.nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
            self.k = torch.nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
            self.v = torch.nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
            self.proj_out = torch.nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)

        def forward(self, x):
            h_ = x
            h_ = self.norm(h_)
            q = self.q(h_)
            k = self.k(h_)
            v = self.v(h_)
            # compute attention
            b, c, h, w = q.shape
            q = q.reshape(b, c, h * w)
            q = q.permute(0, 2, 1)   # b,hw,c
            k = k.reshape(b, c, h * w)  # b,c,hw
            w_ = torch.bmm(q, k)     # b,hw,hw    w[b,i,j]=sum_c q[b,i,c]k[b,c,j]
            w_ = w_ * (int(c) ** (-0.5))
            w_ = torch.nn.functional.softmax(w_, dim=2)
            # attend to values
            v = v.reshape(b, c, h * w)
            w_ = w_.permute(0, 2, 1)   # b,hw,hw (first hw of k, second of q)
            h_ = torch.bmm(v, w_)     # b, c,hw (hw of q) h_[b,c,j] = sum_i v[b,c,i] w_[b,i,j]
            h_ = h_.reshape(b, c, h, w)
            h_ = self.proj_out(h_)
            return x + h_

    def make_attn(in_channels, attn_type="vanilla"):
        assert attn_type in ["vanilla", "linear", "none"], f'attn_type {attn_type} unknown'
        if attn_type == "vanilla":
            return AttnBlock(in_channels)
        return nn.Identity(in_channels)

    class Encoder(nn.Module):
        def __init__(self, *, ch, out_ch, ch_mult=(1, 2, 4, 8), num_res_blocks, attn_resolutions, dropout=0.0,
                     resamp_with_conv=True, in_channels, resolution, z_channels, double_z=True, use_linear_attn=False,
                     attn_type="vanilla", **ignore_kwargs):
            super().__init__()
            if use_linear_attn:
                attn_type = "linear"
            self.ch = ch
            self.temb_ch = 0
            self.num_resolutions = len(ch_mult)
            self.num_res_blocks = num_res_blocks
            self.resolution = resolution
            self.in_channels = in_channels
            # downsampling
            self.conv_in = torch.nn.Conv2d(in_channels, self.ch, kernel_size=3, stride=1, padding=1)
            curr_res = resolution
            in_ch_mult = (1,) + tuple(ch_mult)
            self.in_ch_mult = in_ch_mult
            self.down = nn.ModuleList()
            for i_level in range(self.num_resolutions):
                block = nn.ModuleList()
                attn = nn.ModuleList()
                block_in = ch * in_ch_mult[i_level]
                block_out = ch * ch_mult[i_level]
                for i_block in range(self.num_res_blocks):
                    block.append(ResnetBlock(in_channels=block_in, out_channels=block_out,
                                             temb_channels=self.temb_ch, dropout=dropout))
                    block_in = block_out
                    if curr_res in attn_resolutions:
                        attn.append(make_attn(block_in, attn_type=attn_type))
                down = nn.Module()
                down.block = block
                down.attn = attn
                if i_level != self.num_resolutions - 1:
                    down.downsample = Downsample(block_in, resamp_with_conv)
                    curr_res = curr_res // 2
                self.down.append(down)
            # middle
            self.mid = nn.Module()
            self.mid.block_1 = ResnetBlock(in_channels=block_in, out_channels=block_in, temb_channels=self.temb_ch,
                                           dropout=dropout)
            self.mid.attn_1 = make_attn(block_in, attn_type=attn_type)
            self.mid.block_2 = ResnetBlock(in_channels=block_in, out_channels=block_in, temb_channels=self.temb_ch,
                                           dropout=dropout)
            # end
            self.norm_out = Normalize(block_in)
            self.conv_out = torch.nn.Conv2d(block_in, 2 * z_channels if double_z else z_channels, kernel_size=3,
                                            stride=1, padding=1)

        def forward(self, x):
            # timestep embedding
            temb = None
            # downsampling
            hs = [self.conv_in(x)]
            for i_level in range(self.num_resolutions):
                for i_block in range(self.num_res_blocks):
                    h = self.down[i_level].block[i_block](hs[-1], temb)
                    if len(self.down[i_level].attn) > 0:
                        h = self.down[i_level].attn[i_block](h)
                    hs.append(h)
                if i_level != self.num_resolutions - 1:
                    hs.append(self.down[i_level].downsample(hs[-1]))
            # middle
            h = hs[-1]
            h = self.mid.block_1(h, temb)
            h = self.mid.attn_1(h)
            h = self.mid.block_2(h, temb)
            # end
            h = self.norm_out(h)
            h = nonlinearity(h)
            h = self.conv_out(h)
            return h

    class Decoder(nn.Module):
        def __init__(self, *, ch, out_ch, ch_mult=(1, 2, 4, 8), num_res_blocks, attn_resolutions, dropout=0.0,
                     resamp_with_conv=True, in_channels, resolution, z_channels, give_pre_end=False, tanh_out=False,
                     use_linear_attn=False, attn_type="vanilla", **ignorekwargs):
            super().__init__()
            if use_linear_attn:
                attn_type = "linear"
            self.ch = ch
            self.temb_ch = 0
            self.num_resolutions = len(ch_mult)
            self.num_res_blocks = num_res_blocks
            self.resolution = resolution
            self.in_channels = in_channels
            self.give_pre_end = give_pre_end
            self.tanh_out = tanh_out
            # compute in_ch_mult, block_in and curr_res at lowest res
            block_in = ch * ch_mult[self.num_resolutions - 1]
            curr_res = resolution // 2 ** (self.num_resolutions - 1)
            self.z_shape = (1, z_channels, curr_res, curr_res)
            # z to block_in
            self.conv_in = torch.nn.Conv2d(z_channels, block_in, kernel_size=3, stride=1, padding=1)
            # middle
            self.mid = nn.Module()
            self.mid.block_1 = ResnetBlock(in_channels=block_in, out_channels=block_in, temb_channels=self.temb_ch,
                                           dropout=dropout)
            self.mid.attn_1 = make_attn(block_in, attn_type=attn_type)
            self.mid.block_2 = ResnetBlock(in_channels=block_in, out_channels=block_in, temb_channels=self.temb_ch,
                                           dropout=dropout)
            # upsampling
            self.up = nn.ModuleList()
            for i_level in reversed(range(self.num_resolutions)):
                block = nn.ModuleList()
                attn = nn.ModuleList()
                block_out = ch * ch_mult[i_level]
                for i_block in range(self.num_res_blocks + 1):
                    block.append(ResnetBlock(in_channels=block_in, out_channels=block_out,
                                             temb_channels=self.temb_ch, dropout=dropout))
                    block_in = block_out
                    if curr_res in attn_resolutions:
                        attn.append(make_attn(block_in, attn_type=attn_type))
                up = nn.Module()
                up.block = block
                up.attn = attn
                if i_level != 0:
                    up.upsample = Upsample(block_in, resamp_with_conv)
                    curr_res = curr_res * 2
                self.up.insert(0, up)  # prepend to get consistent order
            # end
            self.norm_out = Normalize(block_in)
            self.conv_out = torch.nn.Conv2d(block_in, out_ch, kernel_size=3, stride=1, padding=1)

        def forward(self, z):
            self.last_z_shape = z.shape
            # timestep embedding
            temb = None
            # z to block_in
            h = self.conv_in(z)
            # middle
            h = self.mid.block_1(h, temb)
            h = self.mid.attn_1(h)
            h = self.mid.block_2(h, temb)
            # upsampling
            for i_level in reversed(range(self.num_resolutions)):
                for i_block in range(self.num_res_blocks + 1):
                    h = self.up[i_level].block[i_block](h, temb)
                    if len(self.up[i_level].attn) > 0:
                        h = self.up[i_level].attn[i_block](h)
                if i_level != 0:
                    h = self.up[i_level].upsample(h)
            # end
            if self.give_pre_end:
                return h
            h = self.norm_out(h)
            h = nonlinearity(h)
            h = self.conv_out(h)
            if self.tanh_out:
                h = torch.tanh(h)
            return h

    class DiagonalGaussianDistribution(object):
        def __init__(self, parameters, deterministic=False):
            self.parameters = parameters
            self.mean, self.logvar = torch.chunk(parameters, 2, dim=1)
            self.logvar = torch.clamp(self.logvar, -30.0, 20.0)
            self.deterministic = deterministic
            self.std = torch.exp(0.5 * self.logvar)
            self.var = torch.exp(self.logvar)
            if self.deterministic:
                self.var = self.std = torch.zeros_like(self.mean).to(device=self.parameters.device)

        def sample(self, noise=None):
            if noise is None:  # the reference's draw; the probe feeds it
                noise = torch.randn(self.mean.shape).to(device=self.parameters.device)
            x = self.mean + self.std * noise
            return x

        def kl(self, other=None):
            if self.deterministic:
                return torch.Tensor([0.])
            else:
                if other is None:
                    return 0.5 * torch.sum(torch.pow(self.mean, 2) + self.var - 1.0 - self.logvar, dim=[1, 2, 3])
                else:
                    return 0.5 * torch.sum(
                        torch.pow(self.mean - other.mean, 2) / other.var
                        + self.var / other.var - 1.0 - self.logvar + other.logvar,
                        dim=[1, 2, 3])

        def nll(self, sample, dims=[1, 2, 3]):
            if self.deterministic:
                return torch.Tensor([0.])
            logtwopi = np.log(2.0 * np.pi)
            return 0.5 * torch.sum(logtwopi + self.logvar + torch.pow(sample - self.mean, 2) / self.var, dim=dims)

        def mode(self):
            return self.mean

    class AutoencoderKL(nn.Module):  # a LightningModule in the reference
        def __init__(self, ddconfig, embed_dim, ckpt_path=None, ignore_keys=[], image_key="image"):
            super().__init__()
            self.image_key = image_key
            self.encoder = Encoder(**ddconfig)
            self.decoder = Decoder(**ddconfig)
            assert ddconfig["double_z"]
            self.quant_conv = torch.nn.Conv2d(2 * ddconfig["z_channels"], 2 * embed_dim, 1)
            self.post_quant_conv = torch.nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
            self.embed_dim = embed_dim

        def encode(self, x):
            h = self.encoder(x)
            moments = self.quant_conv(h)
            posterior = DiagonalGaussianDistribution(moments)
            return posterior

        def decode(self, z):
            z = self.post_quant_conv(z)
            dec = self.decoder(z)
            return dec

        def forward(self, input, sample_posterior=True, noise=None):
            posterior = self.encode(input)
            if sample_posterior:
                z = posterior.sample(noise)
            else:
                z = posterior.mode()
            dec = self.decode(z)
            return dec, posterior

    class LPIPSWithDiscriminator(nn.Module):
        """contperceptual.py's loss for the steps before ``disc_start`` with ``perceptual_weight=0``: the NLL of
        the L1 reconstruction under a learned ``logvar`` and the weighted KL."""

        def __init__(self, disc_start, logvar_init=0.0, kl_weight=1.0, pixelloss_weight=1.0):
            super().__init__()
            self.kl_weight = kl_weight
            self.pixel_weight = pixelloss_weight
            # output log variance
            self.logvar = nn.Parameter(torch.ones(size=()) * logvar_init)

        def forward(self, inputs, reconstructions, posteriors, optimizer_idx, global_step, weights=None,
                    split="train"):
            rec_loss = torch.abs(inputs.contiguous() - reconstructions.contiguous())
            nll_loss = rec_loss / torch.exp(self.logvar) + self.logvar
            weighted_nll_loss = nll_loss
            if weights is not None:
                weighted_nll_loss = weights * nll_loss
            weighted_nll_loss = torch.sum(weighted_nll_loss) / weighted_nll_loss.shape[0]
            nll_loss = torch.sum(nll_loss) / nll_loss.shape[0]
            kl_loss = posteriors.kl()
            kl_loss = torch.sum(kl_loss) / kl_loss.shape[0]
            loss = weighted_nll_loss + self.kl_weight * kl_loss
            log = {"{}/total_loss".format(split): loss.clone().detach().mean(),
                   "{}/logvar".format(split): self.logvar.detach(),
                   "{}/kl_loss".format(split): kl_loss.detach().mean(),
                   "{}/nll_loss".format(split): nll_loss.detach().mean(),
                   "{}/rec_loss".format(split): rec_loss.detach().mean()}
            return loss, log

    return dict(locals())


DDCONFIG = dict(double_z=True, z_channels=2, resolution=8, in_channels=3, out_ch=3, ch=8, ch_mult=(1, 2),
                num_res_blocks=1, attn_resolutions=[8], dropout=0.0)
"""kl-f8's config at tiny sizes: f = 2 here (8 x 8 images to 4 x 4 x 2 latents), attention at the top resolution."""


def autoencoder_kl(torch, nn, F):
    """``AutoencoderKL`` with ``DDCONFIG`` and its loss (``embed_dim`` = z_channels, as kl-f8)."""
    m = autoencoder_modules(torch, nn, F)
    model = m["AutoencoderKL"](DDCONFIG, embed_dim=2)
    model.loss = m["LPIPSWithDiscriminator"](disc_start=50001, kl_weight=1e-2, logvar_init=0.0)
    return model
