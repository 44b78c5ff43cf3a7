"""Porting probes: Progressive GAN and BigGAN's pieces, written once as PyTorch users write them (``torch`` is torch
or kiln, ``progan_biggan_program.py``) and run in both from kiln's initial state with fed noise: in float64 the first
outputs, the first gradients, the losses and the whole state after a few updates agree to 1e-10, eagerly and with the
critic (discriminator) step and the generator step each one ``kiln.compile(fullgraph=True)`` graph against torch's
eager loop (ProGAN also in float32, and growing from 8x8 to 16x16 between compiled calls); the grown ProGAN
generator's inference in float32 eagerly, through ``kiln.compile`` and exported by ``kiln.onnx.export`` run by
onnxruntime; BigGAN's EMA generator sampled through ``kiln.compile`` and its generator in eval mode through ONNX.

- ProGAN (aladdinpersson's ``ProGAN``): equalized learning rate (``WSConv2d``: the conv's bias held apart,
  ``self.conv(x * self.scale) + self.bias.view(1, -1, 1, 1)``), ``PixelNorm``, the minibatch standard deviation
  (``torch.std(x, dim=0).mean().repeat(...)``), ``F.interpolate(scale_factor=2, mode="nearest")``, ``AvgPool2d`` and
  ``F.avg_pool2d``, the fade-in ``torch.tanh(alpha * generated + (1 - alpha) * upscaled)``, the WGAN-GP penalty
  through ``torch.autograd.grad(..., create_graph=True)`` and the drift term ``0.001 * torch.mean(critic_real ** 2)``,
  ``Adam(betas=(0.0, 0.99))``. ``alpha`` grows between updates (``alpha += cur_batch_size / (...)``, ``min(alpha,
  1)``), passed to every call as a Python float, or kept as a ``FadeIn`` module's ``self.alpha`` that
  ``update_alpha`` changes between calls (nashory's pggan): the compiled steps must follow it at every call.
- BigGAN (ajbrock's BigGAN-PyTorch): class-conditional BatchNorm (``F.batch_norm`` on ``stored_mean``/``stored_var``
  with gains ``1 + self.gain(y)``), the shared class embedding concatenated with a z chunk, ``nn.utils.spectral_norm``
  on convs, linears and the discriminator's class embedding (projection), hinge losses, ``ortho`` (``param.grad.data
  += strength * grad`` under ``torch.no_grad()``) and the EMA generator (``utils.ema``'s ``copy_`` of a blend over
  the state_dict, or ``mul_(decay).add_(p.detach(), alpha=1 - decay)``, or ``lerp_``), ``toggle_grad`` freezing the
  network not being updated (``requires_grad`` changed between the compiled steps' calls).

The generator block's convs are ``bias=False`` (BigGAN's keep theirs), as the DCGAN-style probes write the layers
before a BatchNorm: each output reaches a BatchNorm first, which subtracts the batch mean, so such a bias's gradient is
rounding noise (~1e-18, signs set by each library's sums) that Adam (eps 1e-8) turns into steps of ~lr * 1e-10; with
the biases, measured 4e-11 apart after 3 updates, and the running means that follow them 2e-11.

What broke (fixes tested vs torch in ``tests/frontend/test_tensor_data_assignment_vs_torch.py``):
- ``param.grad.data += strength * grad`` (BigGAN's ``ortho``) raised ``AttributeError: property 'data' of 'Tensor'
  object has no setter``: Python assigns the sum back to ``.data``, and neither a tensor's ``.data`` nor a parameter's
  ``.grad``/``.data`` array (``TorchArray``, what ``p.grad`` is in a compiled step) could be assigned. A tensor's
  ``x.data = y`` now takes ``y``'s values, shape and dtype, detached, and ``x.data += y`` keeps the in-place write
  (``frontend/data_assignment.py``); a ``TorchArray``'s copies ``y`` in. ``x.data = 3`` is torch's ``TypeError``.
- Nothing else: the WGAN-GP penalty through WSConv2d/PixelNorm/minibatch std, the fade-in ``alpha`` (an argument or
  a module attribute changed between compiled calls), class-conditional BatchNorm, spectral norm on embeddings and
  the three EMA updates (``copy_`` of a float blend into ``num_batches_tracked`` truncates, as torch's) all agreed.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.progan_biggan_program import (IMG_CHANNELS, N_CLASSES, Z_DIM, biggan, biggan_steps, ema, progan,
                                       progan_steps, toggle_grad)
from oracles import require

BATCH, DATASET_SIZE, EPOCHS = 4, 16, 2


def progan_draws(schedule, dtype=np.float64):
    rng = np.random.default_rng(0)
    return [{key: value.astype(dtype) for key, value in dict(
        real=np.tanh(rng.standard_normal((BATCH, IMG_CHANNELS, 4 * 2 ** step, 4 * 2 ** step))),
        noise=rng.standard_normal((BATCH, Z_DIM, 1, 1)), beta=rng.random((BATCH, 1, 1, 1))).items()}
            for step in schedule]


def train_progan(fade="argument", compiled=False, schedule=(1, 1, 1, 1), dtype=np.float64):
    """train.py's loop over ``schedule`` (the resolution step of each update): ``alpha`` grows by each batch and
    starts again at a new resolution (``alpha = 1e-5``; nashory's fade-in layers at 0)."""
    data = progan_draws(schedule, dtype)

    def train(torch, nn, F, both):
        gen, critic = both["gen"], both["critic"]
        critic_step, generator_step = progan_steps(torch, gen, critic)
        if compiled and torch is kiln:
            critic_step, generator_step = (kiln.compile(f, fullgraph=True) for f in (critic_step, generator_step))
        record = {"loss_critic": [], "gp": [], "loss_gen": [], "alpha": []}
        with torch.no_grad():
            noise = torch.tensor(data[0]["noise"])
            record["first_output"] = {f"steps={s}": array(critic(gen(noise, 0.5, s), 0.5, s)) for s in range(3)}
        alpha, previous = 1e-5, schedule[0]
        for step, draw in zip(schedule, data):
            if step != previous:  # a new resolution fades in from the start
                alpha, gen.fade.alpha, critic.fade.alpha = 1e-5, 0.0, 0.0
            previous = step
            real, noise, beta = (torch.tensor(draw[key]) for key in ("real", "noise", "beta"))
            loss_critic, gp = critic_step(real, noise, beta, alpha, step)
            record.setdefault("critic_grads", gradients(critic))
            loss_gen = generator_step(noise, alpha, step)
            record.setdefault("generator_grads", gradients(gen))
            record["loss_critic"].append(loss_critic.item())
            record["gp"].append(gp.item())
            record["loss_gen"].append(loss_gen.item())
            record["alpha"].append(gen.fade.alpha if fade == "attribute" else alpha)
            delta = BATCH / (EPOCHS * 0.5 * DATASET_SIZE)
            alpha += delta
            alpha = min(alpha, 1)
            gen.fade.update_alpha(delta)
            critic.fade.update_alpha(delta)
        record["state"] = snapshot(both)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-steps"])
@pytest.mark.parametrize("fade", ["argument", "attribute"])
def test_progan_trains_as_torch(fade, compiled, float64_default):
    build = lambda torch, nn, F: progan(torch, nn, F, fade)
    ours, theirs = run_in_lockstep(build, train_progan(fade, compiled))
    assert_same_records(ours, theirs)
    assert len(set(theirs["alpha"])) == 4 and min(theirs["gp"]) > 0


@pytest.mark.parametrize("fade", ["argument", "attribute"])
def test_progan_growing_compiled_steps_as_torch(fade, float64_default):
    """Two updates at 8x8 then two at 16x16 (the compiled steps called with another ``step`` and image size, and
    ``alpha`` starting again), against torch's eager loop."""
    build = lambda torch, nn, F: progan(torch, nn, F, fade)
    ours, theirs = run_in_lockstep(build, train_progan(fade, compiled=True, schedule=(1, 1, 2, 2)))
    assert_same_records(ours, theirs)
    assert theirs["alpha"][0] == theirs["alpha"][2] < theirs["alpha"][1] == theirs["alpha"][3]


def test_progan_compiled_steps_in_float32_as_torch():
    """float32, as ProGAN trains: the compiled steps (fade-in as a module attribute) against torch's eager loop."""
    ours, theirs = run_in_lockstep(progan, train_progan("attribute", compiled=True, dtype=np.float32))
    assert ours["state"]["gen.initial.1.weight"].dtype == theirs["state"]["gen.initial.1.weight"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)


def test_progan_generator_inference_compiled_and_onnx_as_torch():
    """The grown generator (16x16, mid fade-in, ``alpha=0.5``) in float32: eagerly, through ``kiln.compile(fullgraph=True)``
    and exported by ``kiln.onnx.export`` run by onnxruntime, against torch's eager forward."""
    onnxruntime = require("onnxruntime")
    noise = np.random.default_rng(2).standard_normal((BATCH, Z_DIM, 1, 1)).astype(np.float32)

    def infer(torch, nn, F, both):
        class Sampler(nn.Module):
            def __init__(self, gen):
                super().__init__()
                self.gen = gen

            def forward(self, z):
                return self.gen(z, 0.5, 2)

        sampler = Sampler(both["gen"]).eval()
        with torch.no_grad():
            record = {"eager": array(sampler(torch.tensor(noise)))}
        if torch is kiln:
            record["compiled"] = array(kiln.compile(sampler, fullgraph=True)(torch.tensor(noise)))
            buffer = io.BytesIO()
            kiln.onnx.export(sampler, (torch.tensor(noise),), buffer, input_names=["z"], output_names=["image"])
            record["onnx"] = onnxruntime.InferenceSession(buffer.getvalue()).run(None, {"z": noise})[0]
        return record

    ours, theirs = run_in_lockstep(progan, infer)
    assert theirs["eager"].shape == (BATCH, IMG_CHANNELS, 16, 16)
    for key in ("eager", "compiled", "onnx"):  # torch's float32 forward is itself 5.6e-6 from its float64 one
        np.testing.assert_allclose(ours[key], theirs["eager"], rtol=1e-5, atol=2e-5, err_msg=key)


def biggan_draws(updates):
    rng = np.random.default_rng(1)
    return [dict(x=np.tanh(rng.standard_normal((BATCH, IMG_CHANNELS, 4, 4))), y=rng.integers(0, N_CLASSES, BATCH),
                 z=rng.standard_normal((BATCH, 4)), y_fake=rng.integers(0, N_CLASSES, BATCH)) for _ in range(updates)]


def train_biggan(ema_by="copy", compiled=False, updates=3):
    data = biggan_draws(updates)

    def train(torch, nn, F, models):
        G, D, G_ema = models["G"], models["D"], models["G_ema"]
        d_step, g_step = biggan_steps(torch, F, G, D)
        if compiled and torch is kiln:
            d_step, g_step = (kiln.compile(f, fullgraph=True) for f in (d_step, g_step))
        averaged = ema(torch, G, G_ema)
        record = {"D_loss_real": [], "D_loss_fake": [], "G_loss": []}
        for draw in data:
            x, y, z, y_fake = (torch.tensor(draw[key]) for key in ("x", "y", "z", "y_fake"))
            toggle_grad(D, True)
            toggle_grad(G, False)
            D_loss_real, D_loss_fake = d_step(x, y, z, y_fake)
            record.setdefault("D_grads", gradients(D))
            toggle_grad(D, False)
            toggle_grad(G, True)
            G_loss = g_step(z, y_fake)
            record.setdefault("G_grads", gradients(G))
            averaged.update(ema_by)
            record["D_loss_real"].append(D_loss_real.item())
            record["D_loss_fake"].append(D_loss_fake.item())
            record["G_loss"].append(G_loss.item())
        G_ema.eval()
        with torch.no_grad():
            z, y = torch.tensor(data[0]["z"]), torch.tensor(data[0]["y"])
            record["ema_sample"] = array(G_ema(z, G_ema.shared(y)))
        if compiled and torch is kiln:  # sample.py's G_ema(z_, G_ema.shared(y_)) as one compiled graph
            sample = kiln.compile(lambda z, y: G_ema(z, G_ema.shared(y)), fullgraph=True)
            record["ema_sample_compiled"] = array(sample(z, y))
        record["state"] = snapshot(models)
        record["D_grads_last"] = gradients(D)  # the D step's, kept while D was frozen for the G step
        return record

    return train


@pytest.mark.parametrize("ema_by, compiled", [("copy", False), ("mul_add", False), ("lerp", False), ("copy", True)],
                         ids=["ema-copy-eager", "ema-mul-add-eager", "ema-lerp-eager", "ema-copy-compiled-steps"])
def test_biggan_pieces_train_as_torch(ema_by, compiled, float64_default):
    ours, theirs = run_in_lockstep(biggan, train_biggan(ema_by, compiled))
    if compiled:
        assert_same_records(ours.pop("ema_sample_compiled"), theirs["ema_sample"])
    assert_same_records(ours, theirs)
    assert theirs["state"]["G.output_layer.0.num_batches_tracked"] == 2 * 3


def test_biggan_generator_onnx_as_torch():
    """The class-conditional generator in eval mode (spectral norm's stored ``u``/``v``, ``ccbn`` and ``BatchNorm2d`` on
    their running statistics, the shared embedding of integer labels) in float32, exported by ``kiln.onnx.export``
    and run by onnxruntime, against torch's eager forward."""
    onnxruntime = require("onnxruntime")
    z, y = np.random.default_rng(3).standard_normal((BATCH, 4)).astype(np.float32), np.array([0, 2, 1, 2])

    def infer(torch, nn, F, models):
        class Sampler(nn.Module):
            def __init__(self, G):
                super().__init__()
                self.G = G

            def forward(self, z, y):
                return self.G(z, self.G.shared(y))

        sampler = Sampler(models["G"]).eval()
        with torch.no_grad():
            record = {"eager": array(sampler(torch.tensor(z), torch.tensor(y)))}
        if torch is kiln:
            buffer = io.BytesIO()
            kiln.onnx.export(sampler, (torch.tensor(z), torch.tensor(y)), buffer, input_names=["z", "y"],
                             output_names=["image"])
            record["onnx"] = onnxruntime.InferenceSession(buffer.getvalue()).run(None, {"z": z, "y": y})[0]
        return record

    ours, theirs = run_in_lockstep(biggan, infer)
    assert theirs["eager"].shape == (BATCH, IMG_CHANNELS, 4, 4) and np.ptp(theirs["eager"]) > 0.1
    for key in ("eager", "onnx"):
        np.testing.assert_allclose(ours[key], theirs["eager"], rtol=1e-5, atol=1e-6, err_msg=key)
