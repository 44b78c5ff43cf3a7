"""HiFi-GAN, tiny, as jik876/hifi-gan writes it (models.py's generator and period/scale discriminators and losses,
meldataset.py's ``mel_spectrogram`` with librosa's mel filterbank in NumPy, the config as ``H``), written once for
``torch`` being torch or kiln: the program of ``test_porting_probes_tacotron_hifigan.py``, whose docstring says what
it covers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


# --- HiFi-GAN ------------------------------------------------------------------------------------------------------

LRELU_SLOPE = 0.1
H = SimpleNamespace(
    resblock="1", num_mels=8, upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4], upsample_initial_channel=8,
    resblock_kernel_sizes=[3, 5], resblock_dilation_sizes=[[1, 3, 5], [1, 3, 5]], period_channels=(4, 8, 8, 8),
    scale_channels=(8, 8, 8), n_fft=16, hop_size=4, win_size=16, sampling_rate=800, fmin=0, fmax=400,
    fmax_for_loss=None, learning_rate=2e-4, adam_b1=0.8, adam_b2=0.99, lr_decay=0.999)
FRAMES, BATCH = 6, 2


def hifigan(torch, nn, F, h=None):
    """jik876/hifi-gan's models.py and utils.py: a module holding ``generator``, ``mpd`` and ``msd``, the
    discriminators' widths (1024 in the paper) from ``h.period_channels`` and ``h.scale_channels``."""
    # from torch.nn import Conv1d, ConvTranspose1d, AvgPool1d, Conv2d
    # from torch.nn.utils import weight_norm, remove_weight_norm, spectral_norm
    Conv1d, ConvTranspose1d, AvgPool1d, Conv2d = nn.Conv1d, nn.ConvTranspose1d, nn.AvgPool1d, nn.Conv2d
    weight_norm, remove_weight_norm = nn.utils.weight_norm, nn.utils.remove_weight_norm
    spectral_norm = nn.utils.spectral_norm

    h = h or H
    P = h.period_channels
    S = h.scale_channels

    def init_weights(m, mean=0.0, std=0.01):
        classname = m.__class__.__name__
        if classname.find("Conv") != -1:
            m.weight.data.normal_(mean, std)

    def get_padding(kernel_size, dilation=1):
        return int((kernel_size * dilation - dilation) / 2)

    class ResBlock1(torch.nn.Module):
        def __init__(self, h, channels, kernel_size=3, dilation=(1, 3, 5)):
            super(ResBlock1, self).__init__()
            self.h = h
            self.convs1 = nn.ModuleList([
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=dilation[0],
                                   padding=get_padding(kernel_size, dilation[0]))),
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=dilation[1],
                                   padding=get_padding(kernel_size, dilation[1]))),
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=dilation[2],
                                   padding=get_padding(kernel_size, dilation[2])))
            ])
            self.convs1.apply(init_weights)

            self.convs2 = nn.ModuleList([
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=1,
                                   padding=get_padding(kernel_size, 1))),
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=1,
                                   padding=get_padding(kernel_size, 1))),
                weight_norm(Conv1d(channels, channels, kernel_size, 1, dilation=1,
                                   padding=get_padding(kernel_size, 1)))
            ])
            self.convs2.apply(init_weights)

        def forward(self, x):
            for c1, c2 in zip(self.convs1, self.convs2):
                xt = F.leaky_relu(x, LRELU_SLOPE)
                xt = c1(xt)
                xt = F.leaky_relu(xt, LRELU_SLOPE)
                xt = c2(xt)
                x = xt + x
            return x

        def remove_weight_norm(self):
            for l in self.convs1:
                remove_weight_norm(l)
            for l in self.convs2:
                remove_weight_norm(l)

    class Generator(torch.nn.Module):
        def __init__(self, h):
            super(Generator, self).__init__()
            self.h = h
            self.num_kernels = len(h.resblock_kernel_sizes)
            self.num_upsamples = len(h.upsample_rates)
            self.conv_pre = weight_norm(Conv1d(h.num_mels, h.upsample_initial_channel, 7, 1, padding=3))
            resblock = ResBlock1

            self.ups = nn.ModuleList()
            for i, (u, k) in enumerate(zip(h.upsample_rates, h.upsample_kernel_sizes)):
                self.ups.append(weight_norm(
                    ConvTranspose1d(h.upsample_initial_channel // (2 ** i), h.upsample_initial_channel // (2 ** (i + 1)),
                                    k, u, padding=(k - u) // 2)))

            self.resblocks = nn.ModuleList()
            for i in range(len(self.ups)):
                ch = h.upsample_initial_channel // (2 ** (i + 1))
                for j, (k, d) in enumerate(zip(h.resblock_kernel_sizes, h.resblock_dilation_sizes)):
                    self.resblocks.append(resblock(h, ch, k, d))

            self.conv_post = weight_norm(Conv1d(ch, 1, 7, 1, padding=3))
            self.ups.apply(init_weights)
            self.conv_post.apply(init_weights)

        def forward(self, x):
            x = self.conv_pre(x)
            for i in range(self.num_upsamples):
                x = F.leaky_relu(x, LRELU_SLOPE)
                x = self.ups[i](x)
                xs = None
                for j in range(self.num_kernels):
                    if xs is None:
                        xs = self.resblocks[i * self.num_kernels + j](x)
                    else:
                        xs += self.resblocks[i * self.num_kernels + j](x)
                x = xs / self.num_kernels
            x = F.leaky_relu(x)
            x = self.conv_post(x)
            x = torch.tanh(x)

            return x

        def remove_weight_norm(self):
            print('Removing weight norm...')
            for l in self.ups:
                remove_weight_norm(l)
            for l in self.resblocks:
                l.remove_weight_norm()
            remove_weight_norm(self.conv_pre)
            remove_weight_norm(self.conv_post)

    class DiscriminatorP(torch.nn.Module):
        def __init__(self, period, kernel_size=5, stride=3, use_spectral_norm=False):
            super(DiscriminatorP, self).__init__()
            self.period = period
            norm_f = weight_norm if use_spectral_norm == False else spectral_norm  # noqa: E712
            self.convs = nn.ModuleList([
                norm_f(Conv2d(1, P[0], (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                norm_f(Conv2d(P[0], P[1], (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                norm_f(Conv2d(P[1], P[2], (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                norm_f(Conv2d(P[2], P[3], (kernel_size, 1), (stride, 1), padding=(get_padding(5, 1), 0))),
                norm_f(Conv2d(P[3], P[3], (kernel_size, 1), 1, padding=(2, 0))),
            ])
            self.conv_post = norm_f(Conv2d(P[3], 1, (3, 1), 1, padding=(1, 0)))

        def forward(self, x):
            fmap = []

            # 1d to 2d
            b, c, t = x.shape
            if t % self.period != 0:  # pad first
                n_pad = self.period - (t % self.period)
                x = F.pad(x, (0, n_pad), "reflect")
                t = t + n_pad
            x = x.view(b, c, t // self.period, self.period)

            for l in self.convs:
                x = l(x)
                x = F.leaky_relu(x, LRELU_SLOPE)
                fmap.append(x)
            x = self.conv_post(x)
            fmap.append(x)
            x = torch.flatten(x, 1, -1)

            return x, fmap

    class MultiPeriodDiscriminator(torch.nn.Module):
        def __init__(self):
            super(MultiPeriodDiscriminator, self).__init__()
            self.discriminators = nn.ModuleList([
                DiscriminatorP(2),
                DiscriminatorP(3),
                DiscriminatorP(5),
                DiscriminatorP(7),
                DiscriminatorP(11),
            ])

        def forward(self, y, y_hat):
            y_d_rs = []
            y_d_gs = []
            fmap_rs = []
            fmap_gs = []
            for i, d in enumerate(self.discriminators):
                y_d_r, fmap_r = d(y)
                y_d_g, fmap_g = d(y_hat)
                y_d_rs.append(y_d_r)
                fmap_rs.append(fmap_r)
                y_d_gs.append(y_d_g)
                fmap_gs.append(fmap_g)

            return y_d_rs, y_d_gs, fmap_rs, fmap_gs

    class DiscriminatorS(torch.nn.Module):
        def __init__(self, use_spectral_norm=False):
            super(DiscriminatorS, self).__init__()
            norm_f = weight_norm if use_spectral_norm == False else spectral_norm  # noqa: E712
            self.convs = nn.ModuleList([
                norm_f(Conv1d(1, S[0], 15, 1, padding=7)),
                norm_f(Conv1d(S[0], S[0], 41, 2, groups=4, padding=20)),
                norm_f(Conv1d(S[0], S[1], 41, 2, groups=4, padding=20)),
                norm_f(Conv1d(S[1], S[2], 41, 4, groups=4, padding=20)),
                norm_f(Conv1d(S[2], S[2], 41, 1, groups=4, padding=20)),
                norm_f(Conv1d(S[2], S[2], 5, 1, padding=2)),
            ])
            self.conv_post = norm_f(Conv1d(S[2], 1, 3, 1, padding=1))

        def forward(self, x):
            fmap = []
            for l in self.convs:
                x = l(x)
                x = F.leaky_relu(x, LRELU_SLOPE)
                fmap.append(x)
            x = self.conv_post(x)
            fmap.append(x)
            x = torch.flatten(x, 1, -1)

            return x, fmap

    class MultiScaleDiscriminator(torch.nn.Module):
        def __init__(self):
            super(MultiScaleDiscriminator, self).__init__()
            self.discriminators = nn.ModuleList([
                DiscriminatorS(use_spectral_norm=True),
                DiscriminatorS(),
                DiscriminatorS(),
            ])
            self.meanpools = nn.ModuleList([
                AvgPool1d(4, 2, padding=2),
                AvgPool1d(4, 2, padding=2)
            ])

        def forward(self, y, y_hat):
            y_d_rs = []
            y_d_gs = []
            fmap_rs = []
            fmap_gs = []
            for i, d in enumerate(self.discriminators):
                if i != 0:
                    y = self.meanpools[i - 1](y)
                    y_hat = self.meanpools[i - 1](y_hat)
                y_d_r, fmap_r = d(y)
                y_d_g, fmap_g = d(y_hat)
                y_d_rs.append(y_d_r)
                fmap_rs.append(fmap_r)
                y_d_gs.append(y_d_g)
                fmap_gs.append(fmap_g)

            return y_d_rs, y_d_gs, fmap_rs, fmap_gs

    class GAN(nn.Module):
        def __init__(self):
            super().__init__()
            self.generator = Generator(h)
            self.mpd = MultiPeriodDiscriminator()
            self.msd = MultiScaleDiscriminator()

    return GAN()


def losses(torch):
    def feature_loss(fmap_r, fmap_g):
        loss = 0
        for dr, dg in zip(fmap_r, fmap_g):
            for rl, gl in zip(dr, dg):
                loss += torch.mean(torch.abs(rl - gl))

        return loss * 2

    def discriminator_loss(disc_real_outputs, disc_generated_outputs):
        loss = 0
        r_losses = []
        g_losses = []
        for dr, dg in zip(disc_real_outputs, disc_generated_outputs):
            r_loss = torch.mean((1 - dr) ** 2)
            g_loss = torch.mean(dg ** 2)
            loss += (r_loss + g_loss)
            r_losses.append(r_loss.item())
            g_losses.append(g_loss.item())

        return loss, r_losses, g_losses

    def generator_loss(disc_outputs):
        loss = 0
        gen_losses = []
        for dg in disc_outputs:
            l = torch.mean((1 - dg) ** 2)
            gen_losses.append(l)
            loss += l

        return loss, gen_losses

    return feature_loss, discriminator_loss, generator_loss


def mel_filters(sr, n_fft, n_mels, fmin, fmax):
    """librosa.filters.mel (htk=False, norm='slaney') in NumPy."""
    fmax = sr / 2 if fmax is None else fmax
    def hz_to_mel(f):
        f = np.asanyarray(f, dtype=np.float64)
        f_sp = 200.0 / 3
        mels = f / f_sp
        min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, mels)

    def mel_to_hz(m):
        f_sp = 200.0 / 3
        freqs = f_sp * m
        min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), freqs)

    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels])
    return weights * enorm[:, np.newaxis]


def mel_spectrogram_fn(torch, check_range=True):
    mel_basis = {}
    hann_window = {}

    def dynamic_range_compression_torch(x, C=1, clip_val=1e-5):
        return torch.log(torch.clamp(x, min=clip_val) * C)

    def spectral_normalize_torch(magnitudes):
        output = dynamic_range_compression_torch(magnitudes)
        return output

    def mel_spectrogram(y, n_fft, num_mels, sampling_rate, hop_size, win_size, fmin, fmax, center=False):
        if check_range and torch.min(y) < -1.:
            print('min value is ', torch.min(y))
        if check_range and torch.max(y) > 1.:
            print('max value is ', torch.max(y))

        if fmax not in mel_basis:
            mel = mel_filters(sampling_rate, n_fft, num_mels, fmin, fmax)
            mel_basis[str(fmax) + '_' + str(y.device)] = torch.from_numpy(mel).to(y.dtype).to(y.device)
            hann_window[str(y.device)] = torch.hann_window(win_size).to(y.device)

        y = torch.nn.functional.pad(y.unsqueeze(1), (int((n_fft - hop_size) / 2), int((n_fft - hop_size) / 2)), mode='reflect')
        y = y.squeeze(1)

        spec = torch.stft(y, n_fft, hop_length=hop_size, win_length=win_size, window=hann_window[str(y.device)],
                          center=center, pad_mode='reflect', normalized=False, onesided=True, return_complex=True)
        spec = torch.view_as_real(spec)
        spec = torch.sqrt(spec.pow(2).sum(-1) + (1e-9))

        spec = torch.matmul(mel_basis[str(fmax) + '_' + str(y.device)], spec)
        spec = spectral_normalize_torch(spec)

        return spec

    return mel_spectrogram
