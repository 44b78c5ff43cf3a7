"""A neural audio codec as its references write it, for ``torch`` being torch or kiln: facebookresearch/encodec's
``modules/conv.py`` (``SConv1d``/``SConvTranspose1d``: causal ``pad1d`` and ``unpad1d``), ``quantization/core_vq.py``
(``ema_inplace``, ``laplace_smoothing``, ``sample_vectors``, ``EuclideanCodebook``, ``VectorQuantization``,
``ResidualVectorQuantization``), ``msstftd.py`` (the STFT discriminator) and ``adversarial.py``'s hinge losses;
descript-audio-codec's ``nn/layers.py`` (``snake``, ``WNConv1d``), ``nn/quantize.py`` (factorized, normalized
``VectorQuantize`` and ``ResidualVectorQuantize`` with quantizer dropout), ``nn/loss.py`` (``MultiScaleSTFTLoss``,
``MelSpectrogramLoss``, ``GANLoss``) and ``train.py``'s alternating steps: the program of
``test_porting_probes_audio_codec.py``, whose docstring says what it covers and what was adapted.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from e2e.hifigan_program import mel_filters


def audio_codec(torch, nn, F, compile_friendly=False):
    """The references' functions and classes, closed over ``torch``. ``compile_friendly`` makes the two edits a
    ``torch.compile(fullgraph=True)`` user makes: ``expire_codes_`` without its data-dependent ``if not
    torch.any(expired_codes): return`` (the ``torch.where`` after it keeps the codebook where no code expired), and
    no ``init_embed_`` (the k-means initialization behind ``if self.inited``) while ``torch.compiler.is_compiling()``:
    an eager forward before the compiled steps initializes the codebooks."""
    weight_norm = torch.nn.utils.parametrizations.weight_norm

    # ------------------------------------------------------------ encodec/modules/conv.py (causal, weight norm)
    def get_extra_padding_for_conv1d(x, kernel_size, stride, padding_total=0):
        length = x.shape[-1]
        n_frames = (length - kernel_size + padding_total) / stride + 1
        ideal_length = (math.ceil(n_frames) - 1) * stride + (kernel_size - padding_total)
        return ideal_length - length

    def pad1d(x, paddings, mode='zero', value=0.):
        length = x.shape[-1]
        padding_left, padding_right = paddings
        assert padding_left >= 0 and padding_right >= 0, (padding_left, padding_right)
        if mode == 'reflect':
            max_pad = max(padding_left, padding_right)
            extra_pad = 0
            if length <= max_pad:
                extra_pad = max_pad - length + 1
                x = F.pad(x, (0, extra_pad))
            padded = F.pad(x, paddings, mode, value)
            end = padded.shape[-1] - extra_pad
            return padded[..., :end]
        else:
            return F.pad(x, paddings, mode, value)

    def unpad1d(x, paddings):
        padding_left, padding_right = paddings
        assert padding_left >= 0 and padding_right >= 0, (padding_left, padding_right)
        assert (padding_left + padding_right) <= x.shape[-1]
        end = x.shape[-1] - padding_right
        return x[..., padding_left: end]

    class SConv1d(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, dilation=1, causal=True,
                     pad_mode='reflect'):
            super().__init__()
            self.conv = weight_norm(nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation))
            self.causal = causal
            self.pad_mode = pad_mode

        def forward(self, x):
            B, C, T = x.shape
            kernel_size = self.conv.kernel_size[0]
            stride = self.conv.stride[0]
            dilation = self.conv.dilation[0]
            kernel_size = (kernel_size - 1) * dilation + 1  # effective kernel size with dilations
            padding_total = kernel_size - stride
            extra_padding = get_extra_padding_for_conv1d(x, kernel_size, stride, padding_total)
            if self.causal:
                # Left padding for causal
                x = pad1d(x, (padding_total, extra_padding), mode=self.pad_mode)
            else:
                padding_right = padding_total // 2
                padding_left = padding_total - padding_right
                x = pad1d(x, (padding_left, padding_right + extra_padding), mode=self.pad_mode)
            return self.conv(x)

    class SConvTranspose1d(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, causal=True, trim_right_ratio=1.):
            super().__init__()
            self.convtr = weight_norm(nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride))
            self.causal = causal
            self.trim_right_ratio = trim_right_ratio

        def forward(self, x):
            kernel_size = self.convtr.kernel_size[0]
            stride = self.convtr.stride[0]
            padding_total = kernel_size - stride
            y = self.convtr(x)
            if self.causal:
                padding_right = math.ceil(padding_total * self.trim_right_ratio)
                padding_left = padding_total - padding_right
                y = unpad1d(y, (padding_left, padding_right))
            else:
                padding_right = padding_total // 2
                padding_left = padding_total - padding_right
                y = unpad1d(y, (padding_left, padding_right))
            return y

    # ------------------------------------------------------------ dac/nn/layers.py
    def WNConv1d(*args, **kwargs):
        return nn.utils.weight_norm(nn.Conv1d(*args, **kwargs))

    def snake(x, alpha):
        shape = x.shape
        x = x.reshape(shape[0], shape[1], -1)
        x = x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)
        x = x.reshape(shape)
        return x

    class Snake1d(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.alpha = nn.Parameter(torch.ones(1, channels, 1))

        def forward(self, x):
            return snake(x, self.alpha)

    class Encoder(nn.Module):
        def __init__(self, channels=4, dimension=8, stride=4):
            super().__init__()
            self.model = nn.Sequential(
                SConv1d(1, channels, 7), nn.ELU(alpha=1.0), SConv1d(channels, 2 * channels, 2 * stride, stride=stride),
                Snake1d(2 * channels), SConv1d(2 * channels, dimension, 3, pad_mode='constant'))

        def forward(self, x):
            return self.model(x)

    class Decoder(nn.Module):
        def __init__(self, channels=4, dimension=8, stride=4):
            super().__init__()
            self.model = nn.Sequential(
                SConv1d(dimension, 2 * channels, 3), Snake1d(2 * channels),
                SConvTranspose1d(2 * channels, channels, 2 * stride, stride=stride), nn.ELU(alpha=1.0),
                SConv1d(channels, 1, 7), nn.Tanh())

        def forward(self, z):
            return self.model(z)

    # ------------------------------------------------------------ encodec/quantization/core_vq.py
    def default(val, d):
        return val if val is not None else d

    def ema_inplace(moving_avg, new, decay: float):
        moving_avg.data.mul_(decay).add_(new, alpha=(1 - decay))

    def laplace_smoothing(x, n_categories: int, epsilon: float = 1e-5):
        return (x + epsilon) / (x.sum() + n_categories * epsilon)

    def uniform_init(*shape: int):
        t = torch.empty(shape)
        nn.init.kaiming_uniform_(t)
        return t

    def sample_vectors(samples, num: int):
        num_samples, device = samples.shape[0], samples.device

        if num_samples >= num:
            indices = torch.randperm(num_samples, device=device)[:num]
        else:
            indices = torch.randint(0, num_samples, (num,), device=device)

        return samples[indices]

    def kmeans(samples, num_clusters: int, num_iters: int = 10):
        dim, dtype = samples.shape[-1], samples.dtype

        means = sample_vectors(samples, num_clusters)

        for _ in range(num_iters):
            diffs = samples[:, None, :] - means[None, :, :]  # "n d -> n () d", "c d -> () c d"
            dists = -(diffs ** 2).sum(dim=-1)

            buckets = dists.max(dim=-1).indices
            bins = torch.bincount(buckets, minlength=num_clusters)
            zero_mask = bins == 0
            bins_min_clamped = bins.masked_fill(zero_mask, 1)

            new_means = buckets.new_zeros(num_clusters, dim, dtype=dtype)
            new_means.scatter_add_(0, buckets[:, None].repeat(1, dim), samples)  # repeat(buckets, "n -> n d")
            new_means = new_means / bins_min_clamped[..., None]

            means = torch.where(zero_mask[..., None], means, new_means)

        return means, bins

    class EuclideanCodebook(nn.Module):
        def __init__(self, dim: int, codebook_size: int, kmeans_init: int = False, kmeans_iters: int = 10,
                     decay: float = 0.99, epsilon: float = 1e-5, threshold_ema_dead_code: int = 2):
            super().__init__()
            self.decay = decay
            init_fn = uniform_init if not kmeans_init else torch.zeros
            embed = init_fn(codebook_size, dim)

            self.codebook_size = codebook_size

            self.kmeans_iters = kmeans_iters
            self.epsilon = epsilon
            self.threshold_ema_dead_code = threshold_ema_dead_code

            self.register_buffer("inited", torch.Tensor([not kmeans_init]))
            self.register_buffer("cluster_size", torch.zeros(codebook_size))
            self.register_buffer("embed", embed)
            self.register_buffer("embed_avg", embed.clone())

        def init_embed_(self, data):
            if self.inited:
                return

            embed, cluster_size = kmeans(data, self.codebook_size, self.kmeans_iters)
            self.embed.data.copy_(embed)
            self.embed_avg.data.copy_(embed.clone())
            self.cluster_size.data.copy_(cluster_size)
            self.inited.data.copy_(torch.Tensor([True]))

        def replace_(self, samples, mask):
            modified_codebook = torch.where(
                mask[..., None], sample_vectors(samples, self.codebook_size), self.embed
            )
            self.embed.data.copy_(modified_codebook)

        def expire_codes_(self, batch_samples):
            if self.threshold_ema_dead_code == 0:
                return

            expired_codes = self.cluster_size < self.threshold_ema_dead_code
            if not compile_friendly and not torch.any(expired_codes):
                return

            batch_samples = batch_samples.reshape(-1, batch_samples.shape[-1])  # "... d -> (...) d"
            self.replace_(batch_samples, mask=expired_codes)

        def preprocess(self, x):
            x = x.reshape(-1, x.shape[-1])  # rearrange(x, "... d -> (...) d")
            return x

        def quantize(self, x):
            embed = self.embed.t()
            dist = -(
                x.pow(2).sum(1, keepdim=True)
                - 2 * x @ embed
                + embed.pow(2).sum(0, keepdim=True)
            )
            embed_ind = dist.max(dim=-1).indices
            return embed_ind

        def postprocess_emb(self, embed_ind, shape):
            return embed_ind.view(*shape[:-1])

        def dequantize(self, embed_ind):
            quantize = F.embedding(embed_ind, self.embed)
            return quantize

        def forward(self, x):
            shape, dtype = x.shape, x.dtype
            x = self.preprocess(x)

            if not (compile_friendly and torch.compiler.is_compiling()):
                self.init_embed_(x)

            embed_ind = self.quantize(x)
            embed_onehot = F.one_hot(embed_ind, self.codebook_size).type(dtype)
            embed_ind = self.postprocess_emb(embed_ind, shape)
            quantize = self.dequantize(embed_ind)

            if self.training:
                # We do the expiry of code at that point as buffers are in sync
                # and all the workers will take the same decision.
                self.expire_codes_(x)
                ema_inplace(self.cluster_size, embed_onehot.sum(0), self.decay)
                embed_sum = x.t() @ embed_onehot
                ema_inplace(self.embed_avg, embed_sum.t(), self.decay)
                cluster_size = (
                    laplace_smoothing(self.cluster_size, self.codebook_size, self.epsilon)
                    * self.cluster_size.sum()
                )
                embed_normalized = self.embed_avg / cluster_size.unsqueeze(1)
                self.embed.data.copy_(embed_normalized)

            return quantize, embed_ind

    class VectorQuantization(nn.Module):
        def __init__(self, dim: int, codebook_size: int, codebook_dim=None, decay: float = 0.99,
                     epsilon: float = 1e-5, kmeans_init: bool = True, kmeans_iters: int = 50,
                     threshold_ema_dead_code: int = 2, commitment_weight: float = 1.):
            super().__init__()
            _codebook_dim: int = default(codebook_dim, dim)

            requires_projection = _codebook_dim != dim
            self.project_in = (nn.Linear(dim, _codebook_dim) if requires_projection else nn.Identity())
            self.project_out = (nn.Linear(_codebook_dim, dim) if requires_projection else nn.Identity())

            self.epsilon = epsilon
            self.commitment_weight = commitment_weight

            self._codebook = EuclideanCodebook(dim=_codebook_dim, codebook_size=codebook_size,
                                               kmeans_init=kmeans_init, kmeans_iters=kmeans_iters, decay=decay,
                                               epsilon=epsilon, threshold_ema_dead_code=threshold_ema_dead_code)
            self.codebook_size = codebook_size

        def forward(self, x):
            device = x.device
            x = x.transpose(1, 2)  # rearrange(x, "b d n -> b n d")
            x = self.project_in(x)

            quantize, embed_ind = self._codebook(x)

            if self.training:
                quantize = x + (quantize - x).detach()

            loss = torch.tensor([0.0], device=device, requires_grad=self.training)

            if self.training:
                if self.commitment_weight > 0:
                    commit_loss = F.mse_loss(quantize.detach(), x)
                    loss = loss + commit_loss * self.commitment_weight

            quantize = self.project_out(quantize)
            quantize = quantize.transpose(1, 2)  # rearrange(quantize, "b n d -> b d n")
            return quantize, embed_ind, loss

    class ResidualVectorQuantization(nn.Module):
        def __init__(self, *, num_quantizers, **kwargs):
            super().__init__()
            self.layers = nn.ModuleList(
                [VectorQuantization(**kwargs) for _ in range(num_quantizers)]
            )

        def forward(self, x, n_q=None):
            quantized_out = 0.0
            residual = x

            all_losses = []
            all_indices = []

            n_q = n_q or len(self.layers)

            for layer in self.layers[:n_q]:
                quantized, indices, loss = layer(residual)
                residual = residual - quantized.detach()
                quantized_out = quantized_out + quantized

                all_indices.append(indices)
                all_losses.append(loss)

            out_losses, out_indices = map(torch.stack, (all_losses, all_indices))
            return quantized_out, out_indices, out_losses

    # ------------------------------------------------------------ dac/nn/quantize.py
    class VectorQuantize(nn.Module):
        def __init__(self, input_dim: int, codebook_size: int, codebook_dim: int):
            super().__init__()
            self.codebook_size = codebook_size
            self.codebook_dim = codebook_dim

            self.in_proj = WNConv1d(input_dim, codebook_dim, kernel_size=1)
            self.out_proj = WNConv1d(codebook_dim, input_dim, kernel_size=1)
            self.codebook = nn.Embedding(codebook_size, codebook_dim)

        def forward(self, z):
            # Factorized codes (ViT-VQGAN) Project input into low-dimensional space
            z_e = self.in_proj(z)  # z_e : (B x D x T)
            z_q, indices = self.decode_latents(z_e)

            # Compute commitment loss and codebook loss
            commitment_loss = F.mse_loss(z_e, z_q.detach(), reduction="none").mean([1, 2])
            codebook_loss = F.mse_loss(z_q, z_e.detach(), reduction="none").mean([1, 2])

            z_q = (
                z_e + (z_q - z_e).detach()
            )  # noop in forward pass, straight-through gradient estimator in backward pass

            z_q = self.out_proj(z_q)

            return z_q, commitment_loss, codebook_loss, indices, z_e

        def embed_code(self, embed_id):
            return F.embedding(embed_id, self.codebook.weight)

        def decode_code(self, embed_id):
            return self.embed_code(embed_id).transpose(1, 2)

        def decode_latents(self, latents):
            encodings = latents.transpose(1, 2).reshape(-1, latents.shape[1])  # "b d t -> (b t) d"
            codebook = self.codebook.weight  # codebook: (N x D)

            # L2 normalize encodings and codebook (ViT-VQGAN)
            encodings = F.normalize(encodings)
            codebook = F.normalize(codebook)

            # Compute euclidean distance with codebook
            dist = (
                encodings.pow(2).sum(1, keepdim=True)
                - 2 * encodings @ codebook.t()
                + codebook.pow(2).sum(1, keepdim=True).t()
            )
            indices = (-dist).max(1)[1].reshape(latents.size(0), -1)  # "(b t) -> b t"
            z_q = self.decode_code(indices)
            return z_q, indices

    class ResidualVectorQuantize(nn.Module):
        def __init__(self, input_dim: int = 512, n_codebooks: int = 9, codebook_size: int = 1024,
                     codebook_dim=8, quantizer_dropout: float = 0.0):
            super().__init__()
            if isinstance(codebook_dim, int):
                codebook_dim = [codebook_dim for _ in range(n_codebooks)]

            self.n_codebooks = n_codebooks
            self.codebook_dim = codebook_dim
            self.codebook_size = codebook_size

            self.quantizers = nn.ModuleList(
                [VectorQuantize(input_dim, codebook_size, codebook_dim[i]) for i in range(n_codebooks)]
            )
            self.quantizer_dropout = quantizer_dropout

        def forward(self, z, n_quantizers: int = None):
            z_q = 0
            residual = z
            commitment_loss = 0
            codebook_loss = 0

            codebook_indices = []
            latents = []

            if n_quantizers is None:
                n_quantizers = self.n_codebooks
            if self.training:
                n_quantizers = torch.ones((z.shape[0],)) * self.n_codebooks + 1
                dropout = torch.randint(1, self.n_codebooks + 1, (z.shape[0],))
                n_dropout = int(z.shape[0] * self.quantizer_dropout)
                n_quantizers[:n_dropout] = dropout[:n_dropout]
                n_quantizers = n_quantizers.to(z.device)

            for i, quantizer in enumerate(self.quantizers):
                if self.training is False and i >= n_quantizers:
                    break

                z_q_i, commitment_loss_i, codebook_loss_i, indices_i, z_e_i = quantizer(residual)

                # Create mask to apply quantizer dropout
                mask = (
                    torch.full((z.shape[0],), fill_value=i, device=z.device) < n_quantizers
                )
                z_q = z_q + z_q_i * mask[:, None, None]
                residual = residual - z_q_i

                # Sum losses
                commitment_loss += (commitment_loss_i * mask).mean()
                codebook_loss += (codebook_loss_i * mask).mean()

                codebook_indices.append(indices_i)
                latents.append(z_e_i)

            codes = torch.stack(codebook_indices, dim=1)
            latents = torch.cat(latents, dim=1)

            return z_q, codes, latents, commitment_loss, codebook_loss

    # ------------------------------------------------------------ the generator
    def init_weights(m):  # dac/model/dac.py
        if isinstance(m, nn.Conv1d):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.constant_(m.bias, 0)

    class Codec(nn.Module):
        """EnCodec's ``EncodecModel`` shape (encoder, quantizer, decoder) with either quantizer: ``"encodec"`` (EMA
        codebooks, ``n_q`` fed per step, the bandwidth choice) or ``"dac"`` (factorized codes, quantizer dropout)."""

        def __init__(self, quantizer="encodec", dimension=8, codebook_size=16, n_q=3):
            super().__init__()
            self.encoder = Encoder(dimension=dimension)
            self.decoder = Decoder(dimension=dimension)
            self.kind = quantizer
            if quantizer == "encodec":
                self.quantizer = ResidualVectorQuantization(num_quantizers=n_q, dim=dimension,
                                                            codebook_size=codebook_size, decay=0.9,
                                                            kmeans_iters=3, threshold_ema_dead_code=2)
            else:
                self.quantizer = ResidualVectorQuantize(dimension, n_codebooks=n_q, codebook_size=codebook_size,
                                                        codebook_dim=2, quantizer_dropout=0.5)
            self.apply(init_weights)

        def forward(self, x, n_q=None):
            length = x.shape[-1]
            z = self.encoder(x)
            if self.kind == "encodec":
                quantized, codes, commit_losses = self.quantizer(z, n_q)
                vq = dict(commitment_loss=commit_losses.sum(), codebook_loss=torch.zeros(()))
            else:
                quantized, codes, latents, commitment_loss, codebook_loss = self.quantizer(z, n_q)
                vq = dict(commitment_loss=commitment_loss, codebook_loss=codebook_loss)
            y = self.decoder(quantized)
            return y[..., :length], codes, vq

    # ------------------------------------------------------------ dac/nn/loss.py
    def stft_magnitude(x, window_length, hop_length):
        x = x.reshape(-1, x.shape[-1])
        stft = torch.stft(x, window_length, hop_length, window_length,
                          window=torch.hann_window(window_length, dtype=x.dtype), center=True, pad_mode="reflect",
                          return_complex=True)
        return stft.abs()

    class MultiScaleSTFTLoss(nn.Module):
        def __init__(self, window_lengths=(64, 16), loss_fn=nn.L1Loss(), clamp_eps: float = 1e-5,
                     mag_weight: float = 1.0, log_weight: float = 1.0, pow: float = 2.0):
            super().__init__()
            self.window_lengths = window_lengths
            self.loss_fn = loss_fn
            self.log_weight = log_weight
            self.mag_weight = mag_weight
            self.clamp_eps = clamp_eps
            self.pow = pow

        def forward(self, x, y):
            loss = 0.0
            for w in self.window_lengths:
                x_mag, y_mag = stft_magnitude(x, w, w // 4), stft_magnitude(y, w, w // 4)
                loss += self.log_weight * self.loss_fn(
                    x_mag.clamp(self.clamp_eps).pow(self.pow).log10(),
                    y_mag.clamp(self.clamp_eps).pow(self.pow).log10(),
                )
                loss += self.mag_weight * self.loss_fn(x_mag, y_mag)
            return loss

    class MelSpectrogramLoss(nn.Module):
        def __init__(self, n_mels=(5, 10), window_lengths=(32, 64), sample_rate=16000, clamp_eps: float = 1e-5,
                     mag_weight: float = 1.0, log_weight: float = 1.0, pow: float = 2.0):
            super().__init__()
            self.window_lengths, self.n_mels = window_lengths, n_mels
            for w, n_mels in zip(window_lengths, n_mels):
                basis = mel_filters(sample_rate, w, n_mels, 0.0, sample_rate / 2)
                self.register_buffer(f"mel_basis_{w}", torch.from_numpy(basis).to(torch.get_default_dtype()))
            self.clamp_eps, self.mag_weight, self.log_weight, self.pow = clamp_eps, mag_weight, log_weight, pow
            self.loss_fn = nn.L1Loss()

        def mel(self, x, w):
            mag = stft_magnitude(x, w, w // 4)  # (B, F, T)
            return (mag.transpose(1, 2) @ getattr(self, f"mel_basis_{w}").T).transpose(1, 2)

        def forward(self, x, y):
            loss = 0.0
            for w in self.window_lengths:
                x_mels, y_mels = self.mel(x, w), self.mel(y, w)
                loss += self.log_weight * self.loss_fn(
                    x_mels.clamp(self.clamp_eps).pow(self.pow).log10(),
                    y_mels.clamp(self.clamp_eps).pow(self.pow).log10(),
                )
                loss += self.mag_weight * self.loss_fn(x_mels, y_mels)
            return loss

    # ------------------------------------------------------------ encodec/msstftd.py (DAC's MRD input)
    def get_2d_padding(kernel_size, dilation=(1, 1)):
        return (((kernel_size[0] - 1) * dilation[0]) // 2, ((kernel_size[1] - 1) * dilation[1]) // 2)

    class DiscriminatorSTFT(nn.Module):
        def __init__(self, filters, n_fft=32, hop_length=8, win_length=32, max_filters=8, filters_scale=1,
                     kernel_size=(3, 5), dilations=(1, 2), stride=(1, 2)):
            super().__init__()
            self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
            self.activation = nn.LeakyReLU(0.2)
            spec_channels = 2
            self.convs = nn.ModuleList()
            self.convs.append(
                weight_norm(nn.Conv2d(spec_channels, filters, kernel_size=kernel_size,
                                      padding=get_2d_padding(kernel_size)))
            )
            in_chs = min(filters_scale * filters, max_filters)
            for i, dilation in enumerate(dilations):
                out_chs = min((filters_scale ** (i + 1)) * filters, max_filters)
                self.convs.append(weight_norm(nn.Conv2d(in_chs, out_chs, kernel_size=kernel_size, stride=stride,
                                                        dilation=(dilation, 1),
                                                        padding=get_2d_padding(kernel_size, (dilation, 1)))))
                in_chs = out_chs
            self.conv_post = weight_norm(nn.Conv2d(in_chs, 1, kernel_size=(kernel_size[0], kernel_size[0]),
                                                   padding=get_2d_padding((kernel_size[0], kernel_size[0]))))

        def forward(self, x):
            fmap = []
            x = torch.stft(x.squeeze(1), self.n_fft, self.hop_length, self.win_length,
                           window=torch.hann_window(self.win_length, dtype=x.dtype), normalized=True, center=False,
                           return_complex=True)
            z = torch.view_as_real(x)  # (B, F, T, 2)
            z = z.permute(0, 3, 2, 1)  # rearrange(z, "b f t c -> b c t f")
            for i, layer in enumerate(self.convs):
                z = layer(z)
                z = self.activation(z)
                fmap.append(z)
            z = self.conv_post(z)
            fmap.append(z)
            return fmap

    class MultiScaleSTFTDiscriminator(nn.Module):
        def __init__(self, filters=4, n_ffts=(32, 64), hop_lengths=(8, 16), win_lengths=(32, 64)):
            super().__init__()
            self.discriminators = nn.ModuleList([
                DiscriminatorSTFT(filters, n_fft=n_ffts[i], win_length=win_lengths[i], hop_length=hop_lengths[i])
                for i in range(len(n_ffts))
            ])

        def forward(self, x):
            return [disc(x) for disc in self.discriminators]

    # ------------------------------------------------------------ dac/nn/loss.py GANLoss, encodec hinge losses
    class GANLoss(nn.Module):
        def __init__(self, discriminator, kind="lsgan"):
            super().__init__()
            self.discriminator = discriminator
            self.kind = kind

        def forward(self, fake, real):
            d_fake = self.discriminator(fake)
            d_real = self.discriminator(real)
            return d_fake, d_real

        def discriminator_loss(self, fake, real):
            d_fake, d_real = self.forward(fake.clone().detach(), real)

            loss_d = 0
            for x_fake, x_real in zip(d_fake, d_real):
                if self.kind == "lsgan":
                    loss_d += torch.mean(x_fake[-1] ** 2)
                    loss_d += torch.mean((1 - x_real[-1]) ** 2)
                else:  # encodec's hinge_loss(fake, -1) + hinge_loss(real, 1)
                    loss_d += torch.mean(torch.clamp(1 + x_fake[-1], min=0))
                    loss_d += torch.mean(torch.clamp(1 - x_real[-1], min=0))
            return loss_d

        def generator_loss(self, fake, real):
            d_fake, d_real = self.forward(fake, real)

            loss_g = 0
            for x_fake in d_fake:
                if self.kind == "lsgan":
                    loss_g += torch.mean((1 - x_fake[-1]) ** 2)
                else:  # encodec's hinge_real_loss: -mean(x)
                    loss_g += -x_fake[-1].mean()

            loss_feature = 0

            for i in range(len(d_fake)):
                for j in range(len(d_fake[i]) - 1):
                    loss_feature += F.l1_loss(d_fake[i][j], d_real[i][j].detach())
            return loss_g, loss_feature

    return SimpleNamespace(**{name: value for name, value in locals().items() if not name.startswith("_")})


LAMBDAS = {"mel/loss": 15.0, "stft/loss": 1.0, "waveform/loss": 1.0, "adv/feat_loss": 2.0, "adv/gen_loss": 1.0,
           "vq/commitment_loss": 0.25, "vq/codebook_loss": 1.0}


def losses_and_optimizers(torch, nn, F, C, generator, discriminator, gan="lsgan"):
    """dac/train.py's ``load``: the losses, AdamW for each network with an ExponentialLR."""
    optimizer_g = torch.optim.AdamW(generator.parameters(), lr=1e-3, betas=(0.8, 0.99))
    optimizer_d = torch.optim.AdamW(discriminator.parameters(), lr=1e-3, betas=(0.8, 0.99))
    scheduler_g = torch.optim.lr_scheduler.ExponentialLR(optimizer_g, gamma=0.999996)
    scheduler_d = torch.optim.lr_scheduler.ExponentialLR(optimizer_d, gamma=0.999996)
    return SimpleNamespace(
        stft_loss=C.MultiScaleSTFTLoss(), mel_loss=C.MelSpectrogramLoss(), waveform_loss=nn.L1Loss(),
        gan_loss=C.GANLoss(discriminator, kind=gan), optimizer_g=optimizer_g, optimizer_d=optimizer_d,
        scheduler_g=scheduler_g, scheduler_d=scheduler_d)


def train_loop(torch, generator, discriminator, state, signal, n_q=None):
    """dac/train.py's ``train_loop`` body: one generator forward, the discriminator's step on the detached
    reconstruction, then the generator's; returns the output dict."""
    output = {}
    generator.train()
    discriminator.train()
    recons, codes, vq = generator(signal, n_q)
    output["codes"] = codes

    output["adv/disc_loss"] = state.gan_loss.discriminator_loss(recons, signal)
    state.optimizer_d.zero_grad()
    output["adv/disc_loss"].backward()
    output["other/grad_norm_d"] = torch.nn.utils.clip_grad_norm_(discriminator.parameters(), 10.0)
    state.optimizer_d.step()
    state.scheduler_d.step()

    output["stft/loss"] = state.stft_loss(recons, signal)
    output["mel/loss"] = state.mel_loss(recons, signal)
    output["waveform/loss"] = state.waveform_loss(recons, signal)
    output["adv/gen_loss"], output["adv/feat_loss"] = state.gan_loss.generator_loss(recons, signal)
    output["vq/commitment_loss"] = vq["commitment_loss"]
    output["vq/codebook_loss"] = vq["codebook_loss"]
    output["loss"] = sum([v * output[k] for k, v in LAMBDAS.items() if k in output])

    state.optimizer_g.zero_grad()
    output["loss"].backward()
    output["other/grad_norm"] = torch.nn.utils.clip_grad_norm_(generator.parameters(), 1e3)
    state.optimizer_g.step()
    state.scheduler_g.step()
    return output


def generator_step(torch, generator, state, signal, n_q=None):
    """The generator's half of ``train_loop`` as one function (forward, losses, backward, clip, AdamW): the step a
    compiled loop runs; returns the losses, the norm, the codes and the detached reconstruction."""
    recons, codes, vq = generator(signal, n_q)
    output = {"stft/loss": state.stft_loss(recons, signal), "mel/loss": state.mel_loss(recons, signal),
              "waveform/loss": state.waveform_loss(recons, signal)}
    output["adv/gen_loss"], output["adv/feat_loss"] = state.gan_loss.generator_loss(recons, signal)
    output["vq/commitment_loss"] = vq["commitment_loss"]
    output["vq/codebook_loss"] = vq["codebook_loss"]
    loss = sum([v * output[k] for k, v in LAMBDAS.items() if k in output])
    state.optimizer_g.zero_grad()
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(generator.parameters(), 1e3)
    state.optimizer_g.step()
    return loss.detach(), grad_norm, codes, recons.detach()


def discriminator_step(torch, discriminator, state, recons, signal):
    """The discriminator's half: its loss on the detached reconstruction, backward, clip, AdamW."""
    loss = state.gan_loss.discriminator_loss(recons, signal)
    state.optimizer_d.zero_grad()
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(discriminator.parameters(), 10.0)
    state.optimizer_d.step()
    return loss.detach(), grad_norm
