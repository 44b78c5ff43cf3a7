"""EDM (Karras et al. 2022) as NVlabs/edm wrote it: ``training/networks.py`` (``weight_init``, ``Linear``, ``Conv2d``
with up/downsampling, ``GroupNorm``, ``AttentionOp``, ``UNetBlock``, ``PositionalEmbedding``, ``FourierEmbedding``,
``DhariwalUNet``, ``EDMPrecond``), ``training/loss.py`` (``EDMLoss``), ``training/training_loop.py`` (the loss scaling,
the lr ramp-up, ``nan_to_num`` of the gradients, Adam, the EMA) and ``generate.py`` (``edm_sampler``); and
crowsonkb/k-diffusion's ``sampling.py`` (``append_zero``, ``get_sigmas_karras``, ``to_d``, ``sample_heun``,
``sample_dpmpp_2m``), ``utils.py`` (``append_dims``) and ``layers.py`` (``Denoiser``), for ``torch`` being torch or
kiln: the program of ``test_porting_probes_edm_karras.py``, whose docstring says what it covers and what was adapted.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np


def edm(torch, keep_dtype=False):
    """The repositories' functions and classes, closed over ``torch``. ``keep_dtype``: ``EDMPrecond.forward`` keeps the
    input's dtype where the repository writes ``torch.float32`` (the float64 comparison; see the test module)."""
    silu = torch.nn.functional.silu
    precond_dtype = (lambda x: x.dtype) if keep_dtype else (lambda x: torch.float32)

    # ------------------------------------------------------------ training/networks.py
    def weight_init(shape, mode, fan_in, fan_out):
        if mode == 'xavier_uniform': return np.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1)
        if mode == 'xavier_normal':  return np.sqrt(2 / (fan_in + fan_out)) * torch.randn(*shape)
        if mode == 'kaiming_uniform': return np.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)
        if mode == 'kaiming_normal':  return np.sqrt(1 / fan_in) * torch.randn(*shape)
        raise ValueError(f'Invalid init mode "{mode}"')

    class Linear(torch.nn.Module):
        def __init__(self, in_features, out_features, bias=True, init_mode='kaiming_normal', init_weight=1, init_bias=0):
            super().__init__()
            self.in_features = in_features
            self.out_features = out_features
            init_kwargs = dict(mode=init_mode, fan_in=in_features, fan_out=out_features)
            self.weight = torch.nn.Parameter(weight_init([out_features, in_features], **init_kwargs) * init_weight)
            self.bias = torch.nn.Parameter(weight_init([out_features], **init_kwargs) * init_bias) if bias else None

        def forward(self, x):
            x = x @ self.weight.to(x.dtype).t()
            if self.bias is not None:
                x = x.add_(self.bias.to(x.dtype))
            return x

    class Conv2d(torch.nn.Module):
        def __init__(self,
            in_channels, out_channels, kernel, bias=True, up=False, down=False,
            resample_filter=[1,1], fused_resample=False, init_mode='kaiming_normal', init_weight=1, init_bias=0,
        ):
            assert not (up and down)
            super().__init__()
            self.in_channels = in_channels
            self.out_channels = out_channels
            self.up = up
            self.down = down
            self.fused_resample = fused_resample
            init_kwargs = dict(mode=init_mode, fan_in=in_channels*kernel*kernel, fan_out=out_channels*kernel*kernel)
            self.weight = torch.nn.Parameter(weight_init([out_channels, in_channels, kernel, kernel], **init_kwargs) * init_weight) if kernel else None
            self.bias = torch.nn.Parameter(weight_init([out_channels], **init_kwargs) * init_bias) if kernel and bias else None
            f = torch.as_tensor(resample_filter, dtype=torch.float32)
            f = f.ger(f).unsqueeze(0).unsqueeze(1) / f.sum().square()
            self.register_buffer('resample_filter', f if up or down else None)

        def forward(self, x):
            w = self.weight.to(x.dtype) if self.weight is not None else None
            b = self.bias.to(x.dtype) if self.bias is not None else None
            f = self.resample_filter.to(x.dtype) if self.resample_filter is not None else None
            w_pad = w.shape[-1] // 2 if w is not None else 0
            f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0

            if self.fused_resample and self.up and w is not None:
                x = torch.nn.functional.conv_transpose2d(x, f.mul(4).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels, stride=2, padding=max(f_pad - w_pad, 0))
                x = torch.nn.functional.conv2d(x, w, padding=max(w_pad - f_pad, 0))
            elif self.fused_resample and self.down and w is not None:
                x = torch.nn.functional.conv2d(x, w, padding=w_pad+f_pad)
                x = torch.nn.functional.conv2d(x, f.tile([self.out_channels, 1, 1, 1]), groups=self.out_channels, stride=2)
            else:
                if self.up:
                    x = torch.nn.functional.conv_transpose2d(x, f.mul(4).tile([self.in_channels, 1, 1, 1]), groups=self.in_channels, stride=2, padding=f_pad)
                if self.down:
                    x = torch.nn.functional.conv2d(x, f.tile([self.in_channels, 1, 1, 1]), groups=self.in_channels, stride=2, padding=f_pad)
                if w is not None:
                    x = torch.nn.functional.conv2d(x, w, padding=w_pad)
            if b is not None:
                x = x.add_(b.reshape(1, -1, 1, 1))
            return x

    class GroupNorm(torch.nn.Module):
        def __init__(self, num_channels, num_groups=32, min_channels_per_group=4, eps=1e-5):
            super().__init__()
            self.num_groups = min(num_groups, num_channels // min_channels_per_group)
            self.eps = eps
            self.weight = torch.nn.Parameter(torch.ones(num_channels))
            self.bias = torch.nn.Parameter(torch.zeros(num_channels))

        def forward(self, x):
            x = torch.nn.functional.group_norm(x, num_groups=self.num_groups, weight=self.weight.to(x.dtype), bias=self.bias.to(x.dtype), eps=self.eps)
            return x

    # Attention weight computation, i.e., softmax(Q^T * K). Performs all computation using FP32 (here: the compared
    # dtype, see ``attention_dtype``), but uses the original datatype for inputs/outputs/gradients.
    attention_dtype = (lambda q: q.dtype) if keep_dtype else (lambda q: torch.float32)

    class AttentionOp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k):
            w = torch.einsum('ncq,nck->nqk', q.to(attention_dtype(q)), (k / np.sqrt(k.shape[1])).to(attention_dtype(q))).softmax(dim=2).to(q.dtype)
            ctx.save_for_backward(q, k, w)
            return w

        @staticmethod
        def backward(ctx, dw):
            q, k, w = ctx.saved_tensors
            float_dtype = attention_dtype(q)
            db = torch._softmax_backward_data(grad_output=dw.to(float_dtype), output=w.to(float_dtype), dim=2, input_dtype=float_dtype)
            dq = torch.einsum('nck,nqk->ncq', k.to(float_dtype), db).to(q.dtype) / np.sqrt(k.shape[1])
            dk = torch.einsum('ncq,nqk->nck', q.to(float_dtype), db).to(k.dtype) / np.sqrt(k.shape[1])
            return dq, dk

    class UNetBlock(torch.nn.Module):
        def __init__(self,
            in_channels, out_channels, emb_channels, up=False, down=False, attention=False,
            num_heads=None, channels_per_head=64, dropout=0, skip_scale=1, eps=1e-5,
            resample_filter=[1,1], resample_proj=False, adaptive_scale=True,
            init=dict(), init_zero=dict(init_weight=0), init_attn=None,
        ):
            super().__init__()
            self.in_channels = in_channels
            self.out_channels = out_channels
            self.emb_channels = emb_channels
            self.num_heads = 0 if not attention else num_heads if num_heads is not None else out_channels // channels_per_head
            self.dropout = dropout
            self.skip_scale = skip_scale
            self.adaptive_scale = adaptive_scale

            self.norm0 = GroupNorm(num_channels=in_channels, eps=eps)
            self.conv0 = Conv2d(in_channels=in_channels, out_channels=out_channels, kernel=3, up=up, down=down, resample_filter=resample_filter, **init)
            self.affine = Linear(in_features=emb_channels, out_features=out_channels*(2 if adaptive_scale else 1), **init)
            self.norm1 = GroupNorm(num_channels=out_channels, eps=eps)
            self.conv1 = Conv2d(in_channels=out_channels, out_channels=out_channels, kernel=3, **init_zero)

            self.skip = None
            if out_channels != in_channels or up or down:
                kernel = 1 if resample_proj or out_channels!= in_channels else 0
                self.skip = Conv2d(in_channels=in_channels, out_channels=out_channels, kernel=kernel, up=up, down=down, resample_filter=resample_filter, **init)

            if self.num_heads:
                self.norm2 = GroupNorm(num_channels=out_channels, eps=eps)
                self.qkv = Conv2d(in_channels=out_channels, out_channels=out_channels*3, kernel=1, **(init_attn if init_attn is not None else init))
                self.proj = Conv2d(in_channels=out_channels, out_channels=out_channels, kernel=1, **init_zero)

        def forward(self, x, emb):
            orig = x
            x = self.conv0(silu(self.norm0(x)))

            params = self.affine(emb).unsqueeze(2).unsqueeze(3).to(x.dtype)
            if self.adaptive_scale:
                scale, shift = params.chunk(chunks=2, dim=1)
                x = silu(torch.addcmul(shift, self.norm1(x), scale + 1))
            else:
                x = silu(self.norm1(x.add_(params)))

            x = self.conv1(torch.nn.functional.dropout(x, p=self.dropout, training=self.training))
            x = x.add_(self.skip(orig) if self.skip is not None else orig)
            x = x * self.skip_scale

            if self.num_heads:
                q, k, v = self.qkv(self.norm2(x)).reshape(x.shape[0] * self.num_heads, x.shape[1] // self.num_heads, 3, -1).unbind(2)
                w = AttentionOp.apply(q, k)
                a = torch.einsum('nqk,nck->ncq', w, v)
                x = self.proj(a.reshape(*x.shape)).add_(x)
                x = x * self.skip_scale
            return x

    class PositionalEmbedding(torch.nn.Module):
        def __init__(self, num_channels, max_positions=10000, endpoint=False):
            super().__init__()
            self.num_channels = num_channels
            self.max_positions = max_positions
            self.endpoint = endpoint

        def forward(self, x):
            freqs = torch.arange(start=0, end=self.num_channels//2, dtype=torch.float32, device=x.device)
            freqs = freqs / (self.num_channels // 2 - (1 if self.endpoint else 0))
            freqs = (1 / self.max_positions) ** freqs
            x = x.ger(freqs.to(x.dtype))
            x = torch.cat([x.cos(), x.sin()], dim=1)
            return x

    class FourierEmbedding(torch.nn.Module):
        def __init__(self, num_channels, scale=16):
            super().__init__()
            self.register_buffer('freqs', torch.randn(num_channels // 2) * scale)

        def forward(self, x):
            x = x.ger((2 * np.pi * self.freqs).to(x.dtype))
            x = torch.cat([x.cos(), x.sin()], dim=1)
            return x

    class DhariwalUNet(torch.nn.Module):
        def __init__(self,
            img_resolution,                     # Image resolution at input/output.
            in_channels,                        # Number of color channels at input.
            out_channels,                       # Number of color channels at output.
            label_dim           = 0,            # Number of class labels, 0 = unconditional.
            augment_dim         = 0,            # Augmentation label dimensionality, 0 = no augmentation.

            model_channels      = 192,          # Base multiplier for the number of channels.
            channel_mult        = [1,2,3,4],    # Per-resolution multipliers for the number of channels.
            channel_mult_emb    = 4,            # Multiplier for the dimensionality of the embedding vector.
            num_blocks          = 3,            # Number of residual blocks per resolution.
            attn_resolutions    = [32,16,8],    # List of resolutions with self-attention.
            dropout             = 0.10,         # List of resolutions with self-attention.
            label_dropout       = 0,            # Dropout probability of class labels for classifier-free guidance.
            channels_per_head   = 64,           # (the probe's tiny widths: the repository passes 64)
            init_zero_weight    = 0,            # (the probe: 1e-2, so that the zero-initialised outputs train)
        ):
            super().__init__()
            self.label_dropout = label_dropout
            emb_channels = model_channels * channel_mult_emb
            init = dict(init_mode='kaiming_uniform', init_weight=np.sqrt(1/3), init_bias=np.sqrt(1/3))
            init_zero = dict(init_mode='kaiming_uniform', init_weight=init_zero_weight, init_bias=init_zero_weight)
            block_kwargs = dict(emb_channels=emb_channels, channels_per_head=channels_per_head, dropout=dropout, init=init, init_zero=init_zero)

            # Mapping.
            self.map_noise = PositionalEmbedding(num_channels=model_channels)
            self.map_augment = Linear(in_features=augment_dim, out_features=model_channels, bias=False, **init_zero) if augment_dim else None
            self.map_layer0 = Linear(in_features=model_channels, out_features=emb_channels, **init)
            self.map_layer1 = Linear(in_features=emb_channels, out_features=emb_channels, **init)
            self.map_label = Linear(in_features=label_dim, out_features=emb_channels, bias=False, init_mode='kaiming_normal', init_weight=np.sqrt(label_dim)) if label_dim else None

            # Encoder.
            self.enc = torch.nn.ModuleDict()
            cout = in_channels
            for level, mult in enumerate(channel_mult):
                res = img_resolution >> level
                if level == 0:
                    cin = cout
                    cout = model_channels * mult
                    self.enc[f'{res}x{res}_conv'] = Conv2d(in_channels=cin, out_channels=cout, kernel=3, **init)
                else:
                    self.enc[f'{res}x{res}_down'] = UNetBlock(in_channels=cout, out_channels=cout, down=True, **block_kwargs)
                for idx in range(num_blocks):
                    cin = cout
                    cout = model_channels * mult
                    self.enc[f'{res}x{res}_block{idx}'] = UNetBlock(in_channels=cin, out_channels=cout, attention=(res in attn_resolutions), **block_kwargs)
            skips = [block.out_channels for block in self.enc.values()]

            # Decoder.
            self.dec = torch.nn.ModuleDict()
            for level, mult in reversed(list(enumerate(channel_mult))):
                res = img_resolution >> level
                if level == len(channel_mult) - 1:
                    self.dec[f'{res}x{res}_in0'] = UNetBlock(in_channels=cout, out_channels=cout, attention=True, **block_kwargs)
                    self.dec[f'{res}x{res}_in1'] = UNetBlock(in_channels=cout, out_channels=cout, **block_kwargs)
                else:
                    self.dec[f'{res}x{res}_up'] = UNetBlock(in_channels=cout, out_channels=cout, up=True, **block_kwargs)
                for idx in range(num_blocks + 1):
                    cin = cout + skips.pop()
                    cout = model_channels * mult
                    self.dec[f'{res}x{res}_block{idx}'] = UNetBlock(in_channels=cin, out_channels=cout, attention=(res in attn_resolutions), **block_kwargs)
            self.out_norm = GroupNorm(num_channels=cout)
            self.out_conv = Conv2d(in_channels=cout, out_channels=out_channels, kernel=3, **init_zero)

        def forward(self, x, noise_labels, class_labels, augment_labels=None):
            # Mapping.
            emb = self.map_noise(noise_labels)
            if self.map_augment is not None and augment_labels is not None:
                emb = emb + self.map_augment(augment_labels)
            emb = silu(self.map_layer0(emb))
            emb = self.map_layer1(emb)
            if self.map_label is not None:
                tmp = class_labels
                if self.training and self.label_dropout:
                    tmp = tmp * (torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout).to(tmp.dtype)
                emb = emb + self.map_label(tmp)
            emb = silu(emb)

            # Encoder.
            skips = []
            for block in self.enc.values():
                x = block(x, emb) if isinstance(block, UNetBlock) else block(x)
                skips.append(x)

            # Decoder.
            for block in self.dec.values():
                if x.shape[1] != block.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = block(x, emb)
            x = self.out_conv(silu(self.out_norm(x)))
            return x

    class EDMPrecond(torch.nn.Module):
        def __init__(self,
            img_resolution,                     # Image resolution.
            img_channels,                       # Number of color channels.
            label_dim       = 0,                # Number of class labels, 0 = unconditional.
            use_fp16        = False,            # Execute the underlying model at FP16 precision?
            sigma_min       = 0,                # Minimum supported noise level.
            sigma_max       = float('inf'),     # Maximum supported noise level.
            sigma_data      = 0.5,              # Expected standard deviation of the training data.
            model_type      = 'DhariwalUNet',   # Class name of the underlying model.
            **model_kwargs,                     # Keyword arguments for the underlying model.
        ):
            super().__init__()
            self.img_resolution = img_resolution
            self.img_channels = img_channels
            self.label_dim = label_dim
            self.use_fp16 = use_fp16
            self.sigma_min = sigma_min
            self.sigma_max = sigma_max
            self.sigma_data = sigma_data
            self.model = {'DhariwalUNet': DhariwalUNet}[model_type](img_resolution=img_resolution, in_channels=img_channels, out_channels=img_channels, label_dim=label_dim, **model_kwargs)

        def forward(self, x, sigma, class_labels=None, force_fp32=False, **model_kwargs):
            x = x.to(precond_dtype(x))
            sigma = sigma.to(precond_dtype(x)).reshape(-1, 1, 1, 1)
            class_labels = None if self.label_dim == 0 else torch.zeros([1, self.label_dim], device=x.device) if class_labels is None else class_labels.to(precond_dtype(x)).reshape(-1, self.label_dim)
            dtype = torch.float16 if (self.use_fp16 and not force_fp32 and x.device.type == 'cuda') else precond_dtype(x)

            c_skip = self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)
            c_out = sigma * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2).sqrt()
            c_in = 1 / (self.sigma_data ** 2 + sigma ** 2).sqrt()
            c_noise = sigma.log() / 4

            F_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=class_labels, **model_kwargs)
            assert F_x.dtype == dtype
            D_x = c_skip * x + c_out * F_x.to(precond_dtype(x))
            return D_x

        def round_sigma(self, sigma):
            return torch.as_tensor(sigma)

    # ------------------------------------------------------------ training/loss.py
    class EDMLoss:
        def __init__(self, P_mean=-1.2, P_std=1.2, sigma_data=0.5):
            self.P_mean = P_mean
            self.P_std = P_std
            self.sigma_data = sigma_data

        def __call__(self, net, images, labels=None, augment_pipe=None):
            rnd_normal = torch.randn([images.shape[0], 1, 1, 1], device=images.device)
            sigma = (rnd_normal * self.P_std + self.P_mean).exp()
            weight = (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2
            y, augment_labels = augment_pipe(images) if augment_pipe is not None else (images, None)
            n = torch.randn_like(y) * sigma
            D_yn = net(y + n, sigma, labels, augment_labels=augment_labels)
            loss = weight * ((D_yn - y) ** 2)
            return loss

    # ------------------------------------------------------------ generate.py
    def edm_sampler(
        net, latents, class_labels=None, randn_like=torch.randn_like,
        num_steps=18, sigma_min=0.002, sigma_max=80, rho=7,
        S_churn=0, S_min=0, S_max=float('inf'), S_noise=1,
    ):
        # Adjust noise levels based on what's supported by the network.
        sigma_min = max(sigma_min, net.sigma_min)
        sigma_max = min(sigma_max, net.sigma_max)

        # Time step discretization.
        step_indices = torch.arange(num_steps, dtype=torch.float64, device=latents.device)
        t_steps = (sigma_max ** (1 / rho) + step_indices / (num_steps - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
        t_steps = torch.cat([net.round_sigma(t_steps), torch.zeros_like(t_steps[:1])]) # t_N = 0

        # Main sampling loop.
        x_next = latents.to(torch.float64) * t_steps[0]
        for i, (t_cur, t_next) in enumerate(zip(t_steps[:-1], t_steps[1:])): # 0, ..., N-1
            x_cur = x_next

            # Increase noise temporarily.
            gamma = min(S_churn / num_steps, np.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0
            t_hat = net.round_sigma(t_cur + gamma * t_cur)
            x_hat = x_cur + (t_hat ** 2 - t_cur ** 2).sqrt() * S_noise * randn_like(x_cur)

            # Euler step.
            denoised = net(x_hat, t_hat, class_labels).to(torch.float64)
            d_cur = (x_hat - denoised) / t_hat
            x_next = x_hat + (t_next - t_hat) * d_cur

            # Apply 2nd order correction.
            if i < num_steps - 1:
                denoised = net(x_next, t_next, class_labels).to(torch.float64)
                d_prime = (x_next - denoised) / t_next
                x_next = x_hat + (t_next - t_hat) * (0.5 * d_cur + 0.5 * d_prime)

        return x_next

    # ------------------------------------------------------------ k_diffusion/utils.py, sampling.py, layers.py
    def append_dims(x, target_dims):
        """Appends dimensions to the end of a tensor until it has target_dims dimensions."""
        dims_to_append = target_dims - x.ndim
        if dims_to_append < 0:
            raise ValueError(f'input has {x.ndim} dims but target_dims is {target_dims}, which is less')
        return x[(...,) + (None,) * dims_to_append]

    def append_zero(x):
        return torch.cat([x, x.new_zeros([1])])

    def get_sigmas_karras(n, sigma_min, sigma_max, rho=7., device='cpu'):
        """Constructs the noise schedule of Karras et al. (2022)."""
        ramp = torch.linspace(0, 1, n)
        min_inv_rho = sigma_min ** (1 / rho)
        max_inv_rho = sigma_max ** (1 / rho)
        sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
        return append_zero(sigmas).to(device)

    def to_d(x, sigma, denoised):
        """Converts a denoiser output to a Karras ODE derivative."""
        return (x - denoised) / append_dims(sigma, x.ndim)

    @torch.no_grad()
    def sample_heun(model, x, sigmas, extra_args=None, callback=None, disable=None, s_churn=0., s_tmin=0., s_tmax=float('inf'), s_noise=1.):
        """Implements Algorithm 2 (Heun steps) from Karras et al. (2022)."""
        extra_args = {} if extra_args is None else extra_args
        s_in = x.new_ones([x.shape[0]])
        for i in range(len(sigmas) - 1):
            gamma = min(s_churn / (len(sigmas) - 1), 2 ** 0.5 - 1) if s_tmin <= sigmas[i] <= s_tmax else 0.
            eps = torch.randn_like(x) * s_noise
            sigma_hat = sigmas[i] * (gamma + 1)
            if gamma > 0:
                x = x + eps * (sigma_hat ** 2 - sigmas[i] ** 2) ** 0.5
            denoised = model(x, sigma_hat * s_in, **extra_args)
            d = to_d(x, sigma_hat, denoised)
            if callback is not None:
                callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigma_hat, 'denoised': denoised})
            dt = sigmas[i + 1] - sigma_hat
            if sigmas[i + 1] == 0:
                # Euler method
                x = x + d * dt
            else:
                # Heun's method
                x_2 = x + d * dt
                denoised_2 = model(x_2, sigmas[i + 1] * s_in, **extra_args)
                d_2 = to_d(x_2, sigmas[i + 1], denoised_2)
                d_prime = (d + d_2) / 2
                x = x + d_prime * dt
        return x

    @torch.no_grad()
    def sample_dpmpp_2m(model, x, sigmas, extra_args=None, callback=None, disable=None):
        """DPM-Solver++(2M)."""
        extra_args = {} if extra_args is None else extra_args
        s_in = x.new_ones([x.shape[0]])
        sigma_fn = lambda t: t.neg().exp()
        t_fn = lambda sigma: sigma.log().neg()
        old_denoised = None

        for i in range(len(sigmas) - 1):
            denoised = model(x, sigmas[i] * s_in, **extra_args)
            if callback is not None:
                callback({'x': x, 'i': i, 'sigma': sigmas[i], 'sigma_hat': sigmas[i], 'denoised': denoised})
            t, t_next = t_fn(sigmas[i]), t_fn(sigmas[i + 1])
            h = t_next - t
            if old_denoised is None or sigmas[i + 1] == 0:
                x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised
            else:
                h_last = t - t_fn(sigmas[i - 1])
                r = h_last / h
                denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
                x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised_d
            old_denoised = denoised
        return x

    class Denoiser(torch.nn.Module):
        """A Karras et al. preconditioner for denoising diffusion models."""

        def __init__(self, inner_model, sigma_data=1., weighting='karras'):
            super().__init__()
            self.inner_model = inner_model
            self.sigma_data = sigma_data
            if weighting == 'karras':
                self.weighting = torch.ones_like
            elif weighting == 'soft-min-snr':
                self.weighting = self._weighting_soft_min_snr
            elif weighting == 'snr':
                self.weighting = self._weighting_snr
            else:
                raise ValueError(f'Unknown weighting type {weighting}')

        def _weighting_soft_min_snr(self, sigma):
            return (sigma * self.sigma_data) ** 2 / (sigma ** 2 + self.sigma_data ** 2) ** 2

        def _weighting_snr(self, sigma):
            return self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)

        def get_scalings(self, sigma):
            c_skip = self.sigma_data ** 2 / (sigma ** 2 + self.sigma_data ** 2)
            c_out = sigma * self.sigma_data / (sigma ** 2 + self.sigma_data ** 2) ** 0.5
            c_in = 1 / (sigma ** 2 + self.sigma_data ** 2) ** 0.5
            return c_skip, c_out, c_in

        def loss(self, input, noise, sigma, **kwargs):
            c_skip, c_out, c_in = [append_dims(x, input.ndim) for x in self.get_scalings(sigma)]
            c_weight = self.weighting(sigma)
            noised_input = input + noise * append_dims(sigma, input.ndim)
            model_output = self.inner_model(noised_input * c_in, sigma, **kwargs)
            target = (input - c_skip * noised_input) / c_out
            return ((model_output - target) ** 2).flatten(1).mean(1) * c_weight

        def forward(self, input, sigma, **kwargs):
            c_skip, c_out, c_in = [append_dims(x, input.ndim) for x in self.get_scalings(sigma)]
            return self.inner_model(input * c_in, sigma, **kwargs) * c_out + input * c_skip

    class KarrasInner(torch.nn.Module):
        """k-diffusion's image models take ``sigma`` and embed ``c_noise = sigma.log() / 4`` themselves
        (``image_v1.py``); the probe's inner model does that around EDM's UNet."""

        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, input, sigma):
            return self.unet(input, sigma.log() / 4, None)

    return SimpleNamespace(**{name: value for name, value in locals().items() if not name.startswith('_')})


def training_loop_step(torch, net, ema, loss_fn, optimizer, optimizer_kwargs, images, cur_nimg, batch_size,
                       batch_gpu_total, loss_scaling=1, lr_rampup_kimg=10000, ema_halflife_kimg=500,
                       ema_rampup_ratio=0.05, labels=None, ramp_up_lr=True):
    """One iteration of ``training/training_loop.py``'s ``while True`` (one accumulation round, no DDP, no stats): the
    loss scaled and backpropagated, the lr ramp-up (``ramp_up_lr=False``: done by the caller with ``ramp_up``), the
    gradients' ``nan_to_num``, the step and the EMA update."""
    # Accumulate gradients.
    optimizer.zero_grad(set_to_none=True)
    loss = loss_fn(net=net, images=images, labels=labels, augment_pipe=None)
    loss.sum().mul(loss_scaling / batch_gpu_total).backward()

    # Update weights.
    if ramp_up_lr:
        ramp_up(optimizer, optimizer_kwargs, cur_nimg, lr_rampup_kimg)
    for param in net.parameters():
        if param.grad is not None:
            torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5, out=param.grad)
    optimizer.step()

    # Update EMA.
    ema_halflife_nimg = ema_halflife_kimg * 1000
    if ema_rampup_ratio is not None:
        ema_halflife_nimg = min(ema_halflife_nimg, cur_nimg * ema_rampup_ratio)
    ema_beta = 0.5 ** (batch_size / max(ema_halflife_nimg, 1e-8))
    for p_ema, p_net in zip(ema.parameters(), net.parameters()):
        p_ema.copy_(p_net.detach().lerp(p_ema, ema_beta))
    return loss


def ramp_up(optimizer, optimizer_kwargs, cur_nimg, lr_rampup_kimg):
    """training_loop.py's learning-rate ramp-up, written into the param groups before ``optimizer.step()``."""
    for g in optimizer.param_groups:
        g['lr'] = optimizer_kwargs['lr'] * min(cur_nimg / max(lr_rampup_kimg * 1000, 1e-8), 1)


def make_ema(net):
    """training_loop.py: ``ema = copy.deepcopy(net).eval().requires_grad_(False)``."""
    return copy.deepcopy(net).eval().requires_grad_(False)
