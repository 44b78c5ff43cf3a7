"""Porting probe: EDM (Karras et al. 2022, NVlabs/edm) training and sampling, with crowsonkb/k-diffusion's samplers
(``edm_karras_program.py``, written once; ``torch`` is torch or kiln), in lockstep with torch 2.13 from kiln's initial
weights with the same fed draws: float64 to 1e-10 eagerly and with the training step through ``kiln.compile``, and the
code as written (float32) at float32's level.

- ``training/networks.py``: ``weight_init`` (``np.sqrt(3 / fan_in) * (torch.rand(*shape) * 2 - 1)``), ``Linear``
  (``x @ self.weight.to(x.dtype).t()``, ``x.add_(bias)`` on a non-leaf), ``Conv2d`` with ``up``/``down`` resampling
  (``torch.as_tensor(resample_filter)``, ``f.ger(f).unsqueeze(0).unsqueeze(1) / f.sum().square()``, a ``None``
  buffer registered, ``F.conv_transpose2d``/``F.conv2d`` with ``f.mul(4).tile([C, 1, 1, 1])`` and ``groups=C,
  stride=2``), ``GroupNorm`` (``F.group_norm`` with ``min(num_groups, num_channels // 4)`` groups), ``AttentionOp`` (a
  ``torch.autograd.Function`` whose backward calls ``torch._softmax_backward_data`` and two ``einsum``s), ``UNetBlock``
  (adaptive scale ``params.chunk(chunks=2, dim=1)``, ``torch.addcmul(shift, self.norm1(x), scale + 1)``, ``F.dropout``,
  the skip ``Conv2d``, ``qkv(...).reshape(...).unbind(2)``, ``proj(a.reshape(*x.shape)).add_(x)``),
  ``PositionalEmbedding`` (``torch.arange(..., dtype=torch.float32)``, ``(1 / max_positions) ** freqs``,
  ``x.ger(freqs.to(x.dtype))``), ``FourierEmbedding`` (a ``torch.randn`` buffer, in ``test_edm_pieces_as_torch``),
  ``DhariwalUNet`` (``nn.ModuleDict`` of f-string names, the skip list, ``isinstance(block, UNetBlock)``), ``EDMPrecond``
  (``sigma.to(...).reshape(-1, 1, 1, 1)``, c_skip/c_out/c_in/c_noise, ``c_noise.flatten()``, ``assert F_x.dtype ==
  dtype``, ``round_sigma`` as ``torch.as_tensor``).
- ``training/loss.py``'s ``EDMLoss`` (``torch.randn([N, 1, 1, 1], device=images.device)``, ``(rnd_normal * P_std +
  P_mean).exp()``, the weight, ``torch.randn_like(y) * sigma``, ``net(y + n, sigma, labels, augment_labels=None)``).
- ``training/training_loop.py``'s iteration: ``optimizer.zero_grad(set_to_none=True)``, ``loss.sum().mul(loss_scaling
  / batch_gpu_total).backward()``, ``g['lr'] = optimizer_kwargs['lr'] * min(cur_nimg / max(lr_rampup_kimg * 1000,
  1e-8), 1)`` (lr 0 at the first step), ``torch.nan_to_num(param.grad, nan=0, posinf=1e5, neginf=-1e5,
  out=param.grad)``, ``torch.optim.Adam`` (betas (0.9, 0.999), eps 1e-8), the EMA (``ema = copy.deepcopy(net).eval()
  .requires_grad_(False)``, ``ema_beta = 0.5 ** (batch_size / max(ema_halflife_nimg, 1e-8))`` with and without
  ``ema_rampup_ratio``, ``p_ema.copy_(p_net.detach().lerp(p_ema, ema_beta))``; the repository does it outside
  ``no_grad``, as here). Eagerly, and as one ``kiln.compile(fullgraph=True)`` step with the ramp-up between the calls
  and with it inside the step as written (``cur_nimg`` a Python int argument); the EMA ramp (``ema_rampup_ratio``)
  eagerly.
- ``generate.py``'s ``edm_sampler`` with the EMA net: ``torch.arange(num_steps, dtype=torch.float64)``, the rho
  schedule, ``torch.cat([net.round_sigma(t_steps), torch.zeros_like(t_steps[:1])])``, ``zip`` over 0-d tensors,
  ``gamma = min(S_churn / num_steps, np.sqrt(2) - 1) if S_min <= t_cur <= S_max else 0`` (S_churn > 0 with S_min/S_max
  leaving some steps out), the fed ``randn_like``, the Euler step and the Heun correction ``if i < num_steps - 1``;
  under ``torch.no_grad()``; in the compiled runs the EMA net is ``kiln.compile(ema, fullgraph=True)`` (the sampler
  reads ``net.sigma_min`` and ``net.round_sigma`` through it) and the ``Denoiser``'s UNet ``kiln.compile(ema.model,
  fullgraph=True)``.
- k-diffusion: ``append_zero`` (``x.new_zeros([1])``), ``get_sigmas_karras`` (``torch.linspace``), ``to_d`` with
  ``utils.append_dims`` (``x[(...,) + (None,) * n]``), ``sample_heun`` (``@torch.no_grad()``, ``x.new_ones``, the
  churn, ``if sigmas[i + 1] == 0``), ``sample_dpmpp_2m`` (``sigma_fn``/``t_fn`` lambdas, ``t_fn(0)`` is ``inf`` at the
  last step, ``(-h).expm1()``, ``old_denoised``, ``h_last``), ``layers.Denoiser`` (``get_scalings``, ``loss`` with
  ``torch.ones_like`` weighting and ``.flatten(1).mean(1)``, ``forward``).

Adaptations: tiny sizes (2x8x8 images, batch 4, ``model_channels=8``, ``channel_mult=[1, 2]``, one block a level,
attention at 4x4 with ``channels_per_head=8``, 4 sampling steps); ``dropout=0``; the zero-initialised layers
(``init_zero``) get ``init_weight=0.1`` so that every weight has a gradient at the first step. ``torch.randn`` and
``torch.randn_like`` are fed the same NumPy draws in both libraries (in the compiled step they are the step's inputs).
k-diffusion's ``trange`` is ``range``; its image models embed ``c_noise = sigma.log() / 4`` themselves, so the
``Denoiser``'s inner model wraps EDM's UNet that way (``KarrasInner``). For the float64 comparison,
``EDMPrecond.forward`` and ``AttentionOp`` keep the input's dtype where the repository writes ``torch.float32``
(``keep_dtype=True``); the float32 run is the code as written (the samplers' float64 ``x`` cast to float32 at the net),
compared to 1e-4 relative, the attention's key biases (whose gradients are rounding noise) to the steps' lr.

What broke (each fixed, with a regression test against torch):

- ``torch._softmax_backward_data`` (ATen's softmax backward, called by ``AttentionOp.backward``) did not exist in
  kiln: added, with ``_log_softmax_backward_data``, in ``frontend/torch_nn_forms.py``
  (``tests/frontend/test_softmax_backward_data_vs_torch.py``).
- ``torch.nan_to_num(param.grad, ..., out=param.grad)``: the ``torch.*`` functions that forward to a tensor method
  passed ``out=`` on to it (a TypeError); ``out=`` is now written and returned for all of them
  (``frontend/torch_functions.py``, ``tests/frontend/test_torch_functions_out_vs_torch.py``).
- The ramp-up ``g['lr'] = ...`` of the step's ``cur_nimg`` argument inside the ``kiln.compile``'d step: the traced
  number made the group hold the trace's tensor, which the compiled update read as its fed lr input (a
  TracedArrayError). The update now uses the computed value and writes the float back into the group after each call
  (``runtime/step_graph.py`` ``computed_hyper``, ``runtime/step_capture.py``;
  ``tests/runtime/test_compiled_step_lr_written_in_step_vs_torch.py``).

Left: the Karras schedule's float32 ``** rho`` is NumPy's float32 ``power`` in kiln, an ulp off torch's correctly
rounded one on some sigmas (``test_edm_pieces_as_torch`` compares it to 2 ulps).
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.edm_karras_program import edm, make_ema, ramp_up, training_loop_step
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries

BATCH, CHANNELS, RES, STEPS, SAMPLING_STEPS = 4, 2, 8, 3, 4
RNG = np.random.default_rng(11)
IMAGES = RNG.uniform(-1, 1, (BATCH, CHANNELS, RES, RES))
TRAIN_DRAWS = [(RNG.standard_normal((BATCH, 1, 1, 1)), RNG.standard_normal((BATCH, CHANNELS, RES, RES)))
               for _ in range(STEPS)]
LATENTS = RNG.standard_normal((BATCH, CHANNELS, RES, RES))
SAMPLER_DRAWS = [RNG.standard_normal((BATCH, CHANNELS, RES, RES)) for _ in range(2 * SAMPLING_STEPS)]
NET_KWARGS = dict(model_channels=8, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[4], dropout=0,
                  channels_per_head=8, init_zero_weight=0.1)


class Fed:
    """``torch.randn`` and ``torch.randn_like`` of both libraries giving back ``queue``'s tensors in order (the
    training draws, the samplers' noise)."""

    def __init__(self):
        self.queue = []

    def next(self, *args, **kwargs):
        return self.queue.pop(0)


@pytest.fixture
def fed(monkeypatch):
    draws = Fed()
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        monkeypatch.setattr(lib, "randn", draws.next)
        monkeypatch.setattr(lib, "randn_like", draws.next)
    return draws


def build(keep_dtype):
    return lambda torch, nn, F: edm(torch, keep_dtype).EDMPrecond(RES, CHANNELS, **NET_KWARGS)


def optimizer_state(optimizer):
    return {str(index): {key: array(value) if hasattr(value, "numpy") else np.asarray(value)
                         for key, value in state.items()} for index, state in optimizer.state_dict()["state"].items()}


def sample(torch, E, ema, fed, compiled):
    """The three samplers with the EMA net; in the compiled run its calls go through ``kiln.compile(ema,
    fullgraph=True)`` (``edm_sampler`` also reads ``net.sigma_min`` and ``net.round_sigma`` through it) and
    ``kiln.compile(ema.model, fullgraph=True)`` (the ``Denoiser``'s UNet)."""
    use_compiled = compiled and torch is kiln
    net = kiln.compile(ema, fullgraph=True) if use_compiled else ema
    unet = kiln.compile(ema.model, fullgraph=True) if use_compiled else ema.model
    record = {}
    with torch.no_grad():
        fed.queue = [torch.tensor(draw) for draw in SAMPLER_DRAWS]
        record["edm_sampler"] = array(E.edm_sampler(net, torch.tensor(LATENTS), randn_like=fed.next, num_steps=SAMPLING_STEPS,
                                                    sigma_min=0.02, sigma_max=20, S_churn=2, S_min=0.05, S_max=5))
        denoiser = E.Denoiser(E.KarrasInner(unet), sigma_data=0.5)
        sigmas = E.get_sigmas_karras(SAMPLING_STEPS, 0.02, 20)
        x = torch.tensor(LATENTS) * sigmas[0]
        fed.queue = [torch.tensor(draw) for draw in SAMPLER_DRAWS]
        record["sample_heun"] = array(E.sample_heun(denoiser, x, sigmas, s_churn=2, s_tmin=0.05, s_tmax=5))
        record["sample_dpmpp_2m"] = array(E.sample_dpmpp_2m(denoiser, x, sigmas))
        record["sigmas"] = array(sigmas)
    return record


def train_edm(fed, keep_dtype=True, compiled=False, ema_rampup_ratio=None, ramp_in_step=None):
    def train(torch, nn, F, net):
        E = edm(torch, keep_dtype)
        ema = make_ema(net)
        loss_fn = E.EDMLoss()
        optimizer_kwargs = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
        optimizer = torch.optim.Adam(params=net.parameters(), **optimizer_kwargs)
        loop = dict(batch_size=BATCH, batch_gpu_total=BATCH, loss_scaling=1, lr_rampup_kimg=0.008,
                    ema_halflife_kimg=0.01, ema_rampup_ratio=ema_rampup_ratio)

        def step(images, rnd_normal, noise, cur_nimg):
            fed.queue = [rnd_normal, noise]
            return training_loop_step(torch, net, ema, loss_fn, optimizer, optimizer_kwargs, images, cur_nimg, **loop,
                                      ramp_up_lr=not compiled if ramp_in_step is None else ramp_in_step)

        run = kiln.compile(step, fullgraph=True) if compiled and torch is kiln else step
        record, cur_nimg = {"losses": []}, 0
        for index, (rnd_normal, noise) in enumerate(TRAIN_DRAWS):
            if compiled and not ramp_in_step:  # the ramp-up between the calls, as the template probes do
                ramp_up(optimizer, optimizer_kwargs, cur_nimg, loop["lr_rampup_kimg"])
            loss = run(torch.tensor(IMAGES), torch.tensor(rnd_normal), torch.tensor(noise), cur_nimg)
            record["losses"].append(array(loss))
            if index == 0 and not compiled:
                record["first_gradients"] = gradients(net)
            cur_nimg += BATCH
        record |= {"state": snapshot(net), "ema": snapshot(ema), "adam": optimizer_state(optimizer),
                   "lr": [group["lr"] for group in optimizer.param_groups]}
        assert not any(p.requires_grad for p in ema.parameters()) and not ema.training
        record["samples"] = sample(torch, E, ema, fed, compiled)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
def test_edm_trains_and_samples_as_torch(float64_default, fed, compiled):
    ours, theirs = run_in_lockstep(build(True), train_edm(fed, compiled=compiled))
    assert_same_records(ours, theirs)
    assert np.abs(theirs["ema"]["model.out_conv.weight"] - theirs["state"]["model.out_conv.weight"]).max() > 1e-4


def test_edm_ema_rampup_as_torch(float64_default, fed):
    ours, theirs = run_in_lockstep(build(True), train_edm(fed, ema_rampup_ratio=0.05))
    assert_same_records(ours, theirs)


def test_edm_lr_ramp_up_inside_the_compiled_step_as_torch(float64_default, fed):
    """The iteration exactly as written in one ``kiln.compile(fullgraph=True)`` step, the ramp-up's ``g['lr'] = ...``
    of the step's ``cur_nimg`` argument included; the group holds the Python float after each call, as torch's."""
    ours, theirs = run_in_lockstep(build(True), train_edm(fed, compiled=True, ramp_in_step=True))
    assert all(isinstance(lr, float) for lr in ours["lr"]) and ours["lr"] == theirs["lr"] == [0.01]
    assert_same_records(ours, theirs)


def test_edm_float32_as_written_as_torch(fed):
    """The key third of each attention ``qkv.bias`` (channels ``3c + 1`` after ``reshape(N * heads, C // heads, 3,
    -1)``) adds the same ``q . b_k`` to every score of a query, which the softmax cancels: its gradient is rounding
    noise (1e-18 in float64), which Adam turns into steps of up to lr in float32, differently in each library (as
    ``probe_lockstep.split_key_bias`` says); those entries of the state and the EMA are compared at the scale of the
    steps' summed lrs (0 + 0.005 + 0.01; measured 1.1e-3 apart)."""
    ours, theirs = run_in_lockstep(build(False), train_edm(fed, keep_dtype=False))
    assert ours["state"]["model.out_conv.weight"].dtype == np.float32
    assert_same_records(key_bias_apart(ours), key_bias_apart(theirs), rtol=1e-4, atol=1e-5,
                        looser={"key bias": dict(rtol=0, atol=1.5e-2)})


def key_bias_apart(record):
    """``record`` with each ``qkv.bias`` of the state and the EMA split into its key entries and the rest."""
    split = dict(record)
    for part in ("state", "ema"):
        entries = dict(record[part])
        for name in [name for name in entries if name.endswith("qkv.bias")]:
            bias = entries.pop(name)
            key = np.arange(len(bias)) % 3 == 1
            entries[name + " (query, value)"], entries[name + " key bias"] = bias[~key], bias[key]
        split[part] = entries
    return split


def test_edm_pieces_as_torch(float64_default, fed):
    """The parts the U-Net above leaves out: ``FourierEmbedding`` (its ``torch.randn(num_channels // 2) * scale``
    buffer fed), ``PositionalEmbedding(endpoint=True)``, ``Conv2d``'s fused up/down resampling with the [1, 3, 3, 1]
    filter and its input gradients, ``Denoiser.loss`` with ``soft-min-snr`` weighting and its gradients, and the
    Karras schedule in float32: its ``** rho`` is NumPy's float32 ``power`` in kiln, an ulp from the correctly rounded
    value on 4 of the 18 sigmas, where torch's is correctly rounded (left alone: float32 pow in float64 costs speed),
    so that entry is compared to 2 ulps."""
    rng = np.random.default_rng(4)
    c_noise, frequencies = rng.standard_normal(BATCH), rng.standard_normal(4)
    images, noise, sigma = rng.standard_normal((BATCH, CHANNELS, RES, RES)), rng.standard_normal((BATCH, CHANNELS, RES, RES)), np.exp(rng.standard_normal(BATCH))

    def pieces(torch, nn, F, net):
        E = edm(torch, keep_dtype=True)
        fed.queue = [torch.tensor(frequencies)]
        record = {"fourier": array(E.FourierEmbedding(num_channels=8)(torch.tensor(c_noise))),
                  "positional": array(E.PositionalEmbedding(num_channels=8, endpoint=True)(torch.tensor(c_noise)))}
        torch.manual_seed(0)
        for name, kwargs in {"up": dict(up=True), "down": dict(down=True)}.items():
            conv = E.Conv2d(CHANNELS, 4, kernel=3, resample_filter=[1, 3, 3, 1], fused_resample=True,
                            init_mode='xavier_uniform', init_bias=0.1, **kwargs)
            conv.load_state_dict({key: torch.tensor(np.random.default_rng(1).uniform(-0.5, 0.5, value.shape))
                                  for key, value in conv.state_dict().items() if key != "resample_filter"}, strict=False)
            x = torch.tensor(images, requires_grad=True)
            out = conv(x)
            (out * out).sum().backward()
            record[name] = {"out": array(out), "input grad": array(x.grad)}
        denoiser = E.Denoiser(E.KarrasInner(net.model), sigma_data=0.5, weighting='soft-min-snr')
        loss = denoiser.loss(torch.tensor(images), torch.tensor(noise), torch.tensor(sigma))
        loss.mean().backward()
        record |= {"denoiser loss": array(loss), "denoiser grads": gradients(net)}
        saved = torch.get_default_dtype()
        torch.set_default_dtype(torch.float32)
        try:
            record["sigmas float32"] = array(E.get_sigmas_karras(18, 0.002, 80))
        finally:
            torch.set_default_dtype(saved)
        return record

    ours, theirs = run_in_lockstep(build(True), pieces)
    assert ours["sigmas float32"].dtype == np.float32
    assert_same_records(ours, theirs, looser={"float32": dict(rtol=2.4e-7, atol=0)})
