"""Porting probes: two speech-synthesis families, each written once as its reference writes it (``torch`` is ``torch``
or ``kiln``) and run in both libraries from kiln's initial weights; float64 to 1e-10.

**Tacotron 2** (NVIDIA/tacotron2's ``layers.py``, ``model.py``, ``utils.py``, ``loss_function.py``, ``train.py``):
``LinearNorm``/``ConvNorm`` with ``xavier_uniform_(..., gain=calculate_gain(w_init_gain))``, the embedding's
``weight.data.uniform_(-val, val)``, the encoder (Conv1d + BatchNorm1d banks, ``input_lengths.cpu().numpy()``,
``pack_padded_sequence``/``pad_packed_sequence`` around a bidirectional LSTM), the Prenet (``F.dropout(...,
training=True)``, always on), location-sensitive attention (``LocationLayer`` over ``torch.cat((attention_weights
.unsqueeze(1), attention_weights_cum.unsqueeze(1)), dim=1)``, ``energies.squeeze(-1)``,
``alignment.data.masked_fill_(mask, -inf)``, ``F.softmax``, ``torch.bmm``), the decoder loop (two ``nn.LSTMCell``,
states cached on the module by ``Variable(memory.data.new(B, n).zero_())`` and ``+=``), ``get_mask_from_lengths``
(``torch.max(lengths).item()``, ``torch.arange(0, max_len, out=torch.LongTensor(max_len))`` on CPU), the postnet,
``parse_output``'s masking through ``.data.masked_fill_``, ``Tacotron2Loss`` (``nn.MSELoss()`` twice +
``nn.BCEWithLogitsLoss()``), ``model.zero_grad()``, ``clip_grad_norm_``, Adam with weight decay; and ``inference``
(eager: the gate threshold ends a data-dependent loop).
Eager training, and the teacher-forced step (zero_grad, forward, loss, backward, clip, Adam) as one
``kiln.compile(fullgraph=True)`` graph against torch's eager loop. The dropouts are hparams here (``prenet_dropout``
and the others, 0.5 in the reference, 0 in the lockstep: the two libraries draw different masks); the Prenet's
always-on dropout is checked for what it draws (``test_prenet_dropout_stays_on_in_eval_as_the_reference``).

**HiFi-GAN** (jik876/hifi-gan's ``models.py``, ``utils.py``, ``meldataset.py``, ``train.py``): the generator
(``weight_norm(ConvTranspose1d(...))`` upsampling, ``ResBlock1`` with dilations and ``F.leaky_relu(x, LRELU_SLOPE)``,
``xs +=`` over the kernels), ``init_weights``'s ``m.weight.data.normal_(mean, std)`` (which weight norm's pre-hook
overwrites at the next forward, in both), ``remove_weight_norm``, the multi-period discriminator (``F.pad(x, (0,
n_pad), "reflect")``, ``x.view(b, c, t // period, period)``, ``Conv2d`` with ``(kernel_size, 1)``), the multi-scale
one (``spectral_norm`` on its first scale, grouped Conv1d, ``AvgPool1d(4, 2, padding=2)``), ``feature_loss``,
``discriminator_loss`` (its ``.item()`` lists), ``generator_loss``, the mel loss (``mel_spectrogram`` with
``torch.stft(..., return_complex=True)``, ``torch.view_as_real``, a librosa-free Slaney mel basis built in NumPy and
``torch.from_numpy``), both steps with two AdamW and ExponentialLR. Eager, and the generator step as one
``kiln.compile(fullgraph=True)`` graph (its spectral-norm power iterations and the discriminators' accumulated
gradients included) between eager discriminator steps; the generator after ``remove_weight_norm`` through
``kiln.onnx.export`` and onnxruntime, and ``kiln.compile`` (float32). Both families also train eagerly in float32, at
float32's level.

Changes to the reference text, each a line: widths are tiny (the discriminators' 1024 channels are a few, ``Conv1d(80,
...)`` takes ``h.num_mels``); the mel basis is cast to the signal's dtype (``.to(y.dtype)``, the reference's
``.float()`` is float32's); ``mel_spectrogram``'s range check (``if torch.min(y) < -1.: print(...)``, a data-dependent
``if``) is off inside the compiled generator step (``torch.compile(fullgraph=True)`` refuses it too). In the
compiled Tacotron step, ``input_lengths.cpu().numpy()`` and ``torch.max(lengths).item()`` of the step's arguments are
specialized and guarded (``frontend/value_guards.py``; ``torch.compile(fullgraph=True)`` refuses the step: Dynamo skips
``pack_padded_sequence``).

What broke (each fixed in kiln, with a test next to its code):

- ``torch.autograd.Variable`` and ``Tensor.new`` were missing (``frontend/legacy_variable.py``,
  ``frontend/tensor_more.py``; tests/frontend/test_torch_surface_legacy_variable.py).
- ``torch.arange(..., out=...)`` was refused (no ``out``) (``frontend/out_argument.py``;
  tests/frontend/test_torch_surface_arange_out.py).
- ``outputs[0].data.masked_fill_(mask, 0.0)`` after the postnet read the outputs: ``backward()`` raised "modified by
  an inplace operation"; ``x.data`` now has a version counter of its own, as torch's, and the backward of an op that
  saved ``x`` (or kiln's own view of it, conv1d's ``x.unsqueeze(2)``) reads the new values, torch's shared storage
  (``frontend/version_counter.py``; tests/runtime/test_data_alias_writes_vs_torch.py).
- Compiled: the decoder's ``self.attention_weights_cum = Variable(...zero_())`` (a constant) became an eager tensor
  lifted to an input, so each call started from the last call's sum (losses drifted from step 2; a compiled module
  refused the ``+=``); and deciding it was constant walked the decoder loop's graph once per path (exponential: the
  step never finished compiling) (``frontend/module.py``, ``runtime/eager.py``;
  tests/runtime/test_compiled_module_cached_constants.py).
- Compiled: ``torch.max(lengths.data).item()`` and ``lengths.cpu().numpy()`` raised (the known-value walk stopped at
  ``.data``'s ``stop_gradient``; ``numpy()`` of a traced tensor always raised; it now gives the values the trace knows
  or specializes on, as ``item()``) (``frontend/trace_known_values.py``, ``frontend/tensor_methods.py``;
  tests/runtime/test_compiled_known_values_through_data.py).
- Compiled, the same ``parse_output`` masking left the postnet's first conv weight gradient reading the outputs from
  before the write (the trace rebinds the tensor; torch's backward reads the shared storage): the backward's ops now
  read the values written through ``.data`` (``frontend/traced_data_writes.py``;
  tests/runtime/test_data_alias_writes_vs_torch.py).

HiFi-GAN agreed to 1e-10 as first written.
"""

from __future__ import annotations

import io
import itertools

import numpy as np
import pytest

import kiln
from e2e.hifigan_program import BATCH, FRAMES, H, hifigan, losses, mel_spectrogram_fn
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.tacotron2_program import HPARAMS, MEL_LENGTHS, TEXT_LENGTHS, tacotron2
from oracles import libraries, require

# torch 2.13 (and kiln) deprecate nn.utils.weight_norm, which HiFi-GAN writes, for the parametrization.
pytestmark = pytest.mark.filterwarnings("ignore:.*nn.utils.weight_norm. is deprecated:FutureWarning")

# --- Tacotron 2 ---------------------------------------------------------------------------------------------------

def tacotron_batch(seed=0):
    """TextMelCollate's padded batch: text ids, mels, gates (1 from each mel's last frame on)."""
    rng = np.random.default_rng(seed)
    text = np.zeros((len(TEXT_LENGTHS), max(TEXT_LENGTHS)), np.int64)
    mel = np.zeros((len(TEXT_LENGTHS), HPARAMS["n_mel_channels"], max(MEL_LENGTHS)))
    gate = np.zeros((len(TEXT_LENGTHS), max(MEL_LENGTHS)))
    for i, (text_length, mel_length) in enumerate(zip(TEXT_LENGTHS, MEL_LENGTHS)):
        text[i, :text_length] = rng.integers(1, HPARAMS["n_symbols"], text_length)
        mel[i, :, :mel_length] = rng.standard_normal((HPARAMS["n_mel_channels"], mel_length))
        gate[i, mel_length - 1:] = 1
    return text, mel, gate


def gated_inference(torch, model, text):
    """``model.inference`` run to ``max_decoder_steps``, then again with ``gate_threshold`` set so that the gate ends
    the loop early: between the first gate probability above all before it and the highest before it (just under
    the first one where none is)."""
    decoder = model.decoder
    with torch.no_grad():
        decoder.gate_threshold = 1.0
        full = model.inference(text)
        gates = torch.sigmoid(full[2]).flatten().tolist()
        rising = [t for t in range(1, len(gates) - 1) if gates[t] > max(gates[:t])]
        steps = rising[0] + 1 if rising else 1
        decoder.gate_threshold = (max(gates[:steps - 1]) + gates[steps - 1]) / 2 if rising else gates[0] - 1e-9
        gated = model.inference(text)
    names = ["mel", "mel_postnet", "gate", "alignments"]
    return {"full": dict(zip(names, map(array, full))), "gated": dict(zip(names, map(array, gated))),
            "gated steps": (steps, gated[0].shape[2])}


def train_tacotron(steps=3):
    text_values, mel_values, gate_values = tacotron_batch()

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
        criterion = model.criterion
        record = {"losses": []}
        model.train()
        for _ in range(steps):
            text_padded, input_lengths = torch.tensor(text_values), torch.tensor(TEXT_LENGTHS)
            floating = torch.get_default_dtype()  # parse_batch's .float(), in the run's dtype
            mel_padded = torch.tensor(mel_values, dtype=floating)
            gate_padded = torch.tensor(gate_values, dtype=floating)
            output_lengths = torch.tensor(MEL_LENGTHS)
            max_len = torch.max(input_lengths.data).item()  # parse_batch
            x, y = (text_padded, input_lengths, mel_padded, max_len, output_lengths), (mel_padded, gate_padded)
            model.zero_grad()
            y_pred = model(x)
            loss = criterion(y_pred, y)
            reduced_loss = loss.item()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            record.setdefault("outputs", dict(zip(["mel", "mel_postnet", "gate", "alignments"], map(array, y_pred))))
            record.setdefault("grads", gradients(model))
            record.setdefault("grad_norm", float(grad_norm))
            optimizer.step()
            record["losses"].append(reduced_loss)
        record["state"] = snapshot(model)
        model.eval()
        record["inference"] = gated_inference(torch, model, torch.tensor(text_values[:1]))
        return record

    return train


def compiled_tacotron(steps=3):
    """train.py's step (parse_batch outside, then zero_grad, forward, loss, backward, clip, Adam) as one compiled
    graph in kiln, torch's eager loop in torch."""
    text_values, mel_values, gate_values = tacotron_batch()

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
        criterion = model.criterion
        model.train()

        def train_step(x, y):
            model.zero_grad()
            y_pred = model(x)
            loss = criterion(y_pred, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            return loss.detach()

        run = kiln.compile(train_step, fullgraph=True) if torch is kiln else train_step
        input_lengths = torch.tensor(TEXT_LENGTHS)
        max_len = torch.max(input_lengths.data).item()
        mel_padded, gate_padded = torch.tensor(mel_values), torch.tensor(gate_values)
        x = (torch.tensor(text_values), input_lengths, mel_padded, max_len, torch.tensor(MEL_LENGTHS))
        return {"losses": [run(x, (mel_padded, gate_padded)).item() for _ in range(steps)], "state": snapshot(model)}

    return train


# The encoder's and postnet's conv biases sit right before a training-mode BatchNorm1d, which subtracts each channel's
# mean: their gradient is rounding noise, which Adam (eps 1e-8) turns into steps of up to ~1e-11 that differ by library.
LOOSER = {"0.conv.bias": dict(rtol=0, atol=1e-10)}


def test_tacotron2_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(tacotron2, train_tacotron())
    assert_same_records(ours, theirs, looser=LOOSER)
    assert theirs["losses"][-1] < theirs["losses"][0]
    assert ours["inference"]["full"]["mel"].shape[2] == HPARAMS["max_decoder_steps"]
    expected, ran = ours["inference"]["gated steps"]
    assert ran == expected < HPARAMS["max_decoder_steps"]


def test_tacotron2_compiled_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(tacotron2, compiled_tacotron())
    assert_same_records(ours, theirs, looser=LOOSER)


def test_tacotron2_float32_as_torch():
    """How Tacotron 2 trains (fp16_run off): float32 at float32's level; the conv biases before a BatchNorm take
    Adam's noise steps (up to lr each), which the BatchNorm's running mean takes in (times its momentum), and so
    the eval-mode inference."""
    ours, theirs = run_in_lockstep(tacotron2, train_tacotron())
    assert ours["outputs"]["mel"].dtype == np.float32
    noise = dict(rtol=0, atol=3 * 2e-3)
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5,
                        looser={"0.conv.bias": noise, "running_mean": noise, "inference": noise})


def test_prenet_dropout_stays_on_in_eval_as_the_reference():
    """``F.dropout(F.relu(linear(x)), p=0.5, training=True)``: in eval too, eagerly and compiled, each value kept with
    probability 1/2 and scaled by 2, the gradient through the kept ones only; a new mask at each call."""
    kiln.manual_seed(0)
    prenet = tacotron2(*libraries("kiln"), prenet_dropout=0.5).decoder.prenet.eval()
    x = kiln.tensor(np.random.default_rng(1).standard_normal((2000, HPARAMS["n_mel_channels"]), dtype=np.float32))
    layer = prenet.layers[0].linear_layer
    undropped = kiln.nn.functional.relu(layer(x))
    first = prenet.layers[0]
    F = kiln.nn.functional
    one_layer = lambda x: F.dropout(F.relu(first(x)), p=prenet.p, training=True)  # noqa: E731
    for run in (one_layer, kiln.compile(one_layer, fullgraph=True)):
        dropped, again = array(run(x)), array(run(x))
        positive = array(undropped) > 0
        kept = dropped[positive] != 0
        assert abs(kept.mean() - 0.5) < 0.02 and not np.array_equal(dropped, again)
        np.testing.assert_allclose(dropped[positive][kept], 2 * array(undropped)[positive][kept], rtol=1e-6)
    x.requires_grad_(True)
    out = one_layer(x)
    out.sum().backward()
    mask = array(out) != 0
    expected = 2 * mask.astype(np.float64) @ array(layer.weight)
    np.testing.assert_allclose(array(x.grad), expected, rtol=1e-5, atol=1e-6)


# --- HiFi-GAN ------------------------------------------------------------------------------------------------------

def hifigan_batch(seed=0, dtype=np.float64):
    """A mel (the generator's input) and a segment of audio in [-1, 1], FRAMES * hop_size samples."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, H.num_mels, FRAMES))
    y = np.clip(rng.standard_normal((BATCH, FRAMES * H.hop_size)) * 0.3, -1, 1)
    return x.astype(dtype), y.astype(dtype)


def optimizers(torch, generator, mpd, msd):
    h = H
    optim_g = torch.optim.AdamW(generator.parameters(), h.learning_rate, betas=[h.adam_b1, h.adam_b2])
    optim_d = torch.optim.AdamW(itertools.chain(msd.parameters(), mpd.parameters()),
                                h.learning_rate, betas=[h.adam_b1, h.adam_b2])
    scheduler_g = torch.optim.lr_scheduler.ExponentialLR(optim_g, gamma=h.lr_decay, last_epoch=-1)
    scheduler_d = torch.optim.lr_scheduler.ExponentialLR(optim_d, gamma=h.lr_decay, last_epoch=-1)
    return optim_g, optim_d, scheduler_g, scheduler_d


def train_hifigan(steps=2):
    """train.py's loop: the discriminators' step on ``y_g_hat.detach()``, then the generator's on the same
    ``y_g_hat``."""
    x_values, y_values = hifigan_batch()

    def train(torch, nn, F, model):
        h = H
        generator, mpd, msd = model.generator, model.mpd, model.msd
        feature_loss, discriminator_loss, generator_loss = losses(torch)
        mel_spectrogram = mel_spectrogram_fn(torch)
        optim_g, optim_d, scheduler_g, scheduler_d = optimizers(torch, generator, mpd, msd)
        generator.train()
        mpd.train()
        msd.train()
        record = {"d": [], "g": [], "mel": []}
        for epoch in range(steps):
            x = torch.autograd.Variable(torch.tensor(x_values, dtype=torch.get_default_dtype()))
            y = torch.autograd.Variable(torch.tensor(y_values, dtype=torch.get_default_dtype()))
            y_mel = mel_spectrogram(y, h.n_fft, h.num_mels, h.sampling_rate, h.hop_size, h.win_size, h.fmin,
                                    h.fmax_for_loss)
            y = y.unsqueeze(1)

            y_g_hat = generator(x)
            y_g_hat_mel = mel_spectrogram(y_g_hat.squeeze(1), h.n_fft, h.num_mels, h.sampling_rate, h.hop_size,
                                          h.win_size, h.fmin, h.fmax_for_loss)

            optim_d.zero_grad()

            # MPD
            y_df_hat_r, y_df_hat_g, _, _ = mpd(y, y_g_hat.detach())
            loss_disc_f, losses_disc_f_r, losses_disc_f_g = discriminator_loss(y_df_hat_r, y_df_hat_g)

            # MSD
            y_ds_hat_r, y_ds_hat_g, _, _ = msd(y, y_g_hat.detach())
            loss_disc_s, losses_disc_s_r, losses_disc_s_g = discriminator_loss(y_ds_hat_r, y_ds_hat_g)

            loss_disc_all = loss_disc_s + loss_disc_f

            loss_disc_all.backward()
            record.setdefault("d_grads", gradients(model))
            optim_d.step()

            # Generator
            optim_g.zero_grad()

            # L1 Mel-Spectrogram Loss
            loss_mel = F.l1_loss(y_mel, y_g_hat_mel) * 45

            y_df_hat_r, y_df_hat_g, fmap_f_r, fmap_f_g = mpd(y, y_g_hat)
            y_ds_hat_r, y_ds_hat_g, fmap_s_r, fmap_s_g = msd(y, y_g_hat)
            loss_fm_f = feature_loss(fmap_f_r, fmap_f_g)
            loss_fm_s = feature_loss(fmap_s_r, fmap_s_g)
            loss_gen_f, losses_gen_f = generator_loss(y_df_hat_g)
            loss_gen_s, losses_gen_s = generator_loss(y_ds_hat_g)
            loss_gen_all = loss_gen_s + loss_gen_f + loss_fm_s + loss_fm_f + loss_mel

            loss_gen_all.backward()
            record.setdefault("g_grads", gradients(generator))
            optim_g.step()
            scheduler_g.step()
            scheduler_d.step()
            record["d"].append(loss_disc_all.item())
            record["g"].append(loss_gen_all.item())
            record["mel"].append(loss_mel.item())
            record.setdefault("d_parts", losses_disc_f_r + losses_disc_f_g + losses_disc_s_r + losses_disc_s_g)
            record.setdefault("y_g_hat", array(y_g_hat))
        record["state"] = snapshot(model)
        generator.eval()
        generator.remove_weight_norm()
        with torch.no_grad():
            record["audio"] = array(generator(torch.tensor(x_values, dtype=torch.get_default_dtype())))
        record["after_removal"] = snapshot(generator)
        return record

    return train


def compiled_hifigan(steps=2):
    """The generator's step as one compiled graph in kiln (it recomputes ``y_g_hat = generator(x)``: the
    discriminators' step between changed no generator weight), the discriminators' eager, torch's all eager."""
    x_values, y_values = hifigan_batch()

    def train(torch, nn, F, model):
        h = H
        generator, mpd, msd = model.generator, model.mpd, model.msd
        feature_loss, discriminator_loss, generator_loss = losses(torch)
        mel_spectrogram = mel_spectrogram_fn(torch)
        mel_in_step = mel_spectrogram_fn(torch, check_range=False)
        optim_g, optim_d, scheduler_g, scheduler_d = optimizers(torch, generator, mpd, msd)
        generator.train()
        mpd.train()
        msd.train()

        def generator_step(x, y, y_mel):
            optim_g.zero_grad()
            y_g_hat = generator(x)
            y_g_hat_mel = mel_in_step(y_g_hat.squeeze(1), h.n_fft, h.num_mels, h.sampling_rate, h.hop_size,
                                      h.win_size, h.fmin, h.fmax_for_loss)
            loss_mel = F.l1_loss(y_mel, y_g_hat_mel) * 45
            y_df_hat_r, y_df_hat_g, fmap_f_r, fmap_f_g = mpd(y, y_g_hat)
            y_ds_hat_r, y_ds_hat_g, fmap_s_r, fmap_s_g = msd(y, y_g_hat)
            loss_fm_f = feature_loss(fmap_f_r, fmap_f_g)
            loss_fm_s = feature_loss(fmap_s_r, fmap_s_g)
            loss_gen_f, losses_gen_f = generator_loss(y_df_hat_g)
            loss_gen_s, losses_gen_s = generator_loss(y_ds_hat_g)
            loss_gen_all = loss_gen_s + loss_gen_f + loss_fm_s + loss_fm_f + loss_mel
            loss_gen_all.backward()
            optim_g.step()
            return loss_gen_all.detach()

        run = kiln.compile(generator_step, fullgraph=True) if torch is kiln else generator_step
        record = {"d": [], "g": []}
        for epoch in range(steps):
            floating = torch.get_default_dtype()
            x, y = torch.tensor(x_values, dtype=floating), torch.tensor(y_values, dtype=floating)
            y_mel = mel_spectrogram(y, h.n_fft, h.num_mels, h.sampling_rate, h.hop_size, h.win_size, h.fmin,
                                    h.fmax_for_loss)
            y = y.unsqueeze(1)
            with torch.no_grad():
                y_g_hat = generator(x)
            optim_d.zero_grad()
            y_df_hat_r, y_df_hat_g, _, _ = mpd(y, y_g_hat.detach())
            loss_disc_f, _, _ = discriminator_loss(y_df_hat_r, y_df_hat_g)
            y_ds_hat_r, y_ds_hat_g, _, _ = msd(y, y_g_hat.detach())
            loss_disc_s, _, _ = discriminator_loss(y_ds_hat_r, y_ds_hat_g)
            loss_disc_all = loss_disc_s + loss_disc_f
            loss_disc_all.backward()
            optim_d.step()
            record["g"].append(run(x, y, y_mel).item())
            scheduler_g.step()
            scheduler_d.step()
            record["d"].append(loss_disc_all.item())
        record["state"] = snapshot(model)
        record["discriminator_grads"] = gradients(model.mpd)  # accumulated by the generator's step's backward
        return record

    return train


def test_hifigan_trains_as_torch(float64_default):
    ours, theirs = run_in_lockstep(hifigan, train_hifigan())
    assert_same_records(ours, theirs)
    assert any(name.endswith("weight_u") for name in theirs["state"])  # the spectral norm's power iteration
    assert not any(name.endswith("weight_g") for name in theirs["after_removal"])


def test_hifigan_float32_as_torch():
    """How HiFi-GAN trains: float32, at float32's level (one iteration: the float64 run covers the rest)."""
    ours, theirs = run_in_lockstep(hifigan, train_hifigan(steps=1))
    assert ours["y_g_hat"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5)


def test_hifigan_compiled_generator_step_as_torch(float64_default):
    ours, theirs = run_in_lockstep(hifigan, compiled_hifigan())
    assert_same_records(ours, theirs)


def test_hifigan_generator_exports_to_onnx_as_torch():
    """The vocoder as deployed: ``remove_weight_norm`` then ``kiln.onnx.export``, run by onnxruntime (float32: its CPU
    Conv has no float64 kernel), and ``kiln.compile``d, against torch's generator."""
    onnxruntime = require("onnxruntime")
    mel = hifigan_batch(dtype=np.float32)[0]
    kiln.manual_seed(0)
    generator = hifigan(*libraries("kiln")).generator
    torch, nn, F = libraries("torch")
    twin = hifigan(torch, nn, F).generator
    twin.load_state_dict({key: torch.tensor(value) for key, value in snapshot(generator).items()})
    for module in (generator, twin):
        module.eval()
        module.remove_weight_norm()
    buffer = io.BytesIO()
    kiln.onnx.export(generator, (kiln.tensor(mel),), buffer, input_names=["mel"], output_names=["audio"])
    ours = onnxruntime.InferenceSession(buffer.getvalue()).run(None, {"mel": mel})[0]
    compiled = array(kiln.compile(generator, fullgraph=True)(kiln.tensor(mel)))
    with torch.no_grad():
        theirs = array(twin(torch.tensor(mel)))
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(compiled, theirs, rtol=1e-5, atol=1e-6)
