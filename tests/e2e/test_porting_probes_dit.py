"""Porting probe: DiT (facebookresearch/DiT's models.py, diffusion/gaussian_diffusion.py and train.py, small), written
once as that code writes it (``torch`` is ``torch`` or ``kiln``) and run in both from kiln's initial weights: the first
forward, the first gradients, the losses, the state after a few AdamW steps and the EMA agree to 1e-10 in float64,
eagerly and with the whole step (zero_grad, the diffusion loss, backward, AdamW, ``update_ema``) one
``kiln.compile(fullgraph=True)`` graph against torch's eager loop; float32 (how DiT trains) at float32's level.

What is in it: ``TimestepEmbedder`` (``torch.exp(-math.log(max_period) * torch.arange(start=0, end=half) / half)``,
``torch.cat([cos, sin])``), ``LabelEmbedder`` with class dropout (``torch.where(drop_ids, num_classes, labels)``; the
drop ids are fed as ``force_drop_ids``, the ``torch.rand`` path is checked for what it computes), timm's
``PatchEmbed`` (Conv2d with stride = patch, ``flatten(2).transpose(1, 2)``) and ``Attention`` (fused
``F.scaled_dot_product_attention``) and ``Mlp`` (GELU tanh), the 2-D sin-cos ``pos_embed`` from NumPy copied by
``self.pos_embed.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))`` into a frozen ``nn.Parameter``,
adaLN-Zero blocks (``modulate``, ``adaLN_modulation(c).chunk(6, dim=1)``, gates) with the zero init by
``nn.init.constant_``, xavier init of the patch conv through ``w.view([w.shape[0], -1])``, ``unpatchify`` by
``x.reshape(shape=...)`` and ``torch.einsum('nhwpqc->nchpwq')``, learned sigma (``torch.split`` of the output, the
frozen mean by ``detach`` + ``cat``), the loss ``mse + vb`` (``normal_kl``, the discretized Gaussian decoder NLL by
nested ``torch.where`` at t = 0, NumPy schedules gathered by ``_extract_into_tensor``: ``th.from_numpy(arr)[t].float()``,
``res[..., None]``, ``+ th.zeros(shape)``), NumPy float64 scalars times tensors (``np.sqrt(2.0 / np.pi) * (...)``), and
the EMA (``deepcopy``, ``requires_grad`` False, ``OrderedDict(named_parameters())``,
``ema_params[name].mul_(decay).add_(param.data, alpha=1 - decay)`` under ``@torch.no_grad()``), and sample.py's
classifier-free guidance (``forward_with_cfg``: ``torch.split``, ``cat``; the null class; ``p_sample_loop`` with
``(t != 0).float().view(-1, *([1] * (len(x.shape) - 1)))``, its noise fed) with the EMA model, ``kiln.compile``d in
the compiled runs.

The reference embeds timesteps in float32 (``arange(..., dtype=torch.float32)``, ``t[:, None].float()``): with float64
weights torch refuses that input in the first Linear, and so does kiln (checked); the float64 runs embed in the default
dtype instead (``embed_dtype``), the one line a float64 user changes.

What broke: ``nn.init.xavier_uniform_(w.view([w.shape[0], -1]))`` of ``w = proj.weight.data`` raised in kiln (a
parameter's ``.data`` is a NumPy-backed ``TorchArray`` whose ``view`` took a dtype only; it now takes torch's shapes
too, tested below); the training probes write ``w.reshape(...)``, a view of the same memory in both. train.py's checkpoint (``"args": args``, an
``argparse.Namespace``) was refused by ``kiln.save``; it now pickles such a leaf and ``kiln.load`` treats it as
torch 2.13 does (``runtime/pickled_leaves.py``). Everything else agreed to 1e-10 as first written.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from copy import deepcopy

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries, require_torch

IMAGE, PATCH, CHANNELS, HIDDEN, DEPTH, HEADS, CLASSES, FREQ_DIM, STEPS_T, BATCH = 8, 2, 2, 16, 2, 2, 5, 16, 50, 4


def get_2d_sincos_pos_embed(embed_dim, grid_size):
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0)
    grid = grid.reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
    omega = np.arange(embed_dim // 2, dtype=np.float64)
    omega /= embed_dim / 2.
    omega = 1. / 10000**omega
    pos = pos.reshape(-1)
    out = np.einsum('m,d->md', pos, omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def dit(torch, nn, F, embed_dtype=None, class_dropout_prob=0.1, fused_attn=True, data_view_by_reshape=True):
    """DiT as models.py writes it (timm's PatchEmbed, Attention and Mlp inlined); ``embed_dtype`` None is the
    reference's float32 timestep embedding; ``data_view_by_reshape`` writes ``w.reshape`` for the reference's
    ``w.view`` of the patch conv's ``weight.data`` (see ``test_patch_embed_xavier_init_through_data_view``)."""

    def modulate(x, shift, scale):
        return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)

    class TimestepEmbedder(nn.Module):
        def __init__(self, hidden_size, frequency_embedding_size=256):
            super().__init__()
            self.mlp = nn.Sequential(
                nn.Linear(frequency_embedding_size, hidden_size, bias=True),
                nn.SiLU(),
                nn.Linear(hidden_size, hidden_size, bias=True),
            )
            self.frequency_embedding_size = frequency_embedding_size

        @staticmethod
        def timestep_embedding(t, dim, max_period=10000):
            half = dim // 2
            dtype = embed_dtype or torch.float32
            freqs = torch.exp(
                -math.log(max_period) * torch.arange(start=0, end=half, dtype=dtype) / half
            ).to(device=t.device)
            args = t[:, None].to(dtype) * freqs[None]
            embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
            if dim % 2:
                embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
            return embedding

        def forward(self, t):
            t_freq = self.timestep_embedding(t, self.frequency_embedding_size)
            return self.mlp(t_freq)

    class LabelEmbedder(nn.Module):
        def __init__(self, num_classes, hidden_size, dropout_prob):
            super().__init__()
            use_cfg_embedding = dropout_prob > 0
            self.embedding_table = nn.Embedding(num_classes + use_cfg_embedding, hidden_size)
            self.num_classes = num_classes
            self.dropout_prob = dropout_prob

        def token_drop(self, labels, force_drop_ids=None):
            if force_drop_ids is None:
                drop_ids = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
            else:
                drop_ids = force_drop_ids == 1
            labels = torch.where(drop_ids, self.num_classes, labels)
            return labels

        def forward(self, labels, train, force_drop_ids=None):
            use_dropout = self.dropout_prob > 0
            if (train and use_dropout) or (force_drop_ids is not None):
                labels = self.token_drop(labels, force_drop_ids)
            return self.embedding_table(labels)

    class PatchEmbed(nn.Module):
        def __init__(self, img_size, patch_size, in_chans, embed_dim, bias=True):
            super().__init__()
            self.patch_size = (patch_size, patch_size)
            self.num_patches = (img_size // patch_size) ** 2
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, bias=bias)
            self.norm = nn.Identity()

        def forward(self, x):
            x = self.proj(x)
            x = x.flatten(2).transpose(1, 2)  # NCHW -> NLC
            return self.norm(x)

    class Attention(nn.Module):
        def __init__(self, dim, num_heads=8, qkv_bias=False, attn_drop=0., proj_drop=0.):
            super().__init__()
            self.num_heads = num_heads
            self.head_dim = dim // num_heads
            self.scale = self.head_dim ** -0.5
            self.fused_attn = fused_attn
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.q_norm, self.k_norm = nn.Identity(), nn.Identity()
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            q, k = self.q_norm(q), self.k_norm(k)
            if self.fused_attn:
                x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop.p if self.training else 0.)
            else:
                q = q * self.scale
                attn = q @ k.transpose(-2, -1)
                attn = attn.softmax(dim=-1)
                attn = self.attn_drop(attn)
                x = attn @ v
            x = x.transpose(1, 2).reshape(B, N, C)
            return self.proj_drop(self.proj(x))

    class Mlp(nn.Module):
        def __init__(self, in_features, hidden_features, act_layer, drop=0.):
            super().__init__()
            self.fc1 = nn.Linear(in_features, hidden_features)
            self.act = act_layer()
            self.drop1 = nn.Dropout(drop)
            self.norm = nn.Identity()
            self.fc2 = nn.Linear(hidden_features, in_features)
            self.drop2 = nn.Dropout(drop)

        def forward(self, x):
            x = self.drop1(self.act(self.fc1(x)))
            return self.drop2(self.fc2(self.norm(x)))

    class DiTBlock(nn.Module):
        def __init__(self, hidden_size, num_heads, mlp_ratio=4.0):
            super().__init__()
            self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            self.attn = Attention(hidden_size, num_heads=num_heads, qkv_bias=True)
            self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            mlp_hidden_dim = int(hidden_size * mlp_ratio)
            approx_gelu = lambda: nn.GELU(approximate="tanh")  # noqa: E731 (as models.py writes it)
            self.mlp = Mlp(in_features=hidden_size, hidden_features=mlp_hidden_dim, act_layer=approx_gelu, drop=0)
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 6 * hidden_size, bias=True))

        def forward(self, x, c):
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
            x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
            x = x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
            return x

    class FinalLayer(nn.Module):
        def __init__(self, hidden_size, patch_size, out_channels):
            super().__init__()
            self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels, bias=True)
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size, bias=True))

        def forward(self, x, c):
            shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
            x = modulate(self.norm_final(x), shift, scale)
            return self.linear(x)

    class DiT(nn.Module):
        def __init__(self, input_size=IMAGE, patch_size=PATCH, in_channels=CHANNELS, hidden_size=HIDDEN, depth=DEPTH,
                     num_heads=HEADS, mlp_ratio=4.0, class_dropout_prob=class_dropout_prob, num_classes=CLASSES,
                     learn_sigma=True):
            super().__init__()
            self.learn_sigma = learn_sigma
            self.in_channels = in_channels
            self.out_channels = in_channels * 2 if learn_sigma else in_channels
            self.patch_size = patch_size
            self.num_heads = num_heads
            self.x_embedder = PatchEmbed(input_size, patch_size, in_channels, hidden_size, bias=True)
            self.t_embedder = TimestepEmbedder(hidden_size, FREQ_DIM)
            self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob)
            num_patches = self.x_embedder.num_patches
            # Will use fixed sin-cos embedding:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches, hidden_size), requires_grad=False)
            self.blocks = nn.ModuleList([DiTBlock(hidden_size, num_heads, mlp_ratio=mlp_ratio) for _ in range(depth)])
            self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels)
            self.initialize_weights()

        def initialize_weights(self):
            def _basic_init(module):
                if isinstance(module, nn.Linear):
                    torch.nn.init.xavier_uniform_(module.weight)
                    if module.bias is not None:
                        nn.init.constant_(module.bias, 0)
            self.apply(_basic_init)
            pos_embed = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], int(self.x_embedder.num_patches ** 0.5))
            self.pos_embed.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))
            w = self.x_embedder.proj.weight.data
            if data_view_by_reshape:  # see test_patch_embed_xavier_init_through_data_view
                nn.init.xavier_uniform_(w.reshape([w.shape[0], -1]))
            else:
                nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
            nn.init.constant_(self.x_embedder.proj.bias, 0)
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
            nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
            nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
            for block in self.blocks:
                nn.init.constant_(block.adaLN_modulation[-1].weight, 0)
                nn.init.constant_(block.adaLN_modulation[-1].bias, 0)
            nn.init.constant_(self.final_layer.adaLN_modulation[-1].weight, 0)
            nn.init.constant_(self.final_layer.adaLN_modulation[-1].bias, 0)
            nn.init.constant_(self.final_layer.linear.weight, 0)
            nn.init.constant_(self.final_layer.linear.bias, 0)

        def unpatchify(self, x):
            c = self.out_channels
            p = self.x_embedder.patch_size[0]
            h = w = int(x.shape[1] ** 0.5)
            assert h * w == x.shape[1]
            x = x.reshape(shape=(x.shape[0], h, w, p, p, c))
            x = torch.einsum('nhwpqc->nchpwq', x)
            return x.reshape(shape=(x.shape[0], c, h * p, h * p))

        def forward(self, x, t, y, force_drop_ids=None):
            x = self.x_embedder(x) + self.pos_embed  # (N, T, D), where T = H * W / patch_size ** 2
            t = self.t_embedder(t)                   # (N, D)
            y = self.y_embedder(y, self.training, force_drop_ids)  # (N, D)
            c = t + y
            for block in self.blocks:
                x = block(x, c)
            x = self.final_layer(x, c)  # (N, T, patch_size ** 2 * out_channels)
            return self.unpatchify(x)

        def forward_with_cfg(self, x, t, y, cfg_scale):
            # https://github.com/openai/glide-text2im/blob/main/notebooks/text2im.ipynb
            half = x[: len(x) // 2]
            combined = torch.cat([half, half], dim=0)
            model_out = self.forward(combined, t, y)
            # By default, we apply classifier-free guidance on only three channels, as the reference.
            eps, rest = model_out[:, :3], model_out[:, 3:]
            cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
            half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
            eps = torch.cat([half_eps, half_eps], dim=0)
            return torch.cat([eps, rest], dim=1)

    return DiT()


# --- diffusion/gaussian_diffusion.py: the learned-range-variance loss (LossType.MSE, ModelVarType.LEARNED_RANGE) ----


def gaussian_diffusion(th, num_timesteps=STEPS_T, betas=None):
    def mean_flat(tensor):
        return tensor.mean(dim=list(range(1, len(tensor.shape))))

    def normal_kl(mean1, logvar1, mean2, logvar2):
        tensor = None
        for obj in (mean1, logvar1, mean2, logvar2):
            if isinstance(obj, th.Tensor):
                tensor = obj
                break
        assert tensor is not None, "at least one argument must be a Tensor"
        logvar1, logvar2 = [x if isinstance(x, th.Tensor) else th.tensor(x).to(tensor) for x in (logvar1, logvar2)]
        return 0.5 * (-1.0 + logvar2 - logvar1 + th.exp(logvar1 - logvar2)
                      + ((mean1 - mean2) ** 2) * th.exp(-logvar2))

    def approx_standard_normal_cdf(x):
        return 0.5 * (1.0 + th.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * th.pow(x, 3))))

    def discretized_gaussian_log_likelihood(x, *, means, log_scales):
        assert x.shape == means.shape == log_scales.shape
        centered_x = x - means
        inv_stdv = th.exp(-log_scales)
        plus_in = inv_stdv * (centered_x + 1.0 / 255.0)
        cdf_plus = approx_standard_normal_cdf(plus_in)
        min_in = inv_stdv * (centered_x - 1.0 / 255.0)
        cdf_min = approx_standard_normal_cdf(min_in)
        log_cdf_plus = th.log(cdf_plus.clamp(min=1e-12))
        log_one_minus_cdf_min = th.log((1.0 - cdf_min).clamp(min=1e-12))
        cdf_delta = cdf_plus - cdf_min
        log_probs = th.where(x < -0.999, log_cdf_plus,
                             th.where(x > 0.999, log_one_minus_cdf_min, th.log(cdf_delta.clamp(min=1e-12))))
        assert log_probs.shape == x.shape
        return log_probs

    def _extract_into_tensor(arr, timesteps, broadcast_shape):
        res = th.from_numpy(arr).to(device=timesteps.device)[timesteps].float()
        while len(res.shape) < len(broadcast_shape):
            res = res[..., None]
        return res + th.zeros(broadcast_shape, device=timesteps.device)

    class GaussianDiffusion:
        def __init__(self, betas):
            self.betas = betas = np.array(betas, dtype=np.float64)
            self.num_timesteps = int(betas.shape[0])
            alphas = 1.0 - betas
            self.alphas_cumprod = np.cumprod(alphas, axis=0)
            self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
            self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
            self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
            self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
            self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
            self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
            self.posterior_log_variance_clipped = np.log(
                np.append(self.posterior_variance[1], self.posterior_variance[1:]))
            self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
            self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

        def q_sample(self, x_start, t, noise):
            return (_extract_into_tensor(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
                    + _extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

        def q_posterior_mean_variance(self, x_start, x_t, t):
            posterior_mean = (_extract_into_tensor(self.posterior_mean_coef1, t, x_t.shape) * x_start
                              + _extract_into_tensor(self.posterior_mean_coef2, t, x_t.shape) * x_t)
            posterior_variance = _extract_into_tensor(self.posterior_variance, t, x_t.shape)
            posterior_log_variance_clipped = _extract_into_tensor(self.posterior_log_variance_clipped, t, x_t.shape)
            return posterior_mean, posterior_variance, posterior_log_variance_clipped

        def _predict_xstart_from_eps(self, x_t, t, eps):
            return (_extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
                    - _extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps)

        def p_mean_variance(self, model, x, t, clip_denoised=True, model_kwargs=None):
            B, C = x.shape[:2]
            model_output = model(x, t, **(model_kwargs or {}))
            assert model_output.shape == (B, C * 2, *x.shape[2:])
            model_output, model_var_values = th.split(model_output, C, dim=1)
            min_log = _extract_into_tensor(self.posterior_log_variance_clipped, t, x.shape)
            max_log = _extract_into_tensor(np.log(self.betas), t, x.shape)
            frac = (model_var_values + 1) / 2  # model_var_values is [-1, 1] for [min_var, max_var]
            model_log_variance = frac * max_log + (1 - frac) * min_log
            pred_xstart = self._predict_xstart_from_eps(x_t=x, t=t, eps=model_output)
            if clip_denoised:
                pred_xstart = pred_xstart.clamp(-1, 1)
            model_mean, _, _ = self.q_posterior_mean_variance(x_start=pred_xstart, x_t=x, t=t)
            return {"mean": model_mean, "log_variance": model_log_variance, "pred_xstart": pred_xstart}

        def _vb_terms_bpd(self, model, x_start, x_t, t, clip_denoised=True, model_kwargs=None):
            true_mean, _, true_log_variance_clipped = self.q_posterior_mean_variance(x_start=x_start, x_t=x_t, t=t)
            out = self.p_mean_variance(model, x_t, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
            kl = normal_kl(true_mean, true_log_variance_clipped, out["mean"], out["log_variance"])
            kl = mean_flat(kl) / np.log(2.0)
            decoder_nll = -discretized_gaussian_log_likelihood(
                x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])
            decoder_nll = mean_flat(decoder_nll) / np.log(2.0)
            # At the first timestep return the decoder NLL, otherwise return KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))
            output = th.where((t == 0), decoder_nll, kl)
            return {"output": output, "pred_xstart": out["pred_xstart"]}

        def p_sample(self, model, x, t, clip_denoised=True, model_kwargs=None, noise=None):
            out = self.p_mean_variance(model, x, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs)
            if noise is None:  # the probe feeds it: kiln's generator draws other numbers than torch's
                noise = th.randn_like(x)
            nonzero_mask = (t != 0).float().view(-1, *([1] * (len(x.shape) - 1)))  # no noise when t == 0
            sample = out["mean"] + nonzero_mask * th.exp(0.5 * out["log_variance"]) * noise
            return {"sample": sample, "pred_xstart": out["pred_xstart"]}

        def p_sample_loop(self, model, shape, noise, clip_denoised=True, model_kwargs=None, step_noises=()):
            img = noise
            indices = list(range(self.num_timesteps))[::-1]
            for i, step_noise in zip(indices, step_noises):
                t = th.tensor([i] * shape[0])
                with th.no_grad():
                    out = self.p_sample(model, img, t, clip_denoised=clip_denoised, model_kwargs=model_kwargs,
                                        noise=step_noise)
                    img = out["sample"]
            return img

        def training_losses(self, model, x_start, t, model_kwargs=None, noise=None):
            if model_kwargs is None:
                model_kwargs = {}
            if noise is None:
                noise = th.randn_like(x_start)
            x_t = self.q_sample(x_start, t, noise=noise)
            terms = {}
            model_output = model(x_t, t, **model_kwargs)
            B, C = x_t.shape[:2]
            assert model_output.shape == (B, C * 2, *x_t.shape[2:])
            model_output, model_var_values = th.split(model_output, C, dim=1)
            # Learn the variance using the variational bound, but don't let it affect our mean prediction.
            frozen_out = th.cat([model_output.detach(), model_var_values], dim=1)
            terms["vb"] = self._vb_terms_bpd(model=lambda *args, r=frozen_out: r, x_start=x_start, x_t=x_t, t=t,
                                             clip_denoised=False)["output"]
            target = noise
            assert model_output.shape == target.shape == x_start.shape
            terms["mse"] = mean_flat((target - model_output) ** 2)
            terms["loss"] = terms["mse"] + terms["vb"]
            return terms

    scale = 1000 / num_timesteps  # get_named_beta_schedule("linear", ...)
    return GaussianDiffusion(np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)
                             if betas is None else betas)


# --- train.py ---------------------------------------------------------------------------------------------------------


def update_ema(torch, ema_model, model, decay=0.9999):
    @torch.no_grad()
    def update():
        ema_params = OrderedDict(ema_model.named_parameters())
        model_params = OrderedDict(model.named_parameters())
        for name, param in model_params.items():
            ema_params[name].mul_(decay).add_(param.data, alpha=1 - decay)

    update()


def requires_grad(model, flag=True):
    for p in model.parameters():
        p.requires_grad = flag


def _data(steps, dtype=np.float64):
    rng = np.random.default_rng(0)
    x = np.tanh(rng.standard_normal((BATCH, CHANNELS, IMAGE, IMAGE))).astype(dtype)
    y = rng.integers(0, CLASSES, BATCH)
    timesteps = rng.integers(0, STEPS_T, (steps, BATCH))
    timesteps[:, 0] = 0  # the decoder-NLL branch of th.where in every batch
    noises = rng.standard_normal((steps, BATCH, CHANNELS, IMAGE, IMAGE)).astype(dtype)
    drop_ids = (rng.random((steps, BATCH)) < 0.3).astype(np.int64)
    drop_ids[:, 1] = 1  # the null class in every batch
    return x, y, timesteps, noises, drop_ids


def train_dit(steps=3, decay=0.9, compiled=False, dtype=np.float64):
    """train.py's loop (AdamW lr 1e-4 as the reference, here 3e-3 so that a few steps move the zero-initialised
    layers), the EMA started at the model's weights (``update_ema(ema, model, decay=0)``); with ``compiled`` kiln's
    whole step is one ``kiln.compile(fullgraph=True)`` graph."""
    x, y, timesteps, noises, drop_ids = _data(steps, dtype)

    def train(torch, nn, F, model):
        diffusion = gaussian_diffusion(torch)
        ema = deepcopy(model)
        requires_grad(ema, False)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0)
        update_ema(torch, ema, model, decay=0)
        model.train()
        ema.eval()
        record = {"losses": []}

        def train_step(x, t, y, noise, force_drop_ids):
            model_kwargs = dict(y=y, force_drop_ids=force_drop_ids)
            loss_dict = diffusion.training_losses(model, x, t, model_kwargs, noise=noise)
            loss = loss_dict["loss"].mean()
            opt.zero_grad()
            loss.backward()
            if not compiled:
                record.setdefault("grads", gradients(model))
            opt.step()
            update_ema(torch, ema, model, decay)
            return loss

        run = kiln.compile(train_step, fullgraph=True) if compiled and torch is kiln else train_step
        with torch.no_grad():
            record["first_output"] = array(model(torch.tensor(x), torch.tensor(timesteps[0]), torch.tensor(y)))
        for step in range(steps):
            loss = run(torch.tensor(x), torch.tensor(timesteps[step]), torch.tensor(y), torch.tensor(noises[step]),
                       torch.tensor(drop_ids[step]))
            record["losses"].append(loss.item())
        record["state"], record["ema"] = snapshot(model), snapshot(ema)
        with torch.no_grad():
            record["ema_output"] = array(ema(torch.tensor(x), torch.tensor(timesteps[-1]), torch.tensor(y)))
        record["samples"] = sample_with_cfg(torch, ema, compiled)
        return record

    return train


def sample_with_cfg(torch, model, compiled, class_labels=(1, 3), cfg_scale=4.0):
    """sample.py: classifier-free guidance by ``model.forward_with_cfg`` over the doubled batch (the null class
    appended), ``p_sample_loop`` (here a 4-step schedule, its noise fed), ``samples.chunk(2, dim=0)``; with
    ``compiled`` kiln's ``forward_with_cfg`` is ``kiln.compile``d (as ``torch.compile(model.forward_with_cfg)``)."""
    rng = np.random.default_rng(5)
    dtype = torch.get_default_dtype()
    n = len(class_labels)
    z = torch.tensor(rng.standard_normal((n, CHANNELS, IMAGE, IMAGE))).to(dtype)
    step_noises = [torch.tensor(rng.standard_normal((2 * n, CHANNELS, IMAGE, IMAGE))).to(dtype) for _ in range(4)]
    y = torch.tensor(class_labels)
    z = torch.cat([z, z], 0)
    y_null = torch.tensor([CLASSES] * n)
    y = torch.cat([y, y_null], 0)
    model_kwargs = dict(y=y, cfg_scale=cfg_scale)
    diffusion = gaussian_diffusion(torch, betas=np.array([0.05, 0.1, 0.2, 0.3]))
    forward = kiln.compile(model.forward_with_cfg) if compiled and torch is kiln else model.forward_with_cfg
    samples = diffusion.p_sample_loop(forward, z.shape, z, clip_denoised=False, model_kwargs=model_kwargs,
                                      step_noises=step_noises)
    samples, _ = samples.chunk(2, dim=0)
    return array(samples)


def _dit_float64(torch, nn, F):
    return dit(torch, nn, F, embed_dtype=torch.float64)


def test_dit_trains_with_ema_as_torch(float64_default):
    ours, theirs = run_in_lockstep(_dit_float64, train_dit())
    assert_same_records(ours, theirs)
    assert ours["first_output"].dtype == theirs["first_output"].dtype == np.float64
    assert ours["first_output"].shape == (BATCH, 2 * CHANNELS, IMAGE, IMAGE)
    assert np.isfinite(theirs["losses"]).all() and np.abs(theirs["state"]["final_layer.linear.weight"]).max() > 1e-3
    assert np.abs(theirs["ema"]["final_layer.linear.weight"] - theirs["state"]["final_layer.linear.weight"]).max() > 0
    assert set(theirs["grads"]) == {name for name in theirs["state"] if name != "pos_embed"}


def _dit_float64_math_attention(torch, nn, F):
    return dit(torch, nn, F, embed_dtype=torch.float64, fused_attn=False)


@pytest.mark.parametrize("build", [_dit_float64, _dit_float64_math_attention],
                         ids=["fused attention", "timm's math attention"])
def test_dit_compiled_step_with_ema_as_torch(float64_default, build):
    ours, theirs = run_in_lockstep(build, train_dit(compiled=True))
    assert_same_records(ours, theirs)


def test_dit_float32_as_torch():
    """DiT as written (float32 timestep embedding, float32 weights and data), the compiled step vs torch's eager loop,
    at float32's level."""
    ours, theirs = run_in_lockstep(dit, train_dit(compiled=True, dtype=np.float32))
    assert ours["ema_output"].dtype == theirs["ema_output"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6)


def test_reference_float32_timestep_embedding_with_float64_weights_is_refused_as_torch(float64_default):
    """The reference's float32 embedding fed to a float64 Linear: torch's RuntimeError, and kiln's."""
    messages = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        torch.manual_seed(0)
        model = dit(torch, nn, F)
        with pytest.raises(RuntimeError) as raised:
            model(torch.zeros(2, CHANNELS, IMAGE, IMAGE), torch.tensor([1, 2]), torch.tensor([0, 1]))
        messages.append(str(raised.value))
    assert "dtype" in messages[0] and "Double" in messages[1], messages


def test_label_dropout_by_rand_mask_as_torch():
    """``token_drop`` without forced ids: ``torch.rand(n) < p`` and ``torch.where(drop_ids, num_classes, labels)``
    give int64 labels in [0, num_classes], the null class at the drawn positions (p = 1 and p = 0 known)."""
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        embedder = dit(torch, nn, F, class_dropout_prob=0.5).y_embedder
        labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
        dropped = embedder.token_drop(labels)
        assert dropped.dtype == torch.int64 and tuple(dropped.shape) == (8,)
        kept = array(dropped) == array(labels)
        assert np.all(kept | (array(dropped) == CLASSES))
        embedder.dropout_prob = 1.0
        assert np.all(array(embedder.token_drop(labels)) == CLASSES)
        embedder.dropout_prob = 0.0
        assert np.all(array(embedder.token_drop(labels)) == array(labels))
        forced = embedder(labels, False, torch.tensor([1, 0, 0, 0, 0, 0, 0, 1]))
        np.testing.assert_array_equal(array(forced[0]), array(embedder.embedding_table.weight[CLASSES]))


def test_patch_embed_xavier_init_through_data_view():
    """models.py's ``w = self.x_embedder.proj.weight.data; nn.init.xavier_uniform_(w.view([w.shape[0], -1]))``
    initialises the conv weight in place (xavier bound of the flattened fan-in/fan-out)."""
    torch, nn, F = libraries("kiln")
    model = dit(torch, nn, F, data_view_by_reshape=False)
    weight = array(model.x_embedder.proj.weight)
    fan_in, fan_out = CHANNELS * PATCH * PATCH, HIDDEN
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    assert np.abs(weight).max() <= bound and np.abs(weight).max() > bound / 2


def test_train_checkpoint_and_find_model_as_torch(float64_default, tmp_path):
    """train.py's checkpoint (``{"model", "ema", "opt", "args"}`` with ``args`` an ``argparse.Namespace``) after a
    step, and sample.py's ``find_model``: ``torch.load(ckpt_path, map_location=lambda storage, loc: storage)`` is
    refused in both (torch 2.13's weights_only default meets the Namespace), with ``weights_only=False`` the EMA weights
    load into a fresh DiT (``checkpoint["ema"]``) and the optimizer state into a fresh AdamW, giving torch's outputs."""
    import argparse
    import pickle

    x, y, timesteps, noises, drop_ids = _data(1)
    outputs = {}
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        torch.manual_seed(0)
        kiln.manual_seed(0)
        model = _dit_float64(torch, nn, F)
        if name == "torch":
            model.load_state_dict({k: torch.tensor(v) for k, v in outputs["kiln initial"].items()})
        outputs[f"{name} initial"] = snapshot(model)
        ema = deepcopy(model)
        requires_grad(ema, False)
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0)
        loss = gaussian_diffusion(torch).training_losses(model, torch.tensor(x), torch.tensor(timesteps[0]),
                                                         dict(y=torch.tensor(y)), noise=torch.tensor(noises[0]))
        opt.zero_grad()
        loss["loss"].mean().backward()
        opt.step()
        update_ema(torch, ema, model, 0.5)
        args = argparse.Namespace(model="DiT-S/2", image_size=IMAGE, global_seed=0)
        checkpoint_path = f"{tmp_path}/{name}-0000001.pt"
        torch.save({"model": model.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "args": args},
                   checkpoint_path)
        with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
            torch.load(checkpoint_path, map_location=lambda storage, loc: storage)
        checkpoint = torch.load(checkpoint_path, map_location=lambda storage, loc: storage, weights_only=False)
        assert checkpoint["args"] == args
        restored = _dit_float64(torch, nn, F)
        restored.load_state_dict(checkpoint["ema"])
        restored_opt = torch.optim.AdamW(restored.parameters(), lr=3e-3, weight_decay=0)
        restored_opt.load_state_dict(checkpoint["opt"])
        with torch.no_grad():
            outputs[name] = array(restored.eval()(torch.tensor(x), torch.tensor(timesteps[0]), torch.tensor(y)))
        # kiln's optimizer state_dict holds NumPy arrays under str keys (frontend/optim.py), torch's tensors
        outputs[f"{name} exp_avg"] = [np.asarray(state["exp_avg"]) for state in restored_opt.state_dict()["state"].values()]
    np.testing.assert_allclose(outputs["kiln"], outputs["torch"], rtol=1e-10, atol=1e-12)
    for ours, theirs in zip(outputs["kiln exp_avg"], outputs["torch exp_avg"], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
