"""Stable Diffusion's latent diffusion and DDIM sampler as CompVis/stable-diffusion writes them (``torch`` is
``torch`` or ``kiln``), for ``test_porting_probes_stable_diffusion.py``: ``models/diffusion/ddpm.py``'s
``LatentDiffusion`` (``register_schedule`` from NumPy arrays, ``q_sample`` by ``extract_into_tensor``, ``p_losses``
with ``logvar[t]`` and ``lvlb_weights[t]``, the frozen first stage, ``scale_factor``), ``encoders/modules.py``'s
``ClassEmbedder`` for cross-attention, ``diffusionmodules/util.py``'s schedules and ``models/diffusion/ddim.py``'s
``DDIMSampler`` with classifier-free guidance. The UNet and the changes from the reference are in
``stable_diffusion_program.py``.
"""

from __future__ import annotations

from functools import partial

import numpy as np

from e2e.stable_diffusion_program import CLASSES, TIMESTEPS, sd_modules
def make_beta_schedule(torch, schedule, n_timestep, linear_start=1e-4, linear_end=2e-2, cosine_s=8e-3):
    if schedule == "linear":
        betas = (
            torch.linspace(linear_start ** 0.5, linear_end ** 0.5, n_timestep, dtype=torch.float64) ** 2
        )
    elif schedule == "cosine":
        timesteps = (torch.arange(n_timestep + 1, dtype=torch.float64) / n_timestep + cosine_s)
        alphas = timesteps / (1 + cosine_s) * np.pi / 2
        alphas = torch.cos(alphas).pow(2)
        alphas = alphas / alphas[0]
        betas = 1 - alphas[1:] / alphas[:-1]
        betas = np.clip(betas, a_min=0, a_max=0.999)
    else:
        raise ValueError(f"schedule '{schedule}' unknown.")
    return betas.numpy()


def extract_into_tensor(a, t, x_shape):
    b, *_ = t.shape
    out = a.gather(-1, t)
    return out.reshape(b, *((1,) * (len(x_shape) - 1)))


def make_ddim_timesteps(ddim_discr_method, num_ddim_timesteps, num_ddpm_timesteps, verbose=True):
    if ddim_discr_method == 'uniform':
        c = num_ddpm_timesteps // num_ddim_timesteps
        ddim_timesteps = np.asarray(list(range(0, num_ddpm_timesteps, c)))
    elif ddim_discr_method == 'quad':
        ddim_timesteps = ((np.linspace(0, np.sqrt(num_ddpm_timesteps * .8), num_ddim_timesteps)) ** 2).astype(int)
    else:
        raise NotImplementedError(f'There is no ddim discretization method called "{ddim_discr_method}"')
    # add one to get the final alpha values right (the ones from first scale to data during sampling)
    steps_out = ddim_timesteps + 1
    return steps_out


def make_ddim_sampling_parameters(alphacums, ddim_timesteps, eta, verbose=True):
    # select alphas for computing the variance schedule
    alphas = alphacums[ddim_timesteps]
    alphas_prev = np.asarray([alphacums[0]] + alphacums[ddim_timesteps[:-1]].tolist())
    # according the the formula provided in https://arxiv.org/abs/2010.02502
    sigmas = eta * np.sqrt((1 - alphas_prev) / (1 - alphas) * (1 - alphas / alphas_prev))
    return sigmas, alphas, alphas_prev


def noise_like(torch, shape, device, repeat=False):
    repeat_noise = lambda: torch.randn((1, *shape[1:]), device=device).repeat(shape[0], *((1,) * (len(shape) - 1)))  # noqa: E731
    noise = lambda: torch.randn(shape, device=device)  # noqa: E731
    return repeat_noise() if repeat else noise()


def latent_diffusion(torch, nn, F, first_stage_model, float_dtype=None, original_elbo_weight=0.5, logvar_init=0.1,
                     parameterization="eps", beta_schedule="linear", unet_options=None, extend=None, **extra):
    """``LatentDiffusion`` (a LightningModule in the reference) with the class-conditional cross-attention setup of
    the cin configs (``ClassEmbedder``, ``conditioning_key: crossattn``, ``cond_stage_trainable``), the first stage
    frozen, ``scale_factor`` a buffer; SD 2's ``v`` parameterization and DDPM's ancestral ``p_sample`` included;
    ``unet_options`` override the UNet's config (SD 2's ``use_linear_in_transformer``...); ``extend(LatentDiffusion,
    modules)`` returns ``(subclass, UNet class, keyword arguments)`` to build instead (ControlNet's ``ControlLDM`` and
    ``ControlledUnetModel``), ``extra`` more keyword arguments."""
    m = sd_modules(torch, nn, F, float_dtype)

    class ClassEmbedder(nn.Module):
        def __init__(self, embed_dim, n_classes=1000, key='class'):
            super().__init__()
            self.key = key
            self.embedding = nn.Embedding(n_classes, embed_dim)

        def forward(self, batch, key=None):
            if key is None:
                key = self.key
            # this is for use in crossattn
            c = batch[key][:, None]
            c = self.embedding(c)
            return c

    class DiffusionWrapper(nn.Module):
        def __init__(self, diff_model, conditioning_key):
            super().__init__()
            self.diffusion_model = diff_model
            self.conditioning_key = conditioning_key
            assert self.conditioning_key in [None, 'concat', 'crossattn', 'hybrid', 'adm']

        def forward(self, x, t, c_concat: list = None, c_crossattn: list = None):
            if self.conditioning_key is None:
                out = self.diffusion_model(x, t)
            elif self.conditioning_key == 'concat':
                xc = torch.cat([x] + c_concat, dim=1)
                out = self.diffusion_model(xc, t)
            elif self.conditioning_key == 'crossattn':
                cc = torch.cat(c_crossattn, 1)
                out = self.diffusion_model(x, t, context=cc)
            elif self.conditioning_key == 'hybrid':
                xc = torch.cat([x] + c_concat, dim=1)
                cc = torch.cat(c_crossattn, 1)
                out = self.diffusion_model(xc, t, context=cc)
            else:
                raise NotImplementedError()
            return out

    def disabled_train(self, mode=True):
        """Overwrite model.train with this function to make sure train/eval mode does not change anymore."""
        return self

    class LatentDiffusion(nn.Module):
        def __init__(self, unet_config, first_stage_model, cond_stage_model, timesteps=TIMESTEPS,
                     beta_schedule=beta_schedule, linear_start=1e-3, linear_end=0.2, scale_factor=1.0,
                     conditioning_key="crossattn", l_simple_weight=1., original_elbo_weight=original_elbo_weight,
                     v_posterior=0., parameterization=parameterization, logvar_init=logvar_init, clip_denoised=True):
            super().__init__()
            assert parameterization in ["eps", "x0", "v"], 'currently only supporting "eps" and "x0" and "v"'
            self.clip_denoised = clip_denoised
            self.parameterization = parameterization
            self.model = DiffusionWrapper(instantiate_from_config(unet_config), conditioning_key)
            self.v_posterior = v_posterior
            self.original_elbo_weight = original_elbo_weight
            self.l_simple_weight = l_simple_weight
            self.loss_type = "l2"
            self.register_schedule(beta_schedule=beta_schedule, timesteps=timesteps, linear_start=linear_start,
                                   linear_end=linear_end)
            self.logvar = torch.full(fill_value=logvar_init, size=(self.num_timesteps,))
            self.register_buffer('scale_factor', torch.tensor(scale_factor))
            self.first_stage_model = first_stage_model.eval()
            self.first_stage_model.train = disabled_train
            for param in self.first_stage_model.parameters():
                param.requires_grad = False
            self.cond_stage_model = cond_stage_model
            self.cond_stage_trainable = True

        def register_schedule(self, given_betas=None, beta_schedule="linear", timesteps=1000, linear_start=1e-4,
                              linear_end=2e-2, cosine_s=8e-3):
            if given_betas is not None:
                betas = given_betas
            else:
                betas = make_beta_schedule(torch, beta_schedule, timesteps, linear_start=linear_start,
                                           linear_end=linear_end, cosine_s=cosine_s)
            alphas = 1. - betas
            alphas_cumprod = np.cumprod(alphas, axis=0)
            alphas_cumprod_prev = np.append(1., alphas_cumprod[:-1])
            timesteps, = betas.shape
            self.num_timesteps = int(timesteps)
            assert alphas_cumprod.shape[0] == self.num_timesteps, 'alphas have to be defined for each timestep'
            to_torch = partial(torch.tensor, dtype=float_dtype or torch.float32)
            self.register_buffer('betas', to_torch(betas))
            self.register_buffer('alphas_cumprod', to_torch(alphas_cumprod))
            self.register_buffer('alphas_cumprod_prev', to_torch(alphas_cumprod_prev))
            # calculations for diffusion q(x_t | x_{t-1}) and others
            self.register_buffer('sqrt_alphas_cumprod', to_torch(np.sqrt(alphas_cumprod)))
            self.register_buffer('sqrt_one_minus_alphas_cumprod', to_torch(np.sqrt(1. - alphas_cumprod)))
            self.register_buffer('log_one_minus_alphas_cumprod', to_torch(np.log(1. - alphas_cumprod)))
            self.register_buffer('sqrt_recip_alphas_cumprod', to_torch(np.sqrt(1. / alphas_cumprod)))
            self.register_buffer('sqrt_recipm1_alphas_cumprod', to_torch(np.sqrt(1. / alphas_cumprod - 1)))
            # calculations for posterior q(x_{t-1} | x_t, x_0)
            posterior_variance = (1 - self.v_posterior) * betas * (1. - alphas_cumprod_prev) / (
                1. - alphas_cumprod) + self.v_posterior * betas
            # above: equal to 1. / (1. / (1. - alpha_cumprod_tm1) + alpha_t / beta_t)
            self.register_buffer('posterior_variance', to_torch(posterior_variance))
            # below: log calculation clipped because the posterior variance is 0 at the beginning of the diffusion chain
            self.register_buffer('posterior_log_variance_clipped',
                                 to_torch(np.log(np.maximum(posterior_variance, 1e-20))))
            self.register_buffer('posterior_mean_coef1',
                                 to_torch(betas * np.sqrt(alphas_cumprod_prev) / (1. - alphas_cumprod)))
            self.register_buffer('posterior_mean_coef2',
                                 to_torch((1. - alphas_cumprod_prev) * np.sqrt(alphas) / (1. - alphas_cumprod)))
            if self.parameterization == "eps":
                lvlb_weights = self.betas ** 2 / (
                    2 * self.posterior_variance * to_torch(alphas) * (1 - self.alphas_cumprod))
            elif self.parameterization == "x0":
                lvlb_weights = 0.5 * np.sqrt(torch.Tensor(alphas_cumprod)) / (2. * 1 - torch.Tensor(alphas_cumprod))
            elif self.parameterization == "v":
                lvlb_weights = torch.ones_like(self.betas ** 2 / (
                    2 * self.posterior_variance * to_torch(alphas) * (1 - self.alphas_cumprod)))
            else:
                raise NotImplementedError("mu not supported")
            # TODO how to choose this term
            lvlb_weights[0] = lvlb_weights[1]
            self.register_buffer('lvlb_weights', lvlb_weights, persistent=False)
            assert not torch.isnan(self.lvlb_weights).all()

        @property
        def device(self):
            return self.betas.device

        def get_learned_conditioning(self, c):
            return self.cond_stage_model(c)

        @torch.no_grad()
        def encode_first_stage(self, x):
            return self.first_stage_model.encode(x)

        def get_first_stage_encoding(self, encoder_posterior, noise=None):
            z = encoder_posterior.sample(noise)
            return self.scale_factor * z

        @torch.no_grad()
        def decode_first_stage(self, z):
            z = 1. / self.scale_factor * z
            return self.first_stage_model.decode(z)

        def q_sample(self, x_start, t, noise=None):
            noise = default(noise, lambda: torch.randn_like(x_start))
            return (extract_into_tensor(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start +
                    extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

        def predict_start_from_noise(self, x_t, t, noise):
            return (
                extract_into_tensor(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t -
                extract_into_tensor(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * noise
            )

        def predict_start_from_z_and_v(self, x_t, t, v):
            return (
                extract_into_tensor(self.sqrt_alphas_cumprod, t, x_t.shape) * x_t -
                extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * v
            )

        def predict_eps_from_z_and_v(self, x_t, t, v):
            return (
                extract_into_tensor(self.sqrt_alphas_cumprod, t, x_t.shape) * v +
                extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x_t.shape) * x_t
            )

        def get_v(self, x, noise, t):
            return (
                extract_into_tensor(self.sqrt_alphas_cumprod, t, x.shape) * noise -
                extract_into_tensor(self.sqrt_one_minus_alphas_cumprod, t, x.shape) * x
            )

        def q_posterior(self, x_start, x_t, t):
            posterior_mean = (
                extract_into_tensor(self.posterior_mean_coef1, t, x_t.shape) * x_start +
                extract_into_tensor(self.posterior_mean_coef2, t, x_t.shape) * x_t
            )
            posterior_variance = extract_into_tensor(self.posterior_variance, t, x_t.shape)
            posterior_log_variance_clipped = extract_into_tensor(self.posterior_log_variance_clipped, t, x_t.shape)
            return posterior_mean, posterior_variance, posterior_log_variance_clipped

        def p_mean_variance(self, x, c, t, clip_denoised: bool):
            model_out = self.apply_model(x, t, c)
            if self.parameterization == "eps":
                x_recon = self.predict_start_from_noise(x, t=t, noise=model_out)
            elif self.parameterization == "x0":
                x_recon = model_out
            else:
                x_recon = self.predict_start_from_z_and_v(x, t, model_out)
            if clip_denoised:
                x_recon.clamp_(-1., 1.)
            model_mean, posterior_variance, posterior_log_variance = self.q_posterior(x_start=x_recon, x_t=x, t=t)
            return model_mean, posterior_variance, posterior_log_variance

        @torch.no_grad()
        def p_sample(self, x, c, t, clip_denoised=False, repeat_noise=False, temperature=1., noise=None):
            b, *_, device = *x.shape, x.device
            model_mean, _, model_log_variance = self.p_mean_variance(x=x, c=c, t=t, clip_denoised=clip_denoised)
            if noise is None:  # the reference's draw; the probe feeds it
                noise = noise_like(torch, x.shape, device, repeat_noise)
            noise = noise * temperature
            # no noise when t == 0
            nonzero_mask = (1 - (t == 0).float()).reshape(b, *((1,) * (len(x.shape) - 1)))
            return model_mean + nonzero_mask * (0.5 * model_log_variance).exp() * noise

        @torch.no_grad()
        def p_sample_loop(self, cond, shape, x_T, noises):
            b = shape[0]
            img = x_T
            for i, noise in zip(reversed(range(0, self.num_timesteps)), noises):
                ts = torch.full((b,), i, device=self.device, dtype=torch.long)
                img = self.p_sample(img, cond, ts, clip_denoised=self.clip_denoised, noise=noise)
            return img

        def apply_model(self, x_noisy, t, cond, return_ids=False):
            if isinstance(cond, dict):
                # hybrid case, cond is exptected to be a dict
                pass
            else:
                if not isinstance(cond, list):
                    cond = [cond]
                key = 'c_concat' if self.model.conditioning_key == 'concat' else 'c_crossattn'
                cond = {key: cond}
            x_recon = self.model(x_noisy, t, **cond)
            if isinstance(x_recon, tuple) and not return_ids:
                return x_recon[0]
            else:
                return x_recon

        def get_loss(self, pred, target, mean=True):
            if self.loss_type == 'l1':
                loss = (target - pred).abs()
                if mean:
                    loss = loss.mean()
            elif self.loss_type == 'l2':
                if mean:
                    loss = torch.nn.functional.mse_loss(target, pred)
                else:
                    loss = torch.nn.functional.mse_loss(target, pred, reduction='none')
            else:
                raise NotImplementedError("unknown loss type '{loss_type}'")
            return loss

        def p_losses(self, x_start, cond, t, noise=None):
            noise = default(noise, lambda: torch.randn_like(x_start))
            x_noisy = self.q_sample(x_start=x_start, t=t, noise=noise)
            model_output = self.apply_model(x_noisy, t, cond)
            loss_dict = {}
            prefix = 'train' if self.training else 'val'
            if self.parameterization == "x0":
                target = x_start
            elif self.parameterization == "eps":
                target = noise
            elif self.parameterization == "v":
                target = self.get_v(x_start, noise, t)
            else:
                raise NotImplementedError()
            loss_simple = self.get_loss(model_output, target, mean=False).mean([1, 2, 3])
            loss_dict.update({f'{prefix}/loss_simple': loss_simple.mean()})
            logvar_t = self.logvar[t].to(self.device)
            loss = loss_simple / torch.exp(logvar_t) + logvar_t
            loss_dict.update({f'{prefix}/loss': loss.mean()})
            loss = self.l_simple_weight * loss.mean()
            loss_vlb = self.get_loss(model_output, target, mean=False).mean(dim=(1, 2, 3))
            loss_vlb = (self.lvlb_weights[t] * loss_vlb).mean()
            loss_dict.update({f'{prefix}/loss_vlb': loss_vlb})
            loss += (self.original_elbo_weight * loss_vlb)
            loss_dict.update({f'{prefix}/loss': loss})
            return loss, loss_dict

        def forward(self, x, c, t=None, noise=None):
            if t is None:  # the reference's draw; the probe feeds t
                t = torch.randint(0, self.num_timesteps, (x.shape[0],), device=self.device).long()
            if self.cond_stage_trainable:
                c = self.get_learned_conditioning(c)
            return self.p_losses(x, c, t, noise=noise)

    def default(val, d):
        if val is not None:
            return val
        return d() if callable(d) else d

    cls, unet_class, more = (LatentDiffusion, m["UNetModel"], {}) if extend is None else extend(LatentDiffusion, m)
    unet_config = dict(target=unet_class, params=dict(UNET_PARAMS, **(unet_options or {})))
    return cls(unet_config=unet_config, first_stage_model=first_stage_model,
               cond_stage_model=ClassEmbedder(embed_dim=8, n_classes=CLASSES + 1), **more, **extra)


UNET_PARAMS = dict(image_size=4, in_channels=2, out_channels=2, model_channels=8, attention_resolutions=[1, 2],
                   num_res_blocks=1, channel_mult=[1, 2], num_heads=2, use_spatial_transformer=True,
                   transformer_depth=1, context_dim=8, legacy=False)
"""The cin config's ``unet_config.params`` at tiny sizes (4 x 4 x 2 latents)."""


def instantiate_from_config(config):
    """ldm/util.py's, the target a class here rather than its dotted name."""
    return config["target"](**config.get("params", dict()))


def ddim_sampler(torch, float_dtype=None):
    """ddim.py's ``DDIMSampler`` class (its ``register_buffer`` moving tensors to the CPU, not CUDA)."""

    class DDIMSampler(object):
        def __init__(self, model, schedule="linear", **kwargs):
            super().__init__()
            self.model = model
            self.ddpm_num_timesteps = model.num_timesteps
            self.schedule = schedule

        def register_buffer(self, name, attr):
            if type(attr) == torch.Tensor:
                if attr.device != torch.device("cpu"):
                    attr = attr.to(torch.device("cpu"))
            setattr(self, name, attr)

        def make_schedule(self, ddim_num_steps, ddim_discretize="uniform", ddim_eta=0., verbose=True):
            self.ddim_timesteps = make_ddim_timesteps(ddim_discr_method=ddim_discretize,
                                                      num_ddim_timesteps=ddim_num_steps,
                                                      num_ddpm_timesteps=self.ddpm_num_timesteps, verbose=verbose)
            alphas_cumprod = self.model.alphas_cumprod
            assert alphas_cumprod.shape[0] == self.ddpm_num_timesteps, 'alphas have to be defined for each timestep'
            to_torch = lambda x: x.clone().detach().to(float_dtype or torch.float32).to(self.model.device)  # noqa: E731
            self.register_buffer('betas', to_torch(self.model.betas))
            self.register_buffer('alphas_cumprod', to_torch(alphas_cumprod))
            self.register_buffer('alphas_cumprod_prev', to_torch(self.model.alphas_cumprod_prev))
            # calculations for diffusion q(x_t | x_{t-1}) and others
            self.register_buffer('sqrt_alphas_cumprod', to_torch(np.sqrt(alphas_cumprod.cpu())))
            self.register_buffer('sqrt_one_minus_alphas_cumprod', to_torch(np.sqrt(1. - alphas_cumprod.cpu())))
            self.register_buffer('log_one_minus_alphas_cumprod', to_torch(np.log(1. - alphas_cumprod.cpu())))
            self.register_buffer('sqrt_recip_alphas_cumprod', to_torch(np.sqrt(1. / alphas_cumprod.cpu())))
            self.register_buffer('sqrt_recipm1_alphas_cumprod', to_torch(np.sqrt(1. / alphas_cumprod.cpu() - 1)))
            # ddim sampling parameters
            ddim_sigmas, ddim_alphas, ddim_alphas_prev = make_ddim_sampling_parameters(
                alphacums=alphas_cumprod.cpu(), ddim_timesteps=self.ddim_timesteps, eta=ddim_eta, verbose=verbose)
            self.register_buffer('ddim_sigmas', ddim_sigmas)
            self.register_buffer('ddim_alphas', ddim_alphas)
            self.register_buffer('ddim_alphas_prev', ddim_alphas_prev)
            self.register_buffer('ddim_sqrt_one_minus_alphas', np.sqrt(1. - ddim_alphas))
            sigmas_for_original_sampling_steps = ddim_eta * torch.sqrt(
                (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod) * (
                    1 - self.alphas_cumprod / self.alphas_cumprod_prev))
            self.register_buffer('ddim_sigmas_for_original_num_steps', sigmas_for_original_sampling_steps)

        @torch.no_grad()
        def sample(self, S, batch_size, shape, conditioning=None, eta=0., temperature=1., x_T=None,
                   unconditional_guidance_scale=1., unconditional_conditioning=None, verbose=False, **kwargs):
            self.make_schedule(ddim_num_steps=S, ddim_eta=eta, verbose=verbose)
            # sampling
            C, H, W = shape
            size = (batch_size, C, H, W)
            samples, intermediates = self.ddim_sampling(
                conditioning, size, x_T=x_T, temperature=temperature,
                unconditional_guidance_scale=unconditional_guidance_scale,
                unconditional_conditioning=unconditional_conditioning)
            return samples, intermediates

        @torch.no_grad()
        def ddim_sampling(self, cond, shape, x_T=None, ddim_use_original_steps=False, timesteps=None,
                          log_every_t=100, temperature=1., unconditional_guidance_scale=1.,
                          unconditional_conditioning=None):
            device = self.model.betas.device
            b = shape[0]
            if x_T is None:
                img = torch.randn(shape, device=device)
            else:
                img = x_T
            if timesteps is None:
                timesteps = self.ddpm_num_timesteps if ddim_use_original_steps else self.ddim_timesteps
            intermediates = {'x_inter': [img], 'pred_x0': [img]}
            time_range = reversed(range(0, timesteps)) if ddim_use_original_steps else np.flip(timesteps)
            total_steps = timesteps if ddim_use_original_steps else timesteps.shape[0]
            for i, step in enumerate(time_range):
                index = total_steps - i - 1
                ts = torch.full((b,), step, device=device, dtype=torch.long)
                outs = self.p_sample_ddim(img, cond, ts, index=index, use_original_steps=ddim_use_original_steps,
                                          temperature=temperature,
                                          unconditional_guidance_scale=unconditional_guidance_scale,
                                          unconditional_conditioning=unconditional_conditioning)
                img, pred_x0 = outs
                if index % log_every_t == 0 or index == total_steps - 1:
                    intermediates['x_inter'].append(img)
                    intermediates['pred_x0'].append(pred_x0)
            return img, intermediates

        @torch.no_grad()
        def stochastic_encode(self, x0, t, use_original_steps=False, noise=None):
            # fast, but does not allow for exact reconstruction
            # t serves as an index to gather the correct alphas
            if use_original_steps:
                sqrt_alphas_cumprod = self.sqrt_alphas_cumprod
                sqrt_one_minus_alphas_cumprod = self.sqrt_one_minus_alphas_cumprod
            else:
                sqrt_alphas_cumprod = torch.sqrt(self.ddim_alphas)
                sqrt_one_minus_alphas_cumprod = self.ddim_sqrt_one_minus_alphas
            if noise is None:
                noise = torch.randn_like(x0)
            return (extract_into_tensor(sqrt_alphas_cumprod, t, x0.shape) * x0 +
                    extract_into_tensor(sqrt_one_minus_alphas_cumprod, t, x0.shape) * noise)

        @torch.no_grad()
        def decode(self, x_latent, cond, t_start, unconditional_guidance_scale=1.0, unconditional_conditioning=None,
                   use_original_steps=False):
            timesteps = np.arange(self.ddpm_num_timesteps) if use_original_steps else self.ddim_timesteps
            timesteps = timesteps[:t_start]
            time_range = np.flip(timesteps)
            total_steps = timesteps.shape[0]
            x_dec = x_latent
            for i, step in enumerate(time_range):
                index = total_steps - i - 1
                ts = torch.full((x_latent.shape[0],), step, device=x_latent.device, dtype=torch.long)
                x_dec, _ = self.p_sample_ddim(x_dec, cond, ts, index=index, use_original_steps=use_original_steps,
                                              unconditional_guidance_scale=unconditional_guidance_scale,
                                              unconditional_conditioning=unconditional_conditioning)
            return x_dec

        @torch.no_grad()
        def p_sample_ddim(self, x, c, t, index, repeat_noise=False, use_original_steps=False, temperature=1.,
                          noise_dropout=0., unconditional_guidance_scale=1., unconditional_conditioning=None):
            b, *_, device = *x.shape, x.device
            if unconditional_conditioning is None or unconditional_guidance_scale == 1.:
                model_output = self.model.apply_model(x, t, c)
            else:
                x_in = torch.cat([x] * 2)
                t_in = torch.cat([t] * 2)
                if isinstance(c, dict):  # SD 2's ddim.py: concat-conditioned models (inpainting, depth)
                    assert isinstance(unconditional_conditioning, dict)
                    c_in = dict()
                    for k in c:
                        if isinstance(c[k], list):
                            c_in[k] = [torch.cat([unconditional_conditioning[k][i], c[k][i]])
                                       for i in range(len(c[k]))]
                        else:
                            c_in[k] = torch.cat([unconditional_conditioning[k], c[k]])
                else:
                    c_in = torch.cat([unconditional_conditioning, c])
                model_uncond, model_t = self.model.apply_model(x_in, t_in, c_in).chunk(2)
                model_output = model_uncond + unconditional_guidance_scale * (model_t - model_uncond)
            if self.model.parameterization == "v":
                e_t = self.model.predict_eps_from_z_and_v(x, t, model_output)
            else:
                e_t = model_output
            alphas = self.model.alphas_cumprod if use_original_steps else self.ddim_alphas
            alphas_prev = self.model.alphas_cumprod_prev if use_original_steps else self.ddim_alphas_prev
            sqrt_one_minus_alphas = (self.model.sqrt_one_minus_alphas_cumprod if use_original_steps
                                     else self.ddim_sqrt_one_minus_alphas)
            sigmas = self.model.ddim_sigmas_for_original_num_steps if use_original_steps else self.ddim_sigmas
            # select parameters corresponding to the currently considered timestep
            a_t = torch.full((b, 1, 1, 1), alphas[index], device=device)
            a_prev = torch.full((b, 1, 1, 1), alphas_prev[index], device=device)
            sigma_t = torch.full((b, 1, 1, 1), sigmas[index], device=device)
            sqrt_one_minus_at = torch.full((b, 1, 1, 1), sqrt_one_minus_alphas[index], device=device)
            # current prediction for x_0
            if self.model.parameterization != "v":
                pred_x0 = (x - sqrt_one_minus_at * e_t) / a_t.sqrt()
            else:
                pred_x0 = self.model.predict_start_from_z_and_v(x, t, model_output)
            # direction pointing to x_t
            dir_xt = (1. - a_prev - sigma_t ** 2).sqrt() * e_t
            noise = sigma_t * noise_like(torch, x.shape, device, repeat_noise) * temperature
            if noise_dropout > 0.:
                noise = torch.nn.functional.dropout(noise, p=noise_dropout)
            x_prev = a_prev.sqrt() * pred_x0 + dir_xt + noise
            return x_prev, pred_x0

    return DDIMSampler


def lit_ema(torch, nn):
    """ldm/modules/ema.py's ``LitEma`` and ddpm.py's ``ema_scope``, as written."""
    from contextlib import contextmanager

    class LitEma(nn.Module):
        def __init__(self, model, decay=0.9999, use_num_upates=True):
            super().__init__()
            if decay < 0.0 or decay > 1.0:
                raise ValueError('Decay must be between 0 and 1')
            self.m_name2s_name = {}
            self.register_buffer('decay', torch.tensor(decay, dtype=torch.float32))
            self.register_buffer('num_updates', torch.tensor(0, dtype=torch.int) if use_num_upates
                                 else torch.tensor(-1, dtype=torch.int))
            for name, p in model.named_parameters():
                if p.requires_grad:
                    # remove as '.'-character is not allowed in buffers
                    s_name = name.replace('.', '')
                    self.m_name2s_name.update({name: s_name})
                    self.register_buffer(s_name, p.clone().detach().data)
            self.collected_params = []

        def forward(self, model):
            decay = self.decay
            if self.num_updates >= 0:
                self.num_updates += 1
                decay = min(self.decay, (1 + self.num_updates) / (10 + self.num_updates))
            one_minus_decay = 1.0 - decay
            with torch.no_grad():
                m_param = dict(model.named_parameters())
                shadow_params = dict(self.named_buffers())
                for key in m_param:
                    if m_param[key].requires_grad:
                        sname = self.m_name2s_name[key]
                        shadow_params[sname] = shadow_params[sname].type_as(m_param[key])
                        shadow_params[sname].sub_(one_minus_decay * (shadow_params[sname] - m_param[key]))
                    else:
                        assert key not in self.m_name2s_name

        def copy_to(self, model):
            m_param = dict(model.named_parameters())
            shadow_params = dict(self.named_buffers())
            for key in m_param:
                if m_param[key].requires_grad:
                    m_param[key].data.copy_(shadow_params[self.m_name2s_name[key]].data)
                else:
                    assert key not in self.m_name2s_name

        def store(self, parameters):
            self.collected_params = [param.clone() for param in parameters]

        def restore(self, parameters):
            for c_param, param in zip(self.collected_params, parameters):
                param.data.copy_(c_param.data)

    @contextmanager
    def ema_scope(ldm, context=None):
        if ldm.use_ema:
            ldm.model_ema.store(ldm.model.parameters())
            ldm.model_ema.copy_to(ldm.model)
        try:
            yield None
        finally:
            if ldm.use_ema:
                ldm.model_ema.restore(ldm.model.parameters())

    return LitEma, ema_scope
