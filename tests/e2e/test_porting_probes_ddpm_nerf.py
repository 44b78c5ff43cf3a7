"""Porting probes: a DDPM and a NeRF, each written once as PyTorch users write them (``torch`` is ``torch`` or
``kiln``) and run in both from kiln's initial weights in float64: the first forward, the first gradients, the losses,
the state after a few steps and what is computed from it agree to 1e-10, eagerly and with the whole training step in one
``kiln.compile(fullgraph=True)`` graph against torch's eager loop.

- DDPM: a U-Net-lite noise predictor (GroupNorm, SiLU, a sinusoidal timestep embedding from
  ``torch.exp(-math.log(10000) * torch.arange(half) / half)`` and ``torch.cat([sin, cos])``, a strided conv down,
  self-attention by ``F.scaled_dot_product_attention`` at the low resolution, nearest ``F.interpolate`` up, a skip by
  ``cat``); the linear beta schedule as registered buffers (``cumprod``,
  ``F.pad(value=1.0)`` for the previous step's product), gathered at the timesteps by ``.gather`` + ``reshape`` and by
  indexing + ``.view(-1, 1, 1, 1)``; MSE to the noise; AdamW (``clip_grad_norm_`` in the compiled step), an EMA of the
  weights both by ``AveragedModel`` with ``get_ema_multi_avg_fn`` and by a hand-written ``lerp_`` under ``no_grad``;
  then reverse sampling steps under ``torch.no_grad()`` with either EMA model, clamped by ``clamp_``. The noise and
  timesteps (``torch.randn_like``, ``torch.randint``) are fed in: kiln's generator draws other numbers than torch's
  for the same seed.
- NeRF (nerf-pytorch's idioms): positional encoding (sin/cos of ``2.0 ** torch.arange(L) * x``), coarse and fine MLPs
  with a skip by ``cat``, volume rendering (``exp(-relu(sigma) * delta)``, ``torch.cumprod`` of ``1 - alpha`` shifted
  to be exclusive, both by ``cat`` of ones and by ``torch.roll`` + ``[..., 0] = 1.``), the weights summed to rgb,
  depth and opacity maps; hierarchical sampling (``sample_pdf``: ``cumsum``, ``searchsorted(right=True)``, ``gather``
  of expanded tables, ``where``; the samples ``detach``ed and ``sort``ed in); MSE to target colours, Adam with the lr
  decayed by hand through ``param_groups`` (between the compiled calls too), PSNR by ``torch.Tensor([10.])``.

What broke: ``AveragedModel.update_parameters(model)`` inside the compiled step raised a TypeError (``np.asarray`` of
a traced tensor; even without ``fullgraph``); it is now traced (``frontend/swa_traced.py``,
``tests/optim/test_swa_in_compiled_step_vs_torch.py``). ``kiln.compile(diffusion.p_sample)(x, t_index, noise)``
raised "batch input 1 is a 0-d array, which has no batch dim 0", then a TypeError from ``torch.full((B,), t_index)``
(``tests/runtime/test_compile_scalar_arguments_vs_torch.py``); it now gives torch's samples, but runs eagerly
(warned): kiln traces a Python int argument as a 0-d tensor, so ``if t_index == 0:`` cannot be traced, where
``torch.compile`` specialises the int and guards on it. Everything else agreed to 1e-10 as first written.
"""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot

# --- DDPM ------------------------------------------------------------------------------------------------------------

STEPS_T, IMAGE, BATCH = 20, 8, 3


def ddpm(torch, nn, F, base=8, time_dim=16):
    class SinusoidalPositionEmbeddings(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dim = dim

        def forward(self, time):
            half = self.dim // 2
            freqs = torch.exp(-math.log(10000) * torch.arange(half, device=time.device) / half)
            args = time[:, None] * freqs[None, :]
            return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)

    class ResBlock(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.norm1, self.conv1 = nn.GroupNorm(4, cin), nn.Conv2d(cin, cout, 3, padding=1)
            self.time_mlp = nn.Linear(time_dim, cout)
            self.norm2, self.conv2 = nn.GroupNorm(4, cout), nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

        def forward(self, x, temb):
            h = self.conv1(F.silu(self.norm1(x)))
            h = h + self.time_mlp(F.silu(temb))[:, :, None, None]
            h = self.conv2(F.silu(self.norm2(h)))
            return h + self.skip(x)

    class AttentionBlock(nn.Module):
        """Self-attention over the pixels (one head), as DDPM's at the low resolution: ``qkv`` by a 1x1 conv,
        ``F.scaled_dot_product_attention``, a zero-initialised output projection as the residual."""

        def __init__(self, channels):
            super().__init__()
            self.norm = nn.GroupNorm(4, channels)
            self.qkv = nn.Conv2d(channels, 3 * channels, 1)
            self.proj = nn.Conv2d(channels, channels, 1)
            nn.init.zeros_(self.proj.bias)

        def forward(self, x):
            b, c, h, w = x.shape
            q, k, v = self.qkv(self.norm(x)).reshape(b, 3, c, h * w).unbind(1)
            out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
            return x + self.proj(out.transpose(1, 2).reshape(b, c, h, w))

    class UNetLite(nn.Module):
        def __init__(self):
            super().__init__()
            self.time_embed = nn.Sequential(SinusoidalPositionEmbeddings(time_dim), nn.Linear(time_dim, time_dim),
                                            nn.SiLU(), nn.Linear(time_dim, time_dim))
            self.conv_in = nn.Conv2d(1, base, 3, padding=1)
            self.down = ResBlock(base, base)
            self.downsample = nn.Conv2d(base, base, 3, stride=2, padding=1)
            self.mid = ResBlock(base, 2 * base)
            self.mid_attention = AttentionBlock(2 * base)
            self.up = ResBlock(3 * base, base)
            self.out = nn.Sequential(nn.GroupNorm(4, base), nn.SiLU(), nn.Conv2d(base, 1, 3, padding=1))

        def forward(self, x, t):
            temb = self.time_embed(t)
            h1 = self.down(self.conv_in(x), temb)
            h2 = self.mid_attention(self.mid(self.downsample(h1), temb))
            h = F.interpolate(h2, scale_factor=2, mode="nearest")
            return self.out(self.up(torch.cat([h, h1], dim=1), temb))

    def extract(a, t, x_shape):
        batch_size = t.shape[0]
        out = a.gather(-1, t)
        return out.reshape(batch_size, *((1,) * (len(x_shape) - 1)))

    class GaussianDiffusion(nn.Module):
        def __init__(self, model, timesteps=STEPS_T):
            super().__init__()
            self.model, self.num_timesteps = model, timesteps
            betas = torch.linspace(1e-4, 0.02, timesteps)
            alphas = 1.0 - betas
            alphas_cumprod = torch.cumprod(alphas, dim=0)
            alphas_cumprod_prev = F.pad(alphas_cumprod[:-1], (1, 0), value=1.0)
            self.register_buffer("betas", betas)
            self.register_buffer("alphas_cumprod", alphas_cumprod)
            self.register_buffer("sqrt_recip_alphas", torch.sqrt(1.0 / alphas))
            self.register_buffer("sqrt_one_minus_alphas_cumprod", torch.sqrt(1.0 - alphas_cumprod))
            self.register_buffer("posterior_variance", betas * (1.0 - alphas_cumprod_prev) / (1.0 - alphas_cumprod))

        def q_sample(self, x_start, t, noise=None):
            if noise is None:
                noise = torch.randn_like(x_start)
            sqrt_alpha_bar = self.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
            return sqrt_alpha_bar * x_start + extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise

        def forward(self, x_start, t, noise=None):
            if noise is None:
                noise = torch.randn_like(x_start)
            predicted = self.model(self.q_sample(x_start, t, noise), t)
            return F.mse_loss(predicted, noise)

        @torch.no_grad()
        def p_sample(self, x, t_index, noise):
            t = torch.full((x.shape[0],), t_index, dtype=torch.long)
            betas_t = extract(self.betas, t, x.shape)
            mean = extract(self.sqrt_recip_alphas, t, x.shape) * (
                x - betas_t * self.model(x, t) / extract(self.sqrt_one_minus_alphas_cumprod, t, x.shape))
            if t_index == 0:
                return mean
            return mean + torch.sqrt(extract(self.posterior_variance, t, x.shape)) * noise

    return GaussianDiffusion(UNetLite())


def _ddpm_data(steps):
    rng = np.random.default_rng(0)
    images = np.tanh(rng.standard_normal((BATCH, 1, IMAGE, IMAGE)))
    timesteps = rng.integers(0, STEPS_T, (steps, BATCH))
    noises = rng.standard_normal((steps, BATCH, 1, IMAGE, IMAGE))
    sample_noises = rng.standard_normal((4, 2, 1, IMAGE, IMAGE))
    return images, timesteps, noises, sample_noises


def _sample(torch, diffusion, ema_model, sample_noises, compiled=False):
    """Reverse steps t = 3, 2, 1, 0 from noise with the EMA weights (``diffusion.model`` swapped for them); with
    ``compiled``, kiln's steps by ``kiln.compile(diffusion.p_sample)`` (called with the int ``t_index``)."""
    online, diffusion.model = diffusion.model, ema_model
    p_sample = kiln.compile(diffusion.p_sample) if compiled and torch is kiln else diffusion.p_sample
    x = torch.tensor(sample_noises[0])
    for t_index, noise in zip(reversed(range(len(sample_noises))), sample_noises):
        x = p_sample(x, t_index, torch.tensor(noise))
    diffusion.model = online
    return array(x.clamp_(-1.0, 1.0))


def train_ddpm(steps=3, decay=0.9):
    images, timesteps, noises, sample_noises = _ddpm_data(steps)

    def train(torch, nn, F, diffusion):
        from_swa = torch.optim.swa_utils
        averaged = from_swa.AveragedModel(diffusion.model, multi_avg_fn=from_swa.get_ema_multi_avg_fn(decay))
        ema = copy.deepcopy(diffusion.model).requires_grad_(False)
        optimizer = torch.optim.AdamW(diffusion.model.parameters(), lr=2e-3, weight_decay=0.01)
        x0 = torch.tensor(images)
        record = {"losses": []}
        for step in range(steps):
            loss = diffusion(x0, torch.tensor(timesteps[step]), torch.tensor(noises[step]))
            optimizer.zero_grad()
            loss.backward()
            record.setdefault("grads", gradients(diffusion))
            optimizer.step()
            averaged.update_parameters(diffusion.model)
            with torch.no_grad():
                for ema_p, p in zip(ema.parameters(), diffusion.model.parameters()):
                    ema_p.lerp_(p, 1 - decay)
            record["losses"].append(loss.item())
        record["state"], record["ema"] = snapshot(diffusion), snapshot(ema)
        record["averaged"] = {n: array(p) for n, p in averaged.module.named_parameters()}
        record["samples"] = _sample(torch, diffusion, ema.eval(), sample_noises)
        record["samples_averaged"] = _sample(torch, diffusion, averaged.module, sample_noises)
        with warnings.catch_warnings():  # kiln.compile runs p_sample eagerly: its `if t_index == 0` reads a traced int
            warnings.filterwarnings("ignore", "kiln.compile: this call runs eagerly")
            record["samples_compiled"] = _sample(torch, diffusion, ema, sample_noises, compiled=True)
        return record

    return train


def test_ddpm_trains_and_samples_as_torch(float64_default):
    ours, theirs = run_in_lockstep(ddpm, train_ddpm())
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


def train_ddpm_compiled(steps=3, decay=0.9):
    """The whole step (zero_grad, the noised loss, backward, ``clip_grad_norm_``, AdamW, both EMAs: the hand-written
    ``lerp_`` and ``AveragedModel.update_parameters``) in one compiled graph."""
    images, timesteps, noises, sample_noises = _ddpm_data(steps)

    def train(torch, nn, F, diffusion):
        ema = copy.deepcopy(diffusion.model).requires_grad_(False)
        swa_utils = torch.optim.swa_utils
        averaged = swa_utils.AveragedModel(diffusion.model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(decay))
        optimizer = torch.optim.AdamW(diffusion.model.parameters(), lr=2e-3, weight_decay=0.01)

        def train_step(x0, t, noise):
            optimizer.zero_grad()
            loss = diffusion(x0, t, noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(diffusion.model.parameters(), 1.0)
            optimizer.step()
            averaged.update_parameters(diffusion.model)
            with torch.no_grad():
                for ema_p, p in zip(ema.parameters(), diffusion.model.parameters()):
                    ema_p.lerp_(p, 1 - decay)
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        x0 = torch.tensor(images)
        losses = [run(x0, torch.tensor(timesteps[step]), torch.tensor(noises[step])).item() for step in range(steps)]
        return {"losses": losses, "state": snapshot(diffusion), "ema": snapshot(ema), "averaged": snapshot(averaged),
                "samples": _sample(torch, diffusion, ema.eval(), sample_noises),
                "samples_averaged": _sample(torch, diffusion, averaged.module, sample_noises)}

    return train


def test_ddpm_compiled_step_with_ema_as_torch(float64_default):
    ours, theirs = run_in_lockstep(ddpm, train_ddpm_compiled())
    assert_same_records(ours, theirs)


# --- NeRF ------------------------------------------------------------------------------------------------------------

RAYS, SAMPLES, IMPORTANCE, NEAR, FAR = 6, 8, 6, 2.0, 6.0


def nerf(torch, nn, F, num_freqs=4, width=16):
    def positional_encoding(x, num_freqs):
        freqs = 2.0 ** torch.arange(num_freqs, dtype=x.dtype)
        xb = x[..., None, :] * freqs[:, None]  # (..., L, 3)
        return torch.cat([x, torch.sin(xb).flatten(-2), torch.cos(xb).flatten(-2)], dim=-1)

    class NeRF(nn.Module):
        def __init__(self, depth=4, skips=(2,)):
            super().__init__()
            in_dim = 3 + 3 * 2 * num_freqs
            self.skips = skips
            self.pts_linears = nn.ModuleList(
                [nn.Linear(in_dim, width)]
                + [nn.Linear(width + in_dim if i in skips else width, width) for i in range(1, depth)])
            self.sigma_linear = nn.Linear(width, 1)
            self.rgb_linear = nn.Linear(width, 3)

        def forward(self, pts):
            x = embedded = positional_encoding(pts, num_freqs)
            for i, layer in enumerate(self.pts_linears):
                if i in self.skips:
                    x = torch.cat([embedded, x], -1)
                x = F.relu(layer(x))
            return torch.sigmoid(self.rgb_linear(x)), self.sigma_linear(x)[..., 0]

    class CoarseFine(nn.Module):
        def __init__(self):
            super().__init__()
            self.coarse, self.fine = NeRF(), NeRF()

    return CoarseFine()


def sample_pdf(torch, bins, weights, u):
    """nerf-pytorch's inverse-CDF sampling: ``u`` (rays, n) placed in the piecewise-constant pdf of ``weights``."""
    weights = weights + 1e-5
    pdf = weights / torch.sum(weights, -1, keepdim=True)
    cdf = torch.cumsum(pdf, -1)
    cdf = torch.cat([torch.zeros_like(cdf[..., :1]), cdf], -1)
    u = u.contiguous()
    inds = torch.searchsorted(cdf, u, right=True)
    below = torch.max(torch.zeros_like(inds - 1), inds - 1)
    above = torch.min((cdf.shape[-1] - 1) * torch.ones_like(inds), inds)
    inds_g = torch.stack([below, above], -1)
    matched_shape = [inds_g.shape[0], inds_g.shape[1], cdf.shape[-1]]
    cdf_g = torch.gather(cdf.unsqueeze(1).expand(matched_shape), 2, inds_g)
    bins_g = torch.gather(bins.unsqueeze(1).expand(matched_shape), 2, inds_g)
    denom = cdf_g[..., 1] - cdf_g[..., 0]
    denom = torch.where(denom < 1e-5, torch.ones_like(denom), denom)
    t = (u - cdf_g[..., 0]) / denom
    return bins_g[..., 0] + t * (bins_g[..., 1] - bins_g[..., 0])


def render_coarse_fine(torch, model, rays_o, rays_d, t_vals, u, shift_by_roll):
    """The coarse pass, then the fine one on its samples plus ``u``'s importance samples (sorted; no gradient
    through where they lie, as nerf-pytorch's ``z_samples.detach()``)."""
    rgb_coarse, _, _, weights = render_rays(torch, model.coarse, rays_o, rays_d, t_vals, shift_by_roll)
    mids = 0.5 * (t_vals[..., 1:] + t_vals[..., :-1])
    z_samples = sample_pdf(torch, mids, weights[..., 1:-1], u).detach()
    z_vals, _ = torch.sort(torch.cat([t_vals, z_samples], -1), -1)
    rgb_fine, depth, acc, _ = render_rays(torch, model.fine, rays_o, rays_d, z_vals, shift_by_roll)
    return rgb_coarse, rgb_fine, depth, acc


def cumprod_exclusive(torch, tensor):
    """tiny_nerf's: the product of everything before each entry along the last axis (1 first)."""
    cumprod = torch.cumprod(tensor, -1)
    cumprod = torch.roll(cumprod, 1, -1)
    cumprod[..., 0] = 1.0
    return cumprod


def render_rays(torch, model, rays_o, rays_d, t_vals, shift_by_roll):
    pts = rays_o[..., None, :] + rays_d[..., None, :] * t_vals[..., :, None]  # (rays, samples, 3)
    rgb, sigma = model(pts)
    dists = t_vals[..., 1:] - t_vals[..., :-1]
    dists = torch.cat([dists, torch.tensor([1e10]).expand(dists[..., :1].shape)], -1)
    dists = dists * torch.norm(rays_d[..., None, :], dim=-1)
    alpha = 1.0 - torch.exp(-torch.nn.functional.relu(sigma) * dists)
    if shift_by_roll:
        transmittance = cumprod_exclusive(torch, 1.0 - alpha + 1e-10)
    else:
        ones = torch.ones((alpha.shape[0], 1))
        transmittance = torch.cumprod(torch.cat([ones, 1.0 - alpha + 1e-10], -1), -1)[:, :-1]
    weights = alpha * transmittance
    rgb_map = torch.sum(weights[..., None] * rgb, -2)
    depth_map = torch.sum(weights * t_vals, -1)
    acc_map = torch.sum(weights, -1)
    return rgb_map, depth_map, acc_map, weights


def _rays(steps):
    rng = np.random.default_rng(1)
    origins = rng.standard_normal((RAYS, 3)) * 0.1
    directions = rng.standard_normal((RAYS, 3))
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    jitter = rng.random((steps, RAYS, SAMPLES))
    importance = rng.random((steps, RAYS, IMPORTANCE))
    target = rng.random((RAYS, 3))
    return origins, directions, jitter, importance, target


def _stratified(torch, jitter):
    """Stratified samples: each bin's lower edge plus a fed-in uniform fraction of its width."""
    t_vals = torch.linspace(NEAR, FAR, SAMPLES + 1)
    lower, upper = t_vals[:-1], t_vals[1:]
    return lower + (upper - lower) * torch.tensor(jitter)


def train_nerf(shift_by_roll, steps=3, lrate=5e-3, decay_steps=2):
    origins, directions, jitter, importance, target = _rays(steps)

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=lrate, betas=(0.9, 0.999))
        rays_o, rays_d, target_rgb = torch.tensor(origins), torch.tensor(directions), torch.tensor(target)
        mse2psnr = lambda x: -10.0 * torch.log(x) / torch.log(torch.Tensor([10.0]))  # noqa: E731
        record = {"losses": [], "psnr": []}
        for step in range(steps):
            rgb_coarse, rgb_fine, depth, acc = render_coarse_fine(
                torch, model, rays_o, rays_d, _stratified(torch, jitter[step]), torch.tensor(importance[step]),
                shift_by_roll)
            img_loss = torch.mean((rgb_fine - target_rgb) ** 2)
            loss = img_loss + F.mse_loss(rgb_coarse, target_rgb)
            optimizer.zero_grad()
            loss.backward()
            record.setdefault("maps", {"coarse": array(rgb_coarse), "fine": array(rgb_fine), "depth": array(depth),
                                       "opacity": array(acc)})
            record.setdefault("grads", gradients(model))
            optimizer.step()
            new_lrate = lrate * (0.1 ** ((step + 1) / decay_steps))  # nerf-pytorch's decay, set by hand
            for param_group in optimizer.param_groups:
                param_group["lr"] = new_lrate
            record["losses"].append(loss.item())
            record["psnr"].append(mse2psnr(img_loss.detach()).item())
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("shift_by_roll", [False, True], ids=["cat-ones", "roll"])
def test_nerf_trains_as_torch(shift_by_roll, float64_default):
    ours, theirs = run_in_lockstep(nerf, train_nerf(shift_by_roll))
    assert_same_records(ours, theirs)
    assert theirs["losses"][-1] < theirs["losses"][0]


@pytest.mark.parametrize("shift_by_roll", [False, True], ids=["cat-ones", "roll"])
def test_nerf_compiled_step_as_torch(shift_by_roll, float64_default):
    origins, directions, jitter, importance, target = _rays(3)

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)

        def train_step(rays_o, rays_d, t_vals, u, target_rgb):
            optimizer.zero_grad()
            rgb_coarse, rgb_fine, _, _ = render_coarse_fine(torch, model, rays_o, rays_d, t_vals, u, shift_by_roll)
            loss = F.mse_loss(rgb_fine, target_rgb) + F.mse_loss(rgb_coarse, target_rgb)
            loss.backward()
            optimizer.step()
            return loss

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        rays = torch.tensor(origins), torch.tensor(directions)
        losses = []
        for step in range(3):
            u = torch.tensor(importance[step])
            losses.append(run(*rays, _stratified(torch, jitter[step]), u, torch.tensor(target)).item())
            for param_group in optimizer.param_groups:  # the lr decay set by hand between compiled calls
                param_group["lr"] = 5e-3 * (0.1 ** ((step + 1) / 2))
        return {"losses": losses, "state": snapshot(model)}

    ours, theirs = run_in_lockstep(nerf, train)
    assert_same_records(ours, theirs)
