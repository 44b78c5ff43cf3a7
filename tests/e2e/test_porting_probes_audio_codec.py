"""Porting probe: a neural audio codec (``e2e/audio_codec_program.py``, written once, ``torch`` being torch or kiln) as
facebookresearch/encodec, descript-audio-codec (DAC) and lucidrains' vector-quantize-pytorch write it, trained a few
alternating generator/discriminator iterations in both libraries from kiln's initial weights on two 256-sample clips
and compared in float64 to 1e-10: every loss, the codes, the gradient norms, the first gradients, the parameters, the
EMA codebook buffers and both AdamW states after the steps, the learning rates, and an eval-mode encode/decode with
fewer quantizers; float32 at float32's level.

- encodec ``modules/conv.py``: ``SConv1d`` (causal ``pad1d(x, (padding_total, extra_padding), mode='reflect')`` with
  ``get_extra_padding_for_conv1d``'s ``math.ceil`` of the frame count, and ``mode='constant'``) and
  ``SConvTranspose1d`` (``unpad1d`` of ``math.ceil(padding_total * trim_right_ratio)``), each
  ``torch.nn.utils.parametrizations.weight_norm`` of ``nn.Conv1d``/``nn.ConvTranspose1d``; ``nn.ELU``, ``nn.Tanh``.
- dac ``nn/layers.py``: ``snake`` (``x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)`` between reshapes)
  in ``Snake1d`` with an ``nn.Parameter(torch.ones(1, channels, 1))``; ``WNConv1d`` through the legacy
  ``nn.utils.weight_norm`` (``weight_g``/``weight_v``, its FutureWarning); ``model/dac.py``'s ``init_weights``
  (``nn.init.trunc_normal_(m.weight, std=0.02)`` on a weight-normed conv's computed weight, ``nn.init.constant_(m.bias,
  0)``) through ``self.apply``.
- encodec ``quantization/core_vq.py``: ``ema_inplace`` (``moving_avg.data.mul_(decay).add_(new, alpha=(1 - decay))``),
  ``laplace_smoothing``, ``uniform_init`` (``kaiming_uniform_`` of ``torch.empty``), ``sample_vectors``
  (``torch.randperm(n)[:num]``, fed), ``kmeans`` (``torch.bincount(buckets, minlength=...)``, ``masked_fill``,
  ``buckets.new_zeros(..., dtype=dtype).scatter_add_(0, ...)``, ``torch.where``), ``EuclideanCodebook`` (``inited``,
  ``cluster_size``, ``embed``, ``embed_avg`` buffers; ``if self.inited: return``; ``init_embed_``'s ``.data.copy_`` of an
  int64 ``bincount`` into a float buffer and of ``torch.Tensor([True])``; ``dist = -(x.pow(2).sum(1, keepdim=True) -
  2 * x @ embed + embed.pow(2).sum(0, keepdim=True))``, ``dist.max(dim=-1).indices``, ``F.one_hot(...).type(dtype)``,
  ``F.embedding`` of the buffer, dead-code expiry ``cluster_size < threshold``, ``if not torch.any(expired_codes)``,
  ``torch.where(mask[..., None], sample_vectors(...), self.embed)``, ``self.embed.data.copy_``),
  ``VectorQuantization`` (straight-through ``x + (quantize - x).detach()``, ``torch.tensor([0.0],
  requires_grad=self.training)`` plus the commitment ``F.mse_loss``), ``ResidualVectorQuantization`` (``n_q = n_q or
  len(self.layers)`` fed per step as the bandwidth choice, ``self.layers[:n_q]``, ``residual = residual -
  quantized.detach()`` as vector-quantize-pytorch, ``map(torch.stack, (all_losses, all_indices))``).
- dac ``nn/quantize.py``: ``VectorQuantize`` (factorized ``in_proj``/``out_proj`` ``WNConv1d``, ``F.normalize`` of the
  encodings and of ``nn.Embedding``'s weight, ``(-dist).max(1)[1]``, ``commitment_loss = F.mse_loss(z_e, z_q.detach(),
  reduction="none").mean([1, 2])``, ``codebook_loss``, ``F.embedding(...).transpose(1, 2)``),
  ``ResidualVectorQuantize`` (quantizer dropout: ``torch.ones((B,)) * n + 1``, ``torch.randint(1, n + 1, (B,))`` fed,
  ``n_quantizers[:n_dropout] = dropout[:n_dropout]``, ``torch.full((B,), fill_value=i) < n_quantizers`` masks,
  ``commitment_loss += (commitment_loss_i * mask).mean()`` from ``0``, the eval ``i >= n_quantizers`` break).
- dac ``nn/loss.py``: ``MultiScaleSTFTLoss`` (``torch.stft(x, n_fft, hop, win, window=torch.hann_window(win),
  center=True, pad_mode="reflect", return_complex=True).abs()``, ``.clamp(eps).pow(2.0).log10()``, ``nn.L1Loss`` as a
  default argument), ``MelSpectrogramLoss`` (a librosa Slaney filterbank built in NumPy, ``torch.from_numpy`` as a
  buffer), ``GANLoss`` (LSGAN ``torch.mean((1 - x_real[-1]) ** 2)``; encodec's hinge ``clamp(1 + x, min=0)`` and
  ``-x.mean()``; ``fake.clone().detach()``; feature matching ``F.l1_loss(d_fake[i][j], d_real[i][j].detach())``).
- encodec ``msstftd.py``: ``DiscriminatorSTFT`` on ``torch.view_as_real(torch.stft(..., normalized=True,
  center=False, return_complex=True))`` permuted to ``b c t f``, weight-normed ``nn.Conv2d`` with dilations and
  ``get_2d_padding``, ``nn.LeakyReLU(0.2)``, the multi-scale list.
- dac ``train.py``: ``train_loop`` (one generator forward; the discriminator's step with ``clip_grad_norm_(...,
  10.0)``; the losses summed with ``sum([v * output[k] for k, v in lambdas.items() if k in output])``; the
  generator's step with ``clip_grad_norm_(..., 1e3)``), ``AdamW(betas=(0.8, 0.99))`` for each network, each with an
  ``ExponentialLR``.

Adaptations: tiny sizes (widths 4 and 8, a stride-4 encoder: 64 frames of dimension 8; 3 quantizers of 16 codes;
STFT windows 64 and 16, mel windows 32 and 64 with 5 and 10 mels; two STFT discriminators of 4 filters); the clips are
three sinusoids under a linear envelope plus noise; ``einops.rearrange`` is written as the reshape/transpose it is.
EnCodec's codebooks use its k-means init (3 iterations): with ``kmeans_init=False`` the first EMA update leaves the
unused codes at ``embed_avg / eps``, every frame then takes one code, the reconstruction is periodic in the encoder's
stride, and whole STFT bins are zero up to rounding, where the magnitude L1's gradient (``z / |z|``) is a direction
made of rounding noise in both libraries (measured: the generator's gradient norms 5e-5 apart at the second step).
DAC's codes are kept diverse the same way by its ``init_weights`` (zero conv biases). ``torch.randperm`` and ``torch.randint`` are fed the
same NumPy draws in both libraries; the EnCodec model trains with 3, 2 then 1 quantizers, DAC's with quantizer dropout
on half the batch.

Compiled: the generator's step (forward, losses through the discriminator, backward, clip, AdamW) and the
discriminator's (its loss on the detached reconstruction, backward, clip, AdamW) are each one
``kiln.compile(fullgraph=True)`` graph, the EMA buffer writes and the dead-code replacement included, the
ExponentialLR steps between calls, against torch's eager functions. They use the two edits a
``torch.compile`` user makes to core_vq (``compile_friendly``): no data-dependent ``if not
torch.any(expired_codes)``, and the k-means init skipped while ``torch.compiler.is_compiling()`` (an eager eval-mode
forward initializes the codebooks first). torch.compile(fullgraph=True) refuses both steps all the same (measured,
backend "eager"): at ``Optimizer.zero_grad`` (skipped by Dynamo), and EnCodec's generator step first at
``VectorQuantization``'s ``torch.tensor([0.0], requires_grad=self.training)`` ("tensor creation function with
requires_grad=True"). A draw traced once is a constant, so the compiled runs feed ``randperm``/``randint`` one fixed
draw (a fixed random permutation: with ``arange`` reversed, k-means starts from 16 consecutive frames and the third
step's encoder gradients came out 1e-7 apart in eager kiln as well, so not from the compile; not traced further). As in EnCodec, the codes ``replace_``
writes are overwritten by the EMA renormalization later in the same forward (``embed_avg`` keeps the old code), so the
expiry is computed in both libraries and changes nothing.

What broke:
- ``if self.inited:`` on a module buffer raised "a traced Tensor has no concrete truth value" in eager code (``bool``
  read only a plain eager tensor's array; ``item()`` already read a buffer's or parameter's own): it now reads them
  as ``item()`` does (``frontend/tensor.py``, ``frontend/tensor_eager.py``);
  ``tests/frontend/test_bool_of_buffer_vs_torch.py``.
- ``torch.compiler.is_compiling()`` was missing (``kiln.compiler`` is the IR compiler's package): it is
  ``frontend/trace.py``'s ``is_compiling``, exported there by the facade (``kiln/__init__.py``), True while
  ``kiln.compile`` traces; same test file.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from e2e.audio_codec_program import audio_codec, discriminator_step, generator_step, losses_and_optimizers, train_loop
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries

BATCH, LENGTH = 2, 256
N_Q = {"encodec": [3, 2, 1], "dac": [None, None, None]}
GAN = {"encodec": "hinge", "dac": "lsgan"}


def clips(seed: int = 0) -> np.ndarray:
    """Two clips: three sinusoids (200 Hz to 6 kHz at 16 kHz) under a linear envelope, plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(LENGTH) / 16000
    frequency = rng.uniform(200, 6000, (BATCH, 1, 3, 1))
    phase = rng.uniform(0, 2 * np.pi, (BATCH, 1, 3, 1))
    start, end = rng.uniform(0.2, 1, (2, BATCH, 1, 1))
    envelope = start + (end - start) * np.linspace(0, 1, LENGTH)
    return 0.3 * envelope * np.sin(2 * np.pi * frequency * t + phase).sum(2) + 0.05 * rng.standard_normal((BATCH, 1, LENGTH))


SIGNAL = clips()


def codec_builder(kind: str, compile_friendly: bool = False):
    """``build`` for ``run_in_lockstep``: the generator and the discriminator in a ModuleDict, the program kept on it."""

    def build(torch, nn, F):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # nn.utils.weight_norm's deprecation, in both
            C = audio_codec(torch, nn, F, compile_friendly=compile_friendly)
            model = nn.ModuleDict(dict(generator=C.Codec(kind), discriminator=C.MultiScaleSTFTDiscriminator()))
        model.program = C
        return model

    return build


def feed_draws(monkeypatch, fixed: bool = False):
    """``randperm`` and ``randint`` of both libraries from the same NumPy draws (one generator a library from one
    seed); ``fixed``: the same draw at every call (what a compiled step, traced once, keeps)."""
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        permutation, integers = (fixed_draws if fixed else fed_draws)(lib, np.random.default_rng(3))
        monkeypatch.setattr(lib, "randperm", permutation)
        monkeypatch.setattr(lib, "randint", integers)


def fed_draws(lib, rng):
    return (lambda n, device=None: lib.tensor(rng.permutation(n)),
            lambda low, high, size, device=None: lib.tensor(rng.integers(low, high, size)))


def fixed_draws(lib, rng):
    return (lambda n, device=None: lib.tensor(np.random.default_rng(5).permutation(n)),
            lambda low, high, size, device=None: lib.full(size, low, dtype=lib.int64))


def optimizer_states(state) -> dict:
    """Both AdamW's ``state_dict()["state"]`` entries as arrays (kiln keeps them as arrays, torch as tensors)."""
    return {name: {f"{index}/{key}": np.array(array(value) if hasattr(value, "detach") else value)
                   for index, entry in optimizer.state_dict()["state"].items()
                   for key, value in entry.items()}
            for name, optimizer in (("g", state.optimizer_g), ("d", state.optimizer_d))}


def evaluation(torch, generator, n_q) -> dict:
    """The codec in eval mode under ``no_grad``: encode, quantize with ``n_q`` quantizers, decode."""
    generator.eval()
    with torch.no_grad():
        recons, codes, _ = generator(torch.tensor(SIGNAL, dtype=torch.get_default_dtype()), n_q)
    return {"recons": array(recons), "codes": array(codes)}


def eager_training(kind: str):
    """dac/train.py's loop for ``len(N_Q[kind])`` iterations, then an eval-mode encode/decode with 2 quantizers."""

    def train(torch, nn, F, model):
        state = losses_and_optimizers(torch, nn, F, model.program, model.generator, model.discriminator, GAN[kind])
        signal = torch.tensor(SIGNAL, dtype=torch.get_default_dtype())
        record = {"steps": {}, "lrs": []}
        for step, n_q in enumerate(N_Q[kind]):
            output = train_loop(torch, model.generator, model.discriminator, state, signal, n_q)
            record["steps"][str(step)] = {key: array(value) for key, value in output.items()}
            record["lrs"].append([state.optimizer_g.param_groups[0]["lr"], state.optimizer_d.param_groups[0]["lr"]])
            if step == 0:
                record["grads"] = gradients(model)
        record.update(state=snapshot(model), optimizers=optimizer_states(state), dtype=str(signal.dtype).split(".")[-1])
        record["eval"] = evaluation(torch, model.generator, 2)
        return record

    return train


def compiled_training(kind: str, steps: int = 3):
    """The generator's and the discriminator's steps, each one ``kiln.compile(fullgraph=True)`` graph in kiln and the
    same functions eagerly in torch; the codebooks initialized by an eager eval-mode forward first."""

    def train(torch, nn, F, model):
        generator, discriminator = model.generator, model.discriminator
        state = losses_and_optimizers(torch, nn, F, model.program, generator, discriminator, GAN[kind])
        signal = torch.tensor(SIGNAL, dtype=torch.get_default_dtype())
        evaluation(torch, generator, None)  # the k-means init (EnCodec), outside the compiled steps
        generator.train()
        discriminator.train()
        g_step = lambda signal, n_q: generator_step(torch, generator, state, signal, n_q)
        d_step = lambda recons, signal: discriminator_step(torch, discriminator, state, recons, signal)
        if torch is kiln:
            g_step, d_step = kiln.compile(g_step, fullgraph=True), kiln.compile(d_step, fullgraph=True)
        record = {"steps": {}}
        for step, n_q in enumerate(N_Q[kind][:steps]):
            loss, grad_norm, codes, recons = g_step(signal, n_q)
            d_loss, d_grad_norm = d_step(recons, signal)
            state.scheduler_g.step()
            state.scheduler_d.step()
            record["steps"][str(step)] = dict(loss=loss.item(), grad_norm=grad_norm.item(), codes=array(codes),
                                              d_loss=d_loss.item(), d_grad_norm=d_grad_norm.item())
        record.update(state=snapshot(model), optimizers=optimizer_states(state))
        return record

    return train


@pytest.mark.parametrize("kind", ["encodec", "dac"])
def test_audio_codec_trains_as_torch(float64_default, monkeypatch, kind):
    feed_draws(monkeypatch)
    ours, theirs = run_in_lockstep(codec_builder(kind), eager_training(kind))
    assert ours.pop("dtype") == theirs.pop("dtype") == "float64"
    assert_same_records(ours, theirs)
    codes = theirs["steps"]["0"]["codes"]
    assert all(len(np.unique(codes[:, q])) > 3 for q in range(codes.shape[1]))  # no collapsed codebook
    if kind == "encodec":
        assert [theirs["steps"][str(step)]["codes"].shape[0] for step in range(3)] == [3, 2, 1]
        assert (theirs["state"]["generator.quantizer.layers.0._codebook.inited"] == 1).all()
    else:
        assert theirs["eval"]["codes"].shape[1] == 2  # the eval break after n_quantizers


@pytest.mark.parametrize("kind", ["encodec", "dac"])
def test_audio_codec_compiled_steps_as_torch(float64_default, monkeypatch, kind):
    feed_draws(monkeypatch, fixed=True)
    ours, theirs = run_in_lockstep(codec_builder(kind, compile_friendly=True), compiled_training(kind))
    assert_same_records(ours, theirs)


def scaled(ours: dict, theirs: dict, section: str) -> None:
    """Each entry of ``section`` in both records divided by the largest magnitude of torch's entry."""
    for key, value in theirs[section].items():
        scale = max(np.abs(value).max(), 1e-30)
        ours[section][key], theirs[section][key] = ours[section][key] / scale, value / scale


@pytest.mark.parametrize("kind", ["encodec", "dac"])
def test_audio_codec_float32_trains_as_torch(monkeypatch, kind):
    """Float32 at its level; the gradients (and so AdamW's moments and the tiny conv biases) to 2e-3 of each entry's
    scale: the log-magnitude losses' ``log10(clamp(|stft|, 1e-5) ** 2)`` differentiates to ``2 / (|z| ln 10)`` per bin,
    and a quiet bin's float32 magnitude carries the rounding of its frame's loud bins, so float32 gradients are ~3e-4
    of their scale from the float64 ones in both libraries (measured on the EnCodec model's encoder and decoder
    biases: torch 3.0e-4 and 3.9e-4, kiln 2.6e-4 and 3.4e-4) and up to 7e-4 apart; the losses, codes and EMA
    buffers stay at 2e-4."""
    feed_draws(monkeypatch)
    ours, theirs = run_in_lockstep(codec_builder(kind), eager_training(kind))
    assert ours.pop("dtype") == theirs.pop("dtype") == "float32"
    scaled(ours, theirs, "grads")
    for name in ("g", "d"):
        scaled(ours["optimizers"], theirs["optimizers"], name)
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5, looser={  # the last key a path contains decides
        "bias": dict(rtol=2e-3, atol=2e-6), "grads": dict(rtol=0, atol=2e-3), "optimizers": dict(rtol=0, atol=2e-3),
        "grad_norm": dict(rtol=2e-3)})
