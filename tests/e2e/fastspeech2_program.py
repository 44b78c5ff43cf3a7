"""FastSpeech 2, tiny, as ming024/FastSpeech2 writes it (model/modules.py's variance adaptor, length regulator and
predictors, utils/tools.py's masks and ``pad``, model/loss.py's ``FastSpeech2Loss``), written once for ``torch`` being
torch or kiln: the program of ``test_porting_probes_whisper_fastspeech.py``, whose docstring says what it covers."""

from __future__ import annotations

import numpy as np


# FastSpeech 2, tiny: 10 symbols, 8 channels, 6 mel bins, 5 pitch and energy bins.
N_SYMBOLS, HIDDEN, N_MEL, N_BINS, KERNEL = 10, 8, 6, 5, 3
PITCH_STATS, ENERGY_STATS = (60.0, 400.0), (0.1, 2.0)
SRC_LENS, DURATIONS = [5, 3], [[2, 1, 3, 0, 2], [1, 2, 2, 0, 0]]  # a real phoneme of duration 0 expands to nothing


def fastspeech2(torch, nn, F, dropout=0.0, pitch_quantization="log"):
    """model/modules.py's VarianceAdaptor, LengthRegulator, VariancePredictor and Conv and utils/tools.py's
    ``get_mask_from_lengths`` and ``pad`` as written; the Transformer encoder and decoder and the PostNet are one
    masked ``Conv`` each (same masking: ``masked_fill(mask.unsqueeze(-1), 0)``). ``dropout`` 0 in the lockstep
    training (the two libraries draw different masks); the reference's 0.5 in the synthesis (eval) runs."""
    from collections import OrderedDict

    device = "cpu"

    def get_mask_from_lengths(lengths, max_len=None):
        batch_size = lengths.shape[0]
        if max_len is None:
            max_len = torch.max(lengths).item()

        ids = torch.arange(0, max_len).unsqueeze(0).expand(batch_size, -1).to(device)
        mask = ids >= lengths.unsqueeze(1).expand(-1, max_len)

        return mask

    def pad(input_ele, mel_max_length=None):
        if mel_max_length:
            max_len = mel_max_length
        else:
            max_len = max([input_ele[i].size(0) for i in range(len(input_ele))])

        out_list = list()
        for i, batch in enumerate(input_ele):
            if len(batch.shape) == 1:
                one_batch_padded = F.pad(batch, (0, max_len - batch.size(0)), "constant", 0.0)
            elif len(batch.shape) == 2:
                one_batch_padded = F.pad(batch, (0, 0, 0, max_len - batch.size(0)), "constant", 0.0)
            out_list.append(one_batch_padded)
        out_padded = torch.stack(out_list)
        return out_padded

    class Conv(nn.Module):
        """Convolution Module"""

        def __init__(self, in_channels, out_channels, kernel_size=1, stride=1, padding=0, dilation=1, bias=True,
                     w_init="linear"):
            super(Conv, self).__init__()

            self.conv = nn.Conv1d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=padding,
                                  dilation=dilation, bias=bias)

        def forward(self, x):
            x = x.contiguous().transpose(1, 2)
            x = self.conv(x)
            x = x.contiguous().transpose(1, 2)

            return x

    class VariancePredictor(nn.Module):
        """Duration, Pitch and Energy Predictor"""

        def __init__(self):
            super(VariancePredictor, self).__init__()

            self.input_size = HIDDEN
            self.filter_size = HIDDEN
            self.kernel = KERNEL
            self.conv_output_size = HIDDEN
            self.dropout = dropout

            self.conv_layer = nn.Sequential(
                OrderedDict(
                    [
                        ("conv1d_1", Conv(self.input_size, self.filter_size, kernel_size=self.kernel,
                                          padding=(self.kernel - 1) // 2)),
                        ("relu_1", nn.ReLU()),
                        ("layer_norm_1", nn.LayerNorm(self.filter_size)),
                        ("dropout_1", nn.Dropout(self.dropout)),
                        ("conv1d_2", Conv(self.filter_size, self.filter_size, kernel_size=self.kernel, padding=1)),
                        ("relu_2", nn.ReLU()),
                        ("layer_norm_2", nn.LayerNorm(self.filter_size)),
                        ("dropout_2", nn.Dropout(self.dropout)),
                    ]
                )
            )

            self.linear_layer = nn.Linear(self.conv_output_size, 1)

        def forward(self, encoder_output, mask):
            out = self.conv_layer(encoder_output)
            out = self.linear_layer(out)
            out = out.squeeze(-1)

            if mask is not None:
                out = out.masked_fill(mask, 0.0)

            return out

    class LengthRegulator(nn.Module):
        """Length Regulator"""

        def __init__(self):
            super(LengthRegulator, self).__init__()

        def LR(self, x, duration, max_len):
            output = list()
            mel_len = list()
            for batch, expand_target in zip(x, duration):
                expanded = self.expand(batch, expand_target)
                output.append(expanded)
                mel_len.append(expanded.shape[0])

            if max_len is not None:
                output = pad(output, max_len)
            else:
                output = pad(output)

            return output, torch.LongTensor(mel_len).to(device)

        def expand(self, batch, predicted):
            out = list()

            for i, vec in enumerate(batch):
                expand_size = predicted[i].item()
                out.append(vec.expand(max(int(expand_size), 0), -1))
            out = torch.cat(out, 0)

            return out

        def forward(self, x, duration, max_len):
            output, mel_len = self.LR(x, duration, max_len)
            return output, mel_len

    class VarianceAdaptor(nn.Module):
        """Variance Adaptor"""

        def __init__(self):
            super(VarianceAdaptor, self).__init__()
            self.duration_predictor = VariancePredictor()
            self.length_regulator = LengthRegulator()
            self.pitch_predictor = VariancePredictor()
            self.energy_predictor = VariancePredictor()

            self.pitch_feature_level = "phoneme_level"
            self.energy_feature_level = "phoneme_level"

            energy_quantization = "linear"
            n_bins = N_BINS
            pitch_min, pitch_max = PITCH_STATS
            energy_min, energy_max = ENERGY_STATS

            if pitch_quantization == "log":
                self.pitch_bins = nn.Parameter(
                    torch.exp(torch.linspace(np.log(pitch_min), np.log(pitch_max), n_bins - 1)),
                    requires_grad=False,
                )
            else:
                self.pitch_bins = nn.Parameter(
                    torch.linspace(pitch_min, pitch_max, n_bins - 1),
                    requires_grad=False,
                )
            if energy_quantization == "log":
                self.energy_bins = nn.Parameter(
                    torch.exp(torch.linspace(np.log(energy_min), np.log(energy_max), n_bins - 1)),
                    requires_grad=False,
                )
            else:
                self.energy_bins = nn.Parameter(
                    torch.linspace(energy_min, energy_max, n_bins - 1),
                    requires_grad=False,
                )

            self.pitch_embedding = nn.Embedding(n_bins, HIDDEN)
            self.energy_embedding = nn.Embedding(n_bins, HIDDEN)

        def get_pitch_embedding(self, x, target, mask, control):
            prediction = self.pitch_predictor(x, mask)
            if target is not None:
                embedding = self.pitch_embedding(torch.bucketize(target, self.pitch_bins))
            else:
                prediction = prediction * control
                embedding = self.pitch_embedding(torch.bucketize(prediction, self.pitch_bins))
            return prediction, embedding

        def get_energy_embedding(self, x, target, mask, control):
            prediction = self.energy_predictor(x, mask)
            if target is not None:
                embedding = self.energy_embedding(torch.bucketize(target, self.energy_bins))
            else:
                prediction = prediction * control
                embedding = self.energy_embedding(torch.bucketize(prediction, self.energy_bins))
            return prediction, embedding

        def forward(self, x, src_mask, mel_mask=None, max_len=None, pitch_target=None, energy_target=None,
                    duration_target=None, p_control=1.0, e_control=1.0, d_control=1.0):

            log_duration_prediction = self.duration_predictor(x, src_mask)
            if self.pitch_feature_level == "phoneme_level":
                pitch_prediction, pitch_embedding = self.get_pitch_embedding(x, pitch_target, src_mask, p_control)
                x = x + pitch_embedding
            if self.energy_feature_level == "phoneme_level":
                energy_prediction, energy_embedding = self.get_energy_embedding(x, energy_target, src_mask, p_control)
                x = x + energy_embedding

            if duration_target is not None:
                x, mel_len = self.length_regulator(x, duration_target, max_len)
                duration_rounded = duration_target
            else:
                duration_rounded = torch.clamp(
                    (torch.round(torch.exp(log_duration_prediction) - 1) * d_control),
                    min=0,
                )
                x, mel_len = self.length_regulator(x, duration_rounded, max_len)
                mel_mask = get_mask_from_lengths(mel_len)

            return (x, pitch_prediction, energy_prediction, log_duration_prediction, duration_rounded, mel_len,
                    mel_mask)

    class MaskedConvStack(nn.Module):
        """Stands in for the Transformer Encoder/Decoder (FFT blocks) and the PostNet: a Conv, ReLU, masked."""

        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.conv = Conv(in_channels, out_channels, kernel_size=KERNEL, padding=(KERNEL - 1) // 2)

        def forward(self, x, mask):
            return F.relu(self.conv(x)).masked_fill(mask.unsqueeze(-1), 0)

    class FastSpeech2(nn.Module):
        """FastSpeech2"""

        def __init__(self):
            super(FastSpeech2, self).__init__()
            self.src_word_emb = nn.Embedding(N_SYMBOLS, HIDDEN, padding_idx=0)
            self.encoder = MaskedConvStack(HIDDEN, HIDDEN)
            self.variance_adaptor = VarianceAdaptor()
            self.decoder = MaskedConvStack(HIDDEN, HIDDEN)
            self.mel_linear = nn.Linear(HIDDEN, N_MEL)
            self.postnet = Conv(N_MEL, N_MEL, kernel_size=5, padding=2)
            self.speaker_emb = None

        def forward(self, speakers, texts, src_lens, max_src_len, mels=None, mel_lens=None, max_mel_len=None,
                    p_targets=None, e_targets=None, d_targets=None, p_control=1.0, e_control=1.0, d_control=1.0):
            src_masks = get_mask_from_lengths(src_lens, max_src_len)
            mel_masks = (
                get_mask_from_lengths(mel_lens, max_mel_len)
                if mel_lens is not None
                else None
            )

            output = self.encoder(self.src_word_emb(texts), src_masks)

            (output, p_predictions, e_predictions, log_d_predictions, d_rounded, mel_lens, mel_masks) = \
                self.variance_adaptor(output, src_masks, mel_masks, max_mel_len, p_targets, e_targets, d_targets,
                                      p_control, e_control, d_control)

            output = self.decoder(output, mel_masks)
            output = self.mel_linear(output)

            postnet_output = self.postnet(output) + output

            return (output, postnet_output, p_predictions, e_predictions, log_d_predictions, d_rounded, src_masks,
                    mel_masks, src_lens, mel_lens)

    return FastSpeech2()


def fastspeech2_loss(torch, nn, inputs, predictions):
    """model/loss.py's FastSpeech2Loss.forward (phoneme-level pitch and energy)."""
    mse_loss, mae_loss = nn.MSELoss(), nn.L1Loss()
    (mel_targets, _, _, pitch_targets, energy_targets, duration_targets) = inputs[6:]
    (mel_predictions, postnet_mel_predictions, pitch_predictions, energy_predictions, log_duration_predictions, _,
     src_masks, mel_masks, _, _) = predictions
    src_masks = ~src_masks
    mel_masks = ~mel_masks
    log_duration_targets = torch.log(duration_targets.float() + 1)
    mel_targets = mel_targets[:, : mel_masks.shape[1], :]
    mel_masks = mel_masks[:, :mel_masks.shape[1]]

    log_duration_targets.requires_grad = False
    pitch_targets.requires_grad = False
    energy_targets.requires_grad = False
    mel_targets.requires_grad = False

    pitch_predictions = pitch_predictions.masked_select(src_masks)
    pitch_targets = pitch_targets.masked_select(src_masks)
    energy_predictions = energy_predictions.masked_select(src_masks)
    energy_targets = energy_targets.masked_select(src_masks)

    log_duration_predictions = log_duration_predictions.masked_select(src_masks)
    log_duration_targets = log_duration_targets.masked_select(src_masks)

    mel_predictions = mel_predictions.masked_select(mel_masks.unsqueeze(-1))
    postnet_mel_predictions = postnet_mel_predictions.masked_select(mel_masks.unsqueeze(-1))
    mel_targets = mel_targets.masked_select(mel_masks.unsqueeze(-1))

    mel_loss = mae_loss(mel_predictions, mel_targets)
    postnet_mel_loss = mae_loss(postnet_mel_predictions, mel_targets)

    pitch_loss = mse_loss(pitch_predictions, pitch_targets)
    energy_loss = mse_loss(energy_predictions, energy_targets)
    duration_loss = mse_loss(log_duration_predictions, log_duration_targets)

    total_loss = mel_loss + postnet_mel_loss + duration_loss + pitch_loss + energy_loss
    return (total_loss, mel_loss, postnet_mel_loss, pitch_loss, energy_loss, duration_loss)
