"""Program texts for the speech separation and enhancement probes (``test_porting_probes_speech_separation.py``):
each a function of ``(torch, nn, F)`` run unchanged on torch and on kiln.

- ``conv_tasnet``: Conv-TasNet as Kaituo Xu's ``conv_tasnet.py`` writes it (Encoder: Conv1d + ReLU; TemporalConvNet:
  cLN, 1x1 conv, repeats of TemporalBlocks (1x1 conv, PReLU, gLN/cLN, depthwise dilated conv with ``Chomp1d`` when
  causal, PReLU, norm, pointwise conv, residual), mask conv, ``F.relu``/``torch.sigmoid`` masks; Decoder: Linear back
  to the frame and ``overlap_and_add`` with ``unfold``/``new_zeros``/``index_add_``).
- ``si_snr_pit``: ``cal_loss`` of the same repo: zero-mean, pairwise SI-SNR, ``itertools.permutations``,
  ``scatter_`` one-hot of the permutations, ``torch.einsum``, ``max`` over permutations, reorder by the best one.
- ``stft_enhancer`` with ``si_sdr`` and ``multi_resolution_stft_loss``: an STFT-domain mask enhancer and its losses.
- ``demucs_lite``: facebookresearch/denoiser's ``Demucs``, tiny.
"""

from __future__ import annotations

import math
from itertools import permutations

EPS = 1e-8


def overlap_and_add(torch, signal, frame_step):
    """Kaituo Xu's ``utils.overlap_and_add`` (from tensorflow's ``signal.overlap_and_add``)."""
    outer_dimensions = signal.size()[:-2]
    frames, frame_length = signal.size()[-2:]

    subframe_length = math.gcd(frame_length, frame_step)  # gcd=Greatest Common Divisor
    subframe_step = frame_step // subframe_length
    subframes_per_frame = frame_length // subframe_length
    output_size = frame_step * (frames - 1) + frame_length
    output_subframes = output_size // subframe_length

    subframe_signal = signal.view(*outer_dimensions, -1, subframe_length)

    frame = torch.arange(0, output_subframes).unfold(0, subframes_per_frame, subframe_step)
    frame = signal.new_tensor(frame).long()  # signal may in GPU or CPU
    frame = frame.contiguous().view(-1)

    result = signal.new_zeros(*outer_dimensions, output_subframes, subframe_length)
    result.index_add_(-2, frame, subframe_signal)
    result = result.view(*outer_dimensions, -1)
    return result


def conv_tasnet(torch, nn, F, N=6, L=4, B=5, H=8, P=3, X=2, R=1, C=2, norm_type="gLN", causal=False,
                mask_nonlinear="relu"):
    class Encoder(nn.Module):
        def __init__(self, L, N):
            super(Encoder, self).__init__()
            self.L, self.N = L, N
            self.conv1d_U = nn.Conv1d(1, N, kernel_size=L, stride=L // 2, bias=False)

        def forward(self, mixture):
            mixture = torch.unsqueeze(mixture, 1)  # [M, 1, T]
            mixture_w = F.relu(self.conv1d_U(mixture))  # [M, N, K]
            return mixture_w

    class Decoder(nn.Module):
        def __init__(self, N, L):
            super(Decoder, self).__init__()
            self.N, self.L = N, L
            self.basis_signals = nn.Linear(N, L, bias=False)

        def forward(self, mixture_w, est_mask):
            source_w = torch.unsqueeze(mixture_w, 1) * est_mask  # [M, C, N, K]
            source_w = torch.transpose(source_w, 2, 3)  # [M, C, K, N]
            est_source = self.basis_signals(source_w)  # [M, C, K, L]
            est_source = overlap_and_add(torch, est_source, self.L // 2)  # M x C x T
            return est_source

    class Chomp1d(nn.Module):
        def __init__(self, chomp_size):
            super(Chomp1d, self).__init__()
            self.chomp_size = chomp_size

        def forward(self, x):
            return x[:, :, :-self.chomp_size].contiguous()

    class ChannelwiseLayerNorm(nn.Module):
        def __init__(self, channel_size):
            super(ChannelwiseLayerNorm, self).__init__()
            self.gamma = nn.Parameter(torch.Tensor(1, channel_size, 1))  # [1, N, 1]
            self.beta = nn.Parameter(torch.Tensor(1, channel_size, 1))  # [1, N, 1]
            self.reset_parameters()

        def reset_parameters(self):
            self.gamma.data.fill_(1)
            self.beta.data.zero_()

        def forward(self, y):
            mean = torch.mean(y, dim=1, keepdim=True)  # [M, 1, K]
            var = torch.var(y, dim=1, keepdim=True, unbiased=False)  # [M, 1, K]
            cLN_y = self.gamma * (y - mean) / torch.pow(var + EPS, 0.5) + self.beta
            return cLN_y

    class GlobalLayerNorm(nn.Module):
        def __init__(self, channel_size):
            super(GlobalLayerNorm, self).__init__()
            self.gamma = nn.Parameter(torch.Tensor(1, channel_size, 1))  # [1, N, 1]
            self.beta = nn.Parameter(torch.Tensor(1, channel_size, 1))  # [1, N, 1]
            self.reset_parameters()

        def reset_parameters(self):
            self.gamma.data.fill_(1)
            self.beta.data.zero_()

        def forward(self, y):
            mean = y.mean(dim=1, keepdim=True).mean(dim=2, keepdim=True)  # [M, 1, 1]
            var = (torch.pow(y - mean, 2)).mean(dim=1, keepdim=True).mean(dim=2, keepdim=True)
            gLN_y = self.gamma * (y - mean) / torch.pow(var + EPS, 0.5) + self.beta
            return gLN_y

    def chose_norm(norm_type, channel_size):
        if norm_type == "gLN":
            return GlobalLayerNorm(channel_size)
        elif norm_type == "cLN":
            return ChannelwiseLayerNorm(channel_size)
        else:  # norm_type == "BN"
            return nn.BatchNorm1d(channel_size)

    class DepthwiseSeparableConv(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, norm_type="gLN",
                     causal=False):
            super(DepthwiseSeparableConv, self).__init__()
            depthwise_conv = nn.Conv1d(in_channels, in_channels, kernel_size, stride=stride, padding=padding,
                                       dilation=dilation, groups=in_channels, bias=False)
            if causal:
                chomp = Chomp1d(padding)
            prelu = nn.PReLU()
            norm = chose_norm(norm_type, in_channels)
            pointwise_conv = nn.Conv1d(in_channels, out_channels, 1, bias=False)
            if causal:
                self.net = nn.Sequential(depthwise_conv, chomp, prelu, norm, pointwise_conv)
            else:
                self.net = nn.Sequential(depthwise_conv, prelu, norm, pointwise_conv)

        def forward(self, x):
            return self.net(x)

    class TemporalBlock(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, stride, padding, dilation, norm_type="gLN",
                     causal=False):
            super(TemporalBlock, self).__init__()
            conv1x1 = nn.Conv1d(in_channels, out_channels, 1, bias=False)
            prelu = nn.PReLU()
            norm = chose_norm(norm_type, out_channels)
            dsconv = DepthwiseSeparableConv(out_channels, in_channels, kernel_size, stride, padding, dilation,
                                            norm_type, causal)
            self.net = nn.Sequential(conv1x1, prelu, norm, dsconv)

        def forward(self, x):
            residual = x
            out = self.net(x)
            return out + residual  # look like w/o F.relu is better than w/ F.relu

    class TemporalConvNet(nn.Module):
        def __init__(self, N, B, H, P, X, R, C, norm_type="gLN", causal=False, mask_nonlinear="relu"):
            super(TemporalConvNet, self).__init__()
            self.C = C
            self.mask_nonlinear = mask_nonlinear
            layer_norm = ChannelwiseLayerNorm(N)
            bottleneck_conv1x1 = nn.Conv1d(N, B, 1, bias=False)
            repeats = []
            for r in range(R):
                blocks = []
                for x in range(X):
                    dilation = 2**x
                    padding = (P - 1) * dilation if causal else (P - 1) * dilation // 2
                    blocks += [TemporalBlock(B, H, P, stride=1, padding=padding, dilation=dilation,
                                             norm_type=norm_type, causal=causal)]
                repeats += [nn.Sequential(*blocks)]
            temporal_conv_net = nn.Sequential(*repeats)
            mask_conv1x1 = nn.Conv1d(B, C * N, 1, bias=False)
            self.network = nn.Sequential(layer_norm, bottleneck_conv1x1, temporal_conv_net, mask_conv1x1)

        def forward(self, mixture_w):
            M, N, K = mixture_w.size()
            score = self.network(mixture_w)  # [M, N, K] -> [M, C*N, K]
            score = score.view(M, self.C, N, K)  # [M, C*N, K] -> [M, C, N, K]
            if self.mask_nonlinear == "softmax":
                est_mask = F.softmax(score, dim=1)
            elif self.mask_nonlinear == "relu":
                est_mask = F.relu(score)
            elif self.mask_nonlinear == "sigmoid":
                est_mask = torch.sigmoid(score)
            else:
                raise ValueError("Unsupported mask non-linear function")
            return est_mask

    class ConvTasNet(nn.Module):
        def __init__(self):
            super(ConvTasNet, self).__init__()
            self.N, self.L, self.C = N, L, C
            self.encoder = Encoder(L, N)
            self.separator = TemporalConvNet(N, B, H, P, X, R, C, norm_type, causal, mask_nonlinear)
            self.decoder = Decoder(N, L)
            for p in self.parameters():
                if p.dim() > 1:
                    nn.init.xavier_normal_(p)

        def forward(self, mixture):
            mixture_w = self.encoder(mixture)
            est_mask = self.separator(mixture_w)
            est_source = self.decoder(mixture_w, est_mask)

            # T changed after conv1d in encoder, fix it here
            T_origin = mixture.size(-1)
            T_conv = est_source.size(-1)
            est_source = F.pad(est_source, (0, T_origin - T_conv))
            return est_source

    return ConvTasNet()


def get_mask(torch, source, source_lengths):
    B, _, T = source.size()
    mask = source.new_ones((B, 1, T))
    for i in range(B):
        mask[i, :, source_lengths[i]:] = 0
    return mask


def cal_si_snr_with_pit(torch, source, estimate_source, source_lengths):
    """Kaituo Xu's ``pit_criterion.cal_si_snr_with_pit``: the best permutation's SI-SNR per utterance."""
    assert source.size() == estimate_source.size()
    B, C, T = source.size()
    mask = get_mask(torch, source, source_lengths)
    estimate_source = estimate_source * mask

    # Step 1. Zero-mean norm
    num_samples = source_lengths.view(-1, 1, 1).float()  # [B, 1, 1]
    mean_target = torch.sum(source, dim=2, keepdim=True) / num_samples
    mean_estimate = torch.sum(estimate_source, dim=2, keepdim=True) / num_samples
    zero_mean_target = source - mean_target
    zero_mean_estimate = estimate_source - mean_estimate
    zero_mean_target *= mask
    zero_mean_estimate *= mask

    # Step 2. SI-SNR with PIT
    s_target = torch.unsqueeze(zero_mean_target, dim=1)  # [B, 1, C, T]
    s_estimate = torch.unsqueeze(zero_mean_estimate, dim=2)  # [B, C, 1, T]
    pair_wise_dot = torch.sum(s_estimate * s_target, dim=3, keepdim=True)  # [B, C, C, 1]
    s_target_energy = torch.sum(s_target ** 2, dim=3, keepdim=True) + EPS  # [B, 1, C, 1]
    pair_wise_proj = pair_wise_dot * s_target / s_target_energy  # [B, C, C, T]
    e_noise = s_estimate - pair_wise_proj  # [B, C, C, T]
    pair_wise_si_snr = torch.sum(pair_wise_proj ** 2, dim=3) / (torch.sum(e_noise ** 2, dim=3) + EPS)
    pair_wise_si_snr = 10 * torch.log10(pair_wise_si_snr + EPS)  # [B, C, C]

    # Get max_snr of each utterance
    perms = source.new_tensor(list(permutations(range(C))), dtype=torch.long)
    index = torch.unsqueeze(perms, 2)
    perms_one_hot = source.new_zeros((*perms.size(), C)).scatter_(2, index, 1)
    snr_set = torch.einsum('bij,pij->bp', [pair_wise_si_snr, perms_one_hot])
    max_snr_idx = torch.argmax(snr_set, dim=1)  # [B]
    max_snr, _ = torch.max(snr_set, dim=1, keepdim=True)
    max_snr /= C
    return max_snr, perms, max_snr_idx


def reorder_source(torch, source, perms, max_snr_idx):
    """``pit_criterion.reorder_source``: each utterance's estimates in the best permutation's order."""
    B, C, *_ = source.size()
    max_snr_perm = torch.index_select(perms, dim=0, index=max_snr_idx)
    reorder_source = torch.zeros_like(source)
    for b in range(B):
        for c in range(C):
            reorder_source[b, c] = source[b, max_snr_perm[b][c]]
    return reorder_source


def cal_loss(torch, source, estimate_source, source_lengths):
    """``pit_criterion.cal_loss``: minus the mean best-permutation SI-SNR, with the reordered estimates."""
    max_snr, perms, max_snr_idx = cal_si_snr_with_pit(torch, source, estimate_source, source_lengths)
    loss = 0 - torch.mean(max_snr)
    reorder_estimate_source = reorder_source(torch, estimate_source, perms, max_snr_idx)
    return loss, max_snr, estimate_source, reorder_estimate_source


def stft_enhancer(torch, nn, F, n_fft=16, hop_length=4, hidden=6):
    """A mask net on the log-magnitude of ``torch.stft`` (``return_complex=True``, a Hann window buffer): an LSTM over
    frames, a sigmoid mask on the magnitude, the noisy phase kept (``torch.polar``), ``torch.istft(length=...)``."""

    class STFTMaskEnhancer(nn.Module):
        def __init__(self):
            super().__init__()
            self.n_fft, self.hop_length = n_fft, hop_length
            freqs = n_fft // 2 + 1
            self.register_buffer("window", torch.hann_window(n_fft))
            self.lstm = nn.LSTM(freqs, hidden, batch_first=True)
            self.mask = nn.Linear(hidden, freqs)

        def forward(self, noisy):
            spec = torch.stft(noisy, self.n_fft, hop_length=self.hop_length, window=self.window, return_complex=True)
            magnitude, phase = spec.abs(), torch.angle(spec)  # [B, F, T]
            features = torch.log1p(magnitude).transpose(1, 2)  # [B, T, F]
            hidden_states, _ = self.lstm(features)
            mask = torch.sigmoid(self.mask(hidden_states)).transpose(1, 2)
            enhanced = torch.polar(magnitude * mask, phase)
            return torch.istft(enhanced, self.n_fft, hop_length=self.hop_length, window=self.window,
                               length=noisy.shape[-1])

    return STFTMaskEnhancer()


def si_sdr(torch, estimate, target, eps=1e-8):
    """Scale-invariant SDR per utterance (zero-mean, projection onto the target)."""
    estimate = estimate - estimate.mean(dim=-1, keepdim=True)
    target = target - target.mean(dim=-1, keepdim=True)
    alpha = (estimate * target).sum(-1, keepdim=True) / (target.pow(2).sum(-1, keepdim=True) + eps)
    projection = alpha * target
    noise = estimate - projection
    return 10 * torch.log10(projection.pow(2).sum(-1) / (noise.pow(2).sum(-1) + eps) + eps)


def multi_resolution_stft_loss(torch, F, estimate, target, resolutions=((16, 4, 16), (8, 2, 8), (32, 8, 24))):
    """ParallelWaveGAN's ``MultiResolutionSTFTLoss``: per (fft size, hop, window length), spectral convergence
    (Frobenius norm ratio) and the L1 of log magnitudes, averaged over the resolutions."""
    spectral_convergence, log_magnitude = 0.0, 0.0
    for fft_size, hop_size, win_length in resolutions:
        window = torch.hann_window(win_length)
        magnitudes = []
        for signal in (estimate, target):
            spec = torch.stft(signal, fft_size, hop_size, win_length, window, return_complex=True)
            magnitudes.append(torch.sqrt(torch.clamp(spec.real ** 2 + spec.imag ** 2, min=1e-7)).transpose(2, 1))
        x_mag, y_mag = magnitudes
        spectral_convergence = spectral_convergence + torch.norm(y_mag - x_mag, p="fro") / torch.norm(y_mag, p="fro")
        log_magnitude = log_magnitude + F.l1_loss(torch.log(y_mag), torch.log(x_mag))
    return spectral_convergence / len(resolutions), log_magnitude / len(resolutions)


def enhancement_loss(torch, F, model, noisy, clean):
    """Minus the mean SI-SDR plus the multi-resolution STFT loss, on the enhanced waveform."""
    enhanced = model(noisy)
    sc, mag = multi_resolution_stft_loss(torch, F, enhanced, clean)
    return enhanced, -si_sdr(torch, enhanced, clean).mean() + sc + mag


def demucs_lite(torch, nn, F, chin=1, hidden=4, depth=2, kernel_size=4, stride=2, resample=1):
    """facebookresearch/denoiser's ``Demucs``, tiny: ``valid_length`` and ``F.pad``, encoder blocks (strided Conv1d,
    ReLU, 1x1 Conv1d, GLU), a bidirectional LSTM with a Linear back to the width, decoder blocks (1x1 Conv1d, GLU,
    ConvTranspose1d, ReLU but the last) with the skips added (``skip[..., :x.shape[-1]]``), std normalisation."""

    class BLSTM(nn.Module):
        def __init__(self, dim, layers=1, bi=True):
            super().__init__()
            self.lstm = nn.LSTM(bidirectional=bi, num_layers=layers, hidden_size=dim, input_size=dim)
            self.linear = nn.Linear(2 * dim, dim) if bi else None

        def forward(self, x, hidden=None):
            x, hidden = self.lstm(x, hidden)
            if self.linear:
                x = self.linear(x)
            return x, hidden

    class Demucs(nn.Module):
        def __init__(self):
            super().__init__()
            self.depth, self.kernel_size, self.stride, self.resample = depth, kernel_size, stride, resample
            self.floor, self.normalize = 1e-3, True
            self.encoder, self.decoder = nn.ModuleList(), nn.ModuleList()
            ch_in, ch_out, h = chin, 1, hidden
            for index in range(depth):
                self.encoder.append(nn.Sequential(nn.Conv1d(ch_in, h, kernel_size, stride), nn.ReLU(),
                                                  nn.Conv1d(h, h * 2, 1), nn.GLU(1)))
                decode = [nn.Conv1d(h, 2 * h, 1), nn.GLU(1), nn.ConvTranspose1d(h, ch_out, kernel_size, stride)]
                if index > 0:
                    decode.append(nn.ReLU())
                self.decoder.insert(0, nn.Sequential(*decode))
                ch_out, ch_in = h, h
                h = 2 * h
            self.lstm = BLSTM(ch_in, bi=True)

        def valid_length(self, length):
            length = math.ceil(length * self.resample)
            for idx in range(self.depth):
                length = math.ceil((length - self.kernel_size) / self.stride) + 1
                length = max(length, 1)
            for idx in range(self.depth):
                length = (length - 1) * self.stride + self.kernel_size
            length = int(math.ceil(length / self.resample))
            return int(length)

        def forward(self, mix):
            if mix.dim() == 2:
                mix = mix.unsqueeze(1)
            if self.normalize:
                mono = mix.mean(dim=1, keepdim=True)
                std = mono.std(dim=-1, keepdim=True)
                mix = mix / (self.floor + std)
            else:
                std = 1
            length = mix.shape[-1]
            x = mix
            x = F.pad(x, (0, self.valid_length(length) - length))
            skips = []
            for encode in self.encoder:
                x = encode(x)
                skips.append(x)
            x = x.permute(2, 0, 1)
            x, _ = self.lstm(x)
            x = x.permute(1, 2, 0)
            for decode in self.decoder:
                skip = skips.pop(-1)
                x = x + skip[..., :x.shape[-1]]
                x = decode(x)
            x = x[..., :length]
            return std * x

    return Demucs()
