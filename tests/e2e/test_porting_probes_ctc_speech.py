"""Porting probe: a small DeepSpeech2 trained with CTC, written once as PyTorch users write it (``torch`` is ``torch``
or ``kiln``) and run in both from kiln's initial weights in float64: the features, the first forward, the first
gradients, the losses, the lr schedule, the parameters and BatchNorm statistics after the steps and the greedy
transcripts agree to 1e-10, eagerly and with the whole training step in one ``kiln.compile(fullgraph=True)`` graph
against torch's eager loop; then in float32 (rtol 1e-5).

SeanNaren/deepspeech.pytorch's code, its idioms verbatim at a small size:
- the features: ``parse_audio`` (``torch.stft`` with a Hann window in place of ``librosa.stft``, ``log1p`` of the
  magnitude, normalised in place by ``add_(-mean)``/``div_(std)``) and ``_collate_fn`` (sorted longest first, each
  spectrogram copied in by ``inputs[x][0].narrow(1, 0, seq_length).copy_(tensor)``, ``torch.FloatTensor`` length
  fractions and ``torch.IntTensor`` target sizes, then ``input_percentages.mul_(int(inputs.size(3))).int()``);
- the model: ``MaskConv`` (two ``Conv2d`` over ``(batch, 1, freq, time)``, each with ``BatchNorm2d`` and the clipped
  ReLU ``nn.Hardtanh(0, 20, inplace=True)``, the padding frames zeroed after each module by a
  ``torch.BoolTensor(x.size()).fill_(0)`` mask written through ``mask[i].narrow(2, length, ...).fill_(1)``),
  ``get_seq_lens`` (the conv arithmetic with ``//`` on ``lengths.cpu().int()``, over ``type(m) ==
  nn.modules.conv.Conv2d``), ``view(sizes[0], sizes[1] * sizes[2], sizes[3]).transpose(1, 2).transpose(0, 1)``,
  ``BatchRNN`` (``SequenceWise(nn.BatchNorm1d)``, a bidirectional ``nn.GRU`` over ``pack_padded_sequence(x,
  output_lengths)``, the directions summed by ``view(T, N, 2, -1).sum(2)``), ``SequenceWise(BatchNorm1d, Linear)``.
The loop is AssemblyAI's ("Building an end-to-end Speech Recognition model in PyTorch"): ``F.log_softmax(output,
dim=2).transpose(0, 1)`` into ``nn.CTCLoss(blank=0, zero_infinity=True)``, ``AdamW`` and ``OneCycleLR(anneal_strategy=
'linear')`` stepped every batch, greedy decoding by ``argmax`` and its collapse loop, and by
``torch.unique_consecutive`` without blanks. Targets concatenated (deepspeech.pytorch's ``reduction='sum'`` divided
by the batch) and padded by ``pad_sequence`` (AssemblyAI's, ``reduction='mean'``); the last utterance is too short for
its target (repeats need a blank between them), which ``zero_infinity`` zeroes.

What broke: ``narrow`` was not a view, so ``mask[i].narrow(...).fill_(1)`` and the collate's ``.copy_(tensor)``
wrote nothing (kiln then refused to read ``mask`` and ``inputs``); now they write through
(``tests/frontend/test_narrow_view_writes_vs_torch.py``). ``CTCLoss`` refused concatenated targets with
``target_sizes`` as a tensor (``tests/layers/test_ctc_loss_eager_tensor_lengths_vs_torch.py``). kiln had no
``torch.stft`` (``frontend/stft.py``, ``tests/frontend/test_stft_vs_torch.py``). Left: the compiled step runs
``MaskConv`` with the mask by ``arange(T) >= lengths`` (its ``length.item()`` loop reads values a trace does not
have, where ``torch.compile`` would break the graph) and padded targets (concatenated ones need their lengths known
at trace time).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot

BLANK, VOCAB, FREQ, FRAMES, HIDDEN = 0, 6, 17, 14, 8
INPUT_FRAMES = (14, 11, 8)
"""Sorted longest first, as deepspeech.pytorch's loader sorts each batch for ``pack_padded_sequence``."""
TARGETS = ([1, 2, 3, 2], [4, 5, 1], [2, 2, 2, 2])
"""The last needs 7 frames (a blank between repeats) but its utterance gives 4: no alignment, zeroed."""


def deepspeech_program(torch, nn, F, mask_by_loop=True):
    class SequenceWise(nn.Module):
        def __init__(self, module):
            """
            Collapses input of dim T*N*H to (T*N)*H, and applies to a module.
            Allows handling of variable sequence lengths and minibatch sizes.
            :param module: Module to apply input to.
            """
            super(SequenceWise, self).__init__()
            self.module = module

        def forward(self, x):
            t, n = x.size(0), x.size(1)
            x = x.view(t * n, -1)
            x = self.module(x)
            x = x.view(t, n, -1)
            return x

    class MaskConv(nn.Module):
        def __init__(self, seq_module):
            """
            Adds padding to the output of the module based on the given lengths. This is to ensure that the
            results of the model do not change when batch sizes change during inference.
            Input needs to be in the shape of (BxCxDxT)
            :param seq_module: The sequential module containing the conv stack.
            """
            super(MaskConv, self).__init__()
            self.seq_module = seq_module

        def forward(self, x, lengths):
            for module in self.seq_module:
                x = module(x)
                if mask_by_loop:  # deepspeech.pytorch's
                    mask = torch.BoolTensor(x.size()).fill_(0)
                    if x.is_cuda:
                        mask = mask.cuda()
                    for i, length in enumerate(lengths):
                        length = length.item()
                        if (mask[i].size(2) - length) > 0:
                            mask[i].narrow(2, length, mask[i].size(2) - length).fill_(1)
                else:  # the same mask without a Python loop over the batch, so that it traces
                    mask = torch.arange(x.size(3), device=x.device)[None, None, None, :] >= lengths[:, None, None, None]
                x = x.masked_fill(mask, 0)
            return x, lengths

    class BatchRNN(nn.Module):
        def __init__(self, input_size, hidden_size, rnn_type=nn.LSTM, bidirectional=False, batch_norm=True):
            super(BatchRNN, self).__init__()
            self.input_size = input_size
            self.hidden_size = hidden_size
            self.bidirectional = bidirectional
            self.batch_norm = SequenceWise(nn.BatchNorm1d(input_size)) if batch_norm else None
            self.rnn = rnn_type(input_size=input_size, hidden_size=hidden_size,
                                bidirectional=bidirectional, bias=True)
            self.num_directions = 2 if bidirectional else 1

        def flatten_parameters(self):
            self.rnn.flatten_parameters()

        def forward(self, x, output_lengths):
            if self.batch_norm is not None:
                x = self.batch_norm(x)
            x = nn.utils.rnn.pack_padded_sequence(x, output_lengths)
            x, h = self.rnn(x)
            x, _ = nn.utils.rnn.pad_packed_sequence(x)
            if self.bidirectional:
                x = x.view(x.size(0), x.size(1), 2, -1).sum(2).view(x.size(0), x.size(1), -1)  # (TxNxH*2) -> (TxNxH) by sum
            return x

    class DeepSpeech(nn.Module):
        def __init__(self, num_classes=VOCAB, hidden_size=HIDDEN, hidden_layers=2, freq_bins=FREQ, channels=4):
            super().__init__()
            self.bidirectional = True
            self.conv = MaskConv(nn.Sequential(
                nn.Conv2d(1, channels, kernel_size=(5, 3), stride=(2, 2), padding=(2, 1)),
                nn.BatchNorm2d(channels),
                nn.Hardtanh(0, 20, inplace=True),
                nn.Conv2d(channels, channels, kernel_size=(5, 3), stride=(2, 1), padding=(2, 1)),
                nn.BatchNorm2d(channels),
                nn.Hardtanh(0, 20, inplace=True)
            ))
            # Based on above convolutions and spectrogram size using conv formula (W - F + 2P)/ S+1
            rnn_input_size = freq_bins
            rnn_input_size = int(math.floor(rnn_input_size + 2 * 2 - 5) / 2 + 1)
            rnn_input_size = int(math.floor(rnn_input_size + 2 * 2 - 5) / 2 + 1)
            rnn_input_size *= channels
            self.rnns = nn.Sequential(
                BatchRNN(input_size=rnn_input_size, hidden_size=hidden_size, rnn_type=nn.GRU,
                         bidirectional=self.bidirectional, batch_norm=False),
                *(BatchRNN(input_size=hidden_size, hidden_size=hidden_size, rnn_type=nn.GRU,
                           bidirectional=self.bidirectional) for x in range(hidden_layers - 1))
            )
            fully_connected = nn.Sequential(
                nn.BatchNorm1d(hidden_size),
                nn.Linear(hidden_size, num_classes, bias=False)
            )
            self.fc = nn.Sequential(
                SequenceWise(fully_connected),
            )

        def forward(self, x, lengths):
            lengths = lengths.cpu().int()
            output_lengths = self.get_seq_lens(lengths)
            x, _ = self.conv(x, output_lengths)

            sizes = x.size()
            x = x.view(sizes[0], sizes[1] * sizes[2], sizes[3])  # Collapse feature dimension
            x = x.transpose(1, 2).transpose(0, 1).contiguous()  # TxNxH

            for rnn in self.rnns:
                x = rnn(x, output_lengths)

            x = self.fc(x)
            x = x.transpose(0, 1)
            return x, output_lengths

        def get_seq_lens(self, input_length):
            """
            Given a 1D Tensor or Variable containing integer sequence lengths, return a 1D tensor or variable
            containing the size sequences that will be output by the network.
            :param input_length: 1D Tensor
            :return: 1D Tensor scaled by model
            """
            seq_len = input_length
            for m in self.conv.modules():
                if type(m) == nn.modules.conv.Conv2d:
                    seq_len = ((seq_len + 2 * m.padding[1] - m.dilation[1] * (m.kernel_size[1] - 1) - 1) // m.stride[1] + 1)
            return seq_len.int()

    return DeepSpeech()


def greedy_decoder(torch, output, labels, label_lengths, blank_label=BLANK, collapse_repeated=True):
    """AssemblyAI's ``GreedyDecoder`` (the text mapping left out: label ids)."""
    arg_maxes = torch.argmax(output, dim=2)
    decodes = []
    targets = []
    for i, args in enumerate(arg_maxes):
        decode = []
        targets.append(labels[i][:label_lengths[i]].tolist())
        for j, index in enumerate(args):
            if index != blank_label:
                if collapse_repeated and j != 0 and index == args[j - 1]:
                    continue
                decode.append(index.item())
        decodes.append(decode)
    return decodes, targets


def unique_consecutive_decoder(torch, log_probs, output_lengths):
    """Greedy CTC decoding as torchaudio's tutorial writes it: argmax, ``unique_consecutive``, blanks removed."""
    best = log_probs.argmax(dim=-1)  # (T, N)
    paths = []
    for n in range(best.size(1)):
        indices = torch.unique_consecutive(best[:output_lengths[n], n], dim=-1)
        paths.append([i for i in indices.tolist() if i != BLANK])
    return paths


def parse_audio(torch, y, n_fft=32, hop_length=16):
    """deepspeech.pytorch's ``SpectrogramParser.parse_audio`` with ``torch.stft`` in place of ``librosa.stft`` (the
    same centred, reflect-padded frames): the log1p magnitude, normalised by its mean and (unbiased) std."""
    D = torch.stft(y, n_fft=n_fft, hop_length=hop_length, win_length=n_fft, window=torch.hann_window(n_fft),
                   return_complex=True)
    spect = torch.log1p(D.abs())
    mean = spect.mean()
    std = spect.std()
    spect.add_(-mean)
    spect.div_(std)
    return spect


def _collate_fn(torch, batch):
    """deepspeech.pytorch's ``_collate_fn``, verbatim: longest first, each spectrogram copied into a zero batch through
    ``inputs[x][0].narrow(1, 0, seq_length).copy_(tensor)``, float32 length fractions, int32 target sizes."""
    def func(p):
        return p[0].size(1)

    batch = sorted(batch, key=lambda sample: sample[0].size(1), reverse=True)
    longest_sample = max(batch, key=func)[0]
    freq_size = longest_sample.size(0)
    minibatch_size = len(batch)
    max_seqlength = longest_sample.size(1)
    inputs = torch.zeros(minibatch_size, 1, freq_size, max_seqlength)
    input_percentages = torch.FloatTensor(minibatch_size)
    target_sizes = torch.IntTensor(minibatch_size)
    targets = []
    for x in range(minibatch_size):
        sample = batch[x]
        tensor = sample[0]
        target = sample[1]
        seq_length = tensor.size(1)
        inputs[x][0].narrow(1, 0, seq_length).copy_(tensor)
        input_percentages[x] = seq_length / float(max_seqlength)
        target_sizes[x] = len(target)
        targets.extend(target)
    targets = torch.tensor(targets, dtype=torch.long)
    return inputs, targets, input_percentages, target_sizes


def _utterances(steps, seed=7):
    """Noisy tones whose ``parse_audio`` frames are ``INPUT_FRAMES``, with ``TARGETS``, one batch a step (unsorted:
    the collate sorts them)."""
    rng = np.random.default_rng(seed)
    order = [1, 0, 2]
    return [[(np.sin(np.arange(16 * (INPUT_FRAMES[i] - 1)) * rng.uniform(0.2, 1.5))
              + 0.3 * rng.standard_normal(16 * (INPUT_FRAMES[i] - 1)), TARGETS[i]) for i in order] for _ in range(steps)]


def _speech_batches(torch, steps):
    """Per step ``(inputs (N, 1, FREQ, FRAMES), targets, input_sizes, target_sizes)`` as deepspeech.pytorch's training
    loop gets them: ``input_sizes = input_percentages.mul_(int(inputs.size(3))).int()``."""
    batches = []
    for utterances in _utterances(steps):
        inputs, targets, input_percentages, target_sizes = _collate_fn(
            torch, [(parse_audio(torch, torch.tensor(audio)), target) for audio, target in utterances])
        input_sizes = input_percentages.mul_(int(inputs.size(3))).int()
        batches.append((inputs, targets, input_sizes, target_sizes))
    return batches


def _padded(torch, nn, targets, target_sizes):
    """AssemblyAI's padded labels: ``nn.utils.rnn.pad_sequence(labels, batch_first=True)`` of each target."""
    return nn.utils.rnn.pad_sequence(list(targets.split(target_sizes.tolist())), batch_first=True)


def _optimizer_and_scheduler(torch, model, steps):
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-3, steps_per_epoch=steps, epochs=2,
                                                    anneal_strategy='linear')
    return optimizer, scheduler


def _ctc_loss(torch, nn, output, output_sizes, targets, target_sizes, reduction):
    criterion = nn.CTCLoss(blank=BLANK, reduction=reduction, zero_infinity=True)
    out = torch.nn.functional.log_softmax(output, dim=2).transpose(0, 1)  # (time, batch, n_class)
    loss = criterion(out, targets, output_sizes, target_sizes)
    return loss / output.size(0) if reduction == "sum" else loss


def train_deepspeech(form, reduction, steps=2):
    def train(torch, nn, F, model):
        optimizer, scheduler = _optimizer_and_scheduler(torch, model, steps)
        record = {"losses": [], "lrs": []}
        batches = _speech_batches(torch, steps)
        for inputs, targets, input_sizes, target_sizes in batches:
            if form == "padded":
                targets = _padded(torch, nn, targets, target_sizes)
            output, output_sizes = model(inputs, input_sizes)
            loss = _ctc_loss(torch, nn, output, output_sizes, targets, target_sizes, reduction)
            optimizer.zero_grad()
            loss.backward()
            record.setdefault("inputs", array(inputs))
            record.setdefault("sizes", [str(input_sizes.dtype), input_sizes.tolist(), str(target_sizes.dtype)])
            record.setdefault("output", array(output))
            record.setdefault("output_sizes", output_sizes.tolist())
            record.setdefault("grads", gradients(model))
            optimizer.step()
            scheduler.step()
            record["losses"].append(loss.item())
            record["lrs"].append(scheduler.get_last_lr()[0])
        model.eval()
        inputs, targets, input_sizes, target_sizes = batches[0]
        with torch.no_grad():
            output, output_sizes = model(inputs, input_sizes)
            log_probs = F.log_softmax(output, dim=2)
            record["eval_output"] = array(output)
            record["decodes"] = greedy_decoder(torch, log_probs, _padded(torch, nn, targets, target_sizes), target_sizes)
            record["unique_decodes"] = unique_consecutive_decoder(torch, log_probs.transpose(0, 1), output_sizes)
        record["state"] = snapshot(model)
        return record

    return train


def _compare(ours, theirs):
    for key in ("decodes", "unique_decodes", "output_sizes", "sizes"):
        if key in theirs:
            assert ours.pop(key) == theirs.pop(key), key
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("form, reduction", [("concatenated", "sum"), ("padded", "mean")])
def test_deepspeech_trains_and_decodes_as_torch(form, reduction, float64_default):
    ours, theirs = run_in_lockstep(deepspeech_program, train_deepspeech(form, reduction))
    assert theirs["output_sizes"] == [7, 6, 4]
    assert theirs["sizes"] == ["torch.int32", list(INPUT_FRAMES), "torch.int32"]
    ours["sizes"][::2] = [name.replace("kiln.", "torch.") for name in ours["sizes"][::2]]
    _compare(ours, theirs)


def test_deepspeech_compiled_step_as_torch(float64_default):
    """zero_grad, the masked conv stack, the packed GRUs, CTC, backward and AdamW in one graph; OneCycleLR stepped
    between the calls (a new lr and beta1 each call, fed to the graph)."""
    def train(torch, nn, F, model):
        batches = _speech_batches(torch, 2)
        optimizer, scheduler = _optimizer_and_scheduler(torch, model, len(batches))

        def train_step(spectrograms, input_sizes, targets, target_sizes):
            optimizer.zero_grad()
            output, output_sizes = model(spectrograms, input_sizes)
            loss = _ctc_loss(torch, nn, output, output_sizes, targets, target_sizes, "mean")
            loss.backward()
            optimizer.step()
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        losses = []
        for inputs, targets, input_sizes, target_sizes in batches:
            losses.append(run(inputs, input_sizes, _padded(torch, nn, targets, target_sizes), target_sizes).item())
            scheduler.step()
        return {"losses": losses, "state": snapshot(model)}

    ours, theirs = run_in_lockstep(lambda torch, nn, F: deepspeech_program(torch, nn, F, mask_by_loop=False), train)
    _compare(ours, theirs)


def test_deepspeech_trains_in_float32_as_torch():
    """As DeepSpeech2 trains: float32 weights and features. float32's tolerance: the two libraries' float32 kernels
    (conv, GRU matmuls, the CTC recursion's log-sum-exp) round differently in the last bits, which two steps of AdamW
    carry into the weights at ~1e-6 relative."""
    ours, theirs = run_in_lockstep(deepspeech_program, train_deepspeech("concatenated", "sum"))
    assert theirs["inputs"].dtype == ours["inputs"].dtype == np.float32
    assert theirs["output"].dtype == ours["output"].dtype == np.float32
    ours["sizes"][::2] = [name.replace("kiln.", "torch.") for name in ours["sizes"][::2]]
    for key in ("decodes", "unique_decodes", "output_sizes", "sizes"):
        assert ours.pop(key) == theirs.pop(key), key
    assert_same_records(ours, theirs, rtol=1e-5, atol=1e-6)
