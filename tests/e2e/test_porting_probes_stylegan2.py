"""Porting probe: rosinality/stylegan2-pytorch (``e2e/stylegan2_program.py``, written once, ``torch`` being torch or
kiln), six iterations of train.py's loop in both libraries from kiln's initial weights with the same fed draws,
compared in float64 to 1e-10: the D and G losses and the real/fake scores of every iteration, R1, the path penalty,
path lengths and their running mean, the first gradients of each of the four phases, every parameter and buffer of G,
D and g_ema, both Adams' ``exp_avg``/``exp_avg_sq``/``step``, and g_ema's samples; float32 at float32's level.

- ``op/``'s CPU forms: ``fused_leaky_relu`` (``F.leaky_relu(input + bias.view(1, bias.shape[0], *rest_dim),
  negative_slope=0.2) * scale``, with and without a bias; ``FusedLeakyReLU``), ``upfirdn2d`` (``abc.Iterable`` up and
  down, the 2-pad form widened to 4, ``input.device.type == "cpu"``) and ``upfirdn2d_native`` (``reshape(-1, in_h,
  in_w, 1)``, zero insertion by ``F.pad`` of a 6-d ``view``, ``F.pad`` by ``max(pad, 0)`` then a crop slice by
  ``max(-pad, 0)``, ``permute``, ``torch.flip(kernel, [0, 1]).view(1, 1, kh, kw)``, ``F.conv2d``, ``[:, ::down_y,
  ::down_x, :]``); ``conv2d_gradfix``'s fallbacks (``could_use_op`` reading ``torch.backends.cudnn.enabled``,
  ``F.conv2d``/``F.conv_transpose2d`` by keywords, the ``no_weight_gradients`` context manager around R1's grad).
- ``model.py``: ``PixelNorm`` (``torch.rsqrt(torch.mean(input ** 2, dim=1, keepdim=True) + 1e-8)``), ``make_kernel``
  (``torch.tensor(k, dtype=torch.float32)``, ``k[None, :] * k[:, None]``, ``k /= k.sum()``), ``Upsample``,
  ``Downsample`` and ``Blur`` (``register_buffer("kernel", ...)``, the pad arithmetic), ``EqualConv2d``/``EqualLinear``
  (``torch.randn(out, in).div_(lr_mul)``, ``torch.zeros(out).fill_(bias_init)``, the weight times ``scale`` at run
  time, ``lr_mul`` 0.01 in the mapping network, ``__repr__``), ``ModulatedConv2d`` fused (the style ``.view(batch, 1,
  in_channel, 1, 1)``, demodulation ``torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)``, the batch as groups of
  ``F.conv2d(input.view(1, batch * in_channel, h, w), ..., groups=batch)``, upsampling by ``weight.transpose(1, 2)
  .reshape(...)`` and ``F.conv_transpose2d(..., stride=2, groups=batch)`` then the blur, the downsampling blur then a
  stride-2 grouped conv) and unfused (``w.square().sum((2, 3, 4))``, ``(...).rsqrt()``, ``dcoefs``), against each
  other too; ``NoiseInjection`` (zero-init weight, ``image.new_empty(batch, 1, height, width).normal_()``),
  ``ConstantInput`` (``.repeat(batch, 1, 1, 1)``), ``StyledConv``, ``ToRGB`` (the skip upsampled), ``Generator``
  (``nn.Sequential`` mapping, noise buffers ``register_buffer``ed on a bare ``nn.Module`` and read by ``getattr``,
  ``nn.ModuleList`` slices ``self.convs[::2]`` zipped with ``noise[1::2]``, one style or two mixed at
  ``random.randint(1, n_latent - 1)`` with ``unsqueeze(1).repeat`` and ``torch.cat``, ``truncation`` towards
  ``mean_latent``, ``input_is_latent``, ``randomize_noise=False``, ``make_noise``, ``get_latent``), ``ConvLayer`` (an
  ``nn.Sequential`` subclass setting ``self.padding`` before ``super().__init__``), ``ResBlock`` and ``Discriminator``
  (the minibatch stddev: ``out.view(group, -1, 1, channel, h, w)``, ``torch.sqrt(stddev.var(0, unbiased=False) +
  1e-8)``, ``.mean([2, 3, 4], keepdims=True).squeeze(2)``, ``.repeat(group, 1, height, width)``).
- ``train.py``: ``requires_grad(model, flag)`` toggled per phase, ``accumulate`` (``par1[k].data.mul_(decay).add_(
  par2[k].data, alpha=1 - decay)``; ``accumulate(g_ema, generator, 0)`` at the start, ``0.5 ** (32 / 10000)`` after
  each iteration), ``d_logistic_loss`` (``F.softplus``), ``d_r1_loss`` (``autograd.grad(outputs=real_pred.sum(),
  inputs=real_img, create_graph=True)`` on ``real_img.requires_grad = True``; ``(r1 / 2 * r1_loss * d_reg_every + 0 *
  real_pred[0]).backward()``), ``g_nonsaturating_loss``, ``g_path_regularize`` (``torch.randn_like(fake_img) /
  math.sqrt(h * w)``, ``autograd.grad`` of ``(fake_img * noise).sum()`` to the latents with ``create_graph=True``,
  ``mean_path_length`` from the int 0 to a tensor, ``path_mean.detach()``), ``weighted_path_loss += 0 * fake_img[0, 0,
  0, 0]`` on a half batch (``path_batch_shrink``), ``make_noise`` (``torch.randn(n, batch, latent).unbind(0)``),
  ``mixing_noise`` (``random.random() < prob``), lazy regularization every 2 iterations (``d_reg_every``,
  ``g_reg_every``, ``start_iter``), Adam with ``lr * ratio`` and ``betas=(0 ** ratio, 0.99 ** ratio)``, the
  checkpoint dict (``state_dict``s of G, D, g_ema and both optimizers, ``args`` pickled) by ``torch.save`` every
  ``save_every`` iterations, and the resume: ``torch.load(ckpt, map_location=lambda storage, loc: storage)``,
  ``start_iter`` from ``os.path.splitext`` of the name, ``load_state_dict`` of the five; g_ema sampled under
  ``torch.no_grad()`` after ``eval()``.

Adaptations: the channel tables divided by 128 (4 channels; the repository's 512 at 4x4 and 8x8 whatever the
``channel_multiplier``), size 8 (a constant 4x4 input, one upsampling level: three styled convs, two ToRGBs, four
latents), batch 4 (one minibatch-stddev group), latent 16, ``n_mlp`` 2, channel_multiplier 1. ``randn``,
``randn_like`` and ``Tensor.normal_`` of both libraries are fed the same NumPy draws; Python's ``random`` is seeded
alike. The models are cast by ``.to(float64)`` (a float64 user's ``model.double()``): ``make_kernel``'s float32 blur
kernels against float64 activations are refused by both libraries' ``conv2d``. ADA, DDP, wandb, the CUDA ops and
image saving are left out. ``torch.load`` takes ``weights_only=False``: the checkpoint pickles ``args`` (an
``argparse.Namespace``), which both libraries' default ``weights_only=True`` refuses.

Compiled: the D step, R1, the G step and the path-length step (each forward, ``zero_grad``, ``backward`` or
``autograd.grad(create_graph=True)`` then ``backward``, Adam) are each a ``kiln.compile(fullgraph=True)`` graph
against torch's eager loop, with the noise draws made before each call and handed in, and the style-mixing index
``random.randint`` drawn outside the step and passed as ``inject_index`` (one trace per index). As written (the index
drawn in ``Generator.forward``), kiln refuses a trace that moves ``random``'s generator: ``kiln.compile`` (no
``fullgraph``) runs the mixing calls eagerly with one warning per step and matches torch. torch.compile(fullgraph=True)
accepts none of the four steps (measured, backend "eager", torch 2.13): "Unsupported Tensor.backward() call" (D and G
steps), "setattr() on Tensor.requires_grad" (R1), "``torch.autograd.grad`` with trace_autograd_ops=False" (R1's and the
path penalty's losses alone), and the mixing forward at ``repeat(1, self.n_latent - inject_index, 1)`` (a randint
value as a repeat count); only the D forward and loss compile there. A whole iteration (both optimizers stepped) in one
``kiln.compile`` runs eagerly, warned ("optimizer.step() twice in one compiled step"), as torch.compile breaks it.

What broke: the program itself ran in kiln as in torch, eagerly, compiled and resumed. Probing what a whole iteration
would need found: two optimizers stepping the same parameters in one compiled step (a second optimizer over a subset)
failed with a bare ``KeyError`` in the NumPy backend: ``schedule-updates`` moved the first update of a parameter up
to its gradient and dropped the second update, anchored on the moved one. Each update now moves with the updates
anchored on it (``compiler/passes/schedule_updates.py``;
``tests/runtime/test_compiled_step_two_optimizers_one_parameter_vs_torch.py``,
``tests/passes/schedule-updates/a_second_update_moves_with_the_first.ir``).
"""

from __future__ import annotations

import argparse
import os
import random
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.stylegan2_program import stylegan2
from oracles import libraries

ARGS = dict(iter=6, start_iter=0, batch=4, latent=16, n_mlp=2, size=8, channel_multiplier=1, r1=10.0,
            path_regularize=2.0, path_batch_shrink=2, d_reg_every=2, g_reg_every=2, mixing=0.9, lr=0.002,
            save_every=10000, ckpt=None)
SHRINK = 128  # 512 // 128 = 4 channels at 4x4 and 8x8
REAL_IMAGES = np.random.default_rng(1).uniform(-1, 1, (ARGS["iter"], ARGS["batch"], 3, 8, 8))


class FedDraws:
    """One library's ``randn``, ``randn_like`` and ``Tensor.normal_`` as draws from one NumPy generator (the same
    seed in both libraries). Inside a compiled step the draws are the step's inputs, queued by ``compiled_steps``."""

    def __init__(self, lib):
        self.lib = lib
        self.reset()

    def reset(self, seed=7):
        self.queue, self.rng = [], np.random.default_rng(seed)

    def fresh(self, shape):
        return self.lib.tensor(self.rng.standard_normal(tuple(shape)), dtype=self.lib.get_default_dtype())

    def next(self, shape):
        return self.queue.pop(0) if self.queue else self.fresh(shape)


def sizes(size):
    return tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)


@pytest.fixture
def fed_draws(monkeypatch):
    """``{library name: FedDraws}`` with both libraries' random draws patched to come from them."""
    feeds = {}
    for name in ("kiln", "torch"):
        lib = libraries(name)[0]
        feed = feeds[name] = FedDraws(lib)
        monkeypatch.setattr(lib, "randn", lambda *size, feed=feed, **options: feed.next(sizes(size)))
        monkeypatch.setattr(lib, "randn_like", lambda x, feed=feed, **options: feed.next(x.shape))
        monkeypatch.setattr(lib.Tensor, "normal_", lambda self, *args, feed=feed, **options: feed.next(self.shape))
    return feeds


def build(torch, nn, F):
    """train.py's ``__main__``: G, D and g_ema (``eval()``, ``accumulate(g_ema, generator, 0)``), as float64 (the
    blur kernels are ``make_kernel``'s float32 buffers), in one ModuleDict for the state."""
    N = stylegan2(torch, nn, F, shrink=SHRINK)
    args = argparse.Namespace(**ARGS)
    generator = N.Generator(args.size, args.latent, args.n_mlp, channel_multiplier=args.channel_multiplier)
    discriminator = N.Discriminator(args.size, channel_multiplier=args.channel_multiplier)
    g_ema = N.Generator(args.size, args.latent, args.n_mlp, channel_multiplier=args.channel_multiplier)
    g_ema.eval()
    N.accumulate(g_ema, generator, 0)
    model = nn.ModuleDict({"g": generator, "d": discriminator, "g_ema": g_ema}).to(torch.get_default_dtype())
    model.program = (N, args)
    return model


def optimizer_state(optimizer):
    """Every entry of ``optimizer.state_dict()["state"]`` as a copy (both libraries' entries are the live state: torch's
    tensors, kiln's arrays)."""
    return {f"{index}.{key}": np.array(array(value) if hasattr(value, "detach") else value, np.float64)
            for index, entry in optimizer.state_dict()["state"].items() for key, value in entry.items()}


def recorder(record):
    """train()'s ``log``: numbers appended per name, a module's gradients kept the first time."""

    def log(name, value):
        if name.endswith("_grads"):
            record.setdefault(name, gradients(value))
        else:
            record.setdefault(name, []).append(array(value) if hasattr(value, "detach") else value)

    return log


def eager_steps(N, args, generator, discriminator, g_optim, d_optim):
    """The four steps as written, run eagerly; the generator draws the style-mixing index itself."""
    steps = N.training_steps(args, generator, discriminator, g_optim, d_optim)
    steps.inject_index = lambda noise: None
    return steps


def samples(torch, N, g_ema):
    """generate.py's sampling from g_ema: random noise, the noise buffers with truncation to ``mean_latent``, two
    styles mixed at a given index, a latent given as such."""
    with torch.no_grad():
        g_ema.eval()
        sample_z = torch.randn(3, g_ema.style_dim)
        sample, _ = g_ema([sample_z])
        mean_latent = g_ema.mean_latent(32)
        truncated, _ = g_ema([sample_z], truncation=0.7, truncation_latent=mean_latent, randomize_noise=False)
        mixed, latent = g_ema([sample_z, sample_z.flip(0)], inject_index=1, return_latents=True)
        given, _ = g_ema([g_ema.get_latent(sample_z)], input_is_latent=True, noise=g_ema.make_noise())
    return dict(sample=array(sample), truncated=array(truncated), mixed=array(mixed), latent=array(latent),
                given=array(given), mean_latent=array(mean_latent))


def training(make_steps, tmp_path):
    """``run_in_lockstep``'s ``train`` (given the library's draws): train.py's loop over ``REAL_IMAGES`` with
    ``make_steps``' steps, then the state, both optimizers' states and g_ema's samples."""

    def train(torch, nn, F, model, feeds):
        N, args = model.program
        args.checkpoint_dir = tmp_path / torch.__name__
        os.makedirs(args.checkpoint_dir)
        generator, discriminator, g_ema = model["g"], model["d"], model["g_ema"]
        g_optim, d_optim = N.make_optimizers(args, generator, discriminator)
        steps = make_steps(torch, N, args, generator, discriminator, g_optim, d_optim)
        random.seed(0)
        feeds.reset()
        record = {}
        loader = [torch.tensor(images, dtype=torch.get_default_dtype()) for images in REAL_IMAGES]
        N.train(args, loader, generator, discriminator, g_optim, d_optim, g_ema, "cpu", steps, recorder(record))
        record.update(state=snapshot(model), g_optim=optimizer_state(g_optim), d_optim=optimizer_state(d_optim),
                      samples=samples(torch, N, g_ema))
        return record

    return train


def lockstep(make_steps, fed_draws, tmp_path, train=training):
    train = train(make_steps, tmp_path)
    return run_in_lockstep(build, lambda torch, nn, F, model: train(torch, nn, F, model,
                                                                   fed_draws["kiln" if torch is kiln else "torch"]))


def test_stylegan2_trains_as_torch(float64_default, fed_draws, tmp_path):
    ours, theirs = lockstep(lambda torch, *rest: eager_steps(*rest), fed_draws, tmp_path)
    assert_same_records(ours, theirs)
    assert len(theirs["r1"]) == 6 and len(theirs["mean_path_length"]) == 3 and min(theirs["mean_path_length"]) > 0
    assert np.abs(theirs["state"]["g.convs.1.noise.weight"]).max() > 0  # the noise strength learned from zero


def compiled_steps(feeds, hoisted=True):
    """The four steps as ``kiln.compile(fullgraph=True)`` graphs in kiln, eager in torch; the draws inside them
    (NoiseInjection's ``normal_``, the path noise's ``randn_like``) made before each call and handed in, and the
    style-mixing index drawn before it (see the module docstring). ``hoisted=False``: the index drawn in
    ``Generator.forward`` as written, the steps given to ``kiln.compile`` without ``fullgraph``."""

    def make(torch, N, args, generator, discriminator, g_optim, d_optim):
        feed = feeds["kiln" if torch is kiln else "torch"]
        steps = N.training_steps(args, generator, discriminator, g_optim, d_optim)

        def noise_shapes(batch):  # the generator's layer noises, (batch, 1, 4, 4) then (batch, 1, 8, 8) twice
            sides = [2 ** ((layer + 5) // 2) for layer in range(generator.num_layers)]
            return [(batch, 1, side, side) for side in sides]

        def fed(step, draw_shapes):
            def with_draws(draws, *inputs):
                feed.queue = list(draws)  # a trace tried again starts afresh
                return step(*inputs)

            run = kiln.compile(with_draws, fullgraph=hoisted) if torch is kiln else with_draws
            return lambda *inputs: run([feed.fresh(shape) for shape in draw_shapes(*inputs)], *inputs)

        def path_draws(noise, mean_path_length, inject_index):
            batch = noise[0].shape[0]
            return noise_shapes(batch) + [(batch, 3, args.size, args.size)]

        def inject_index(noise):
            return random.randint(1, generator.n_latent - 1) if hoisted and len(noise) > 1 else None

        return SimpleNamespace(
            d_step=fed(steps.d_step, lambda real_img, noise, inject_index: noise_shapes(real_img.shape[0])),
            d_reg_step=kiln.compile(steps.d_reg_step, fullgraph=True) if torch is kiln else steps.d_reg_step,
            g_step=fed(steps.g_step, lambda noise, inject_index: noise_shapes(noise[0].shape[0])),
            g_reg_step=fed(steps.g_reg_step, path_draws), inject_index=inject_index)

    return make


@pytest.mark.parametrize("hoisted", [True, False], ids=["inject_index drawn outside: graphs", "as written: eager"])
def test_stylegan2_compiled_steps_as_torch(float64_default, fed_draws, hoisted, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours, theirs = lockstep(compiled_steps(fed_draws, hoisted), fed_draws, tmp_path)
    warned = [str(w.message) for w in caught if "kiln.compile" in str(w.message)]
    assert_same_records(ours, theirs)
    if hoisted:
        assert warned == []
    else:
        assert len(warned) == 3 and all("random's global generator" in message for message in warned), warned[0]


FIR_CASES = [(2, 1, (2, 1)), (1, 2, (1, 1)), (2, 2, (-1, 2)), (3, 1, (0, -2))]  # up, down, pad (negative: a crop)


def test_stylegan2_pieces_as_torch(float64_default):
    """The parts train() leaves out: ``upfirdn2d`` with up and down factors and negative pads (a crop), ``Downsample``,
    ``ModulatedConv2d(fused=False)`` (``w.square().sum((2, 3, 4))``, ``.rsqrt()``, the input scaled by the style,
    ``conv_transpose2d`` of the shared weight then the blur; the downsampling ``Blur`` then a stride-2 conv) against
    the fused grouped form, input and weight gradients included, and the modules' ``__repr__``."""
    rng = np.random.default_rng(3)
    image, style = rng.standard_normal((2, 3, 8, 8)), rng.standard_normal((2, 5))
    records, initial = [], {}
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        kiln.manual_seed(0)
        N = stylegan2(torch, nn, F)
        x = torch.tensor(image, requires_grad=True)
        kernel = N.make_kernel([1, 3, 3, 1]).double()
        record = {"upfirdn2d": {f"{up}-{down}-{pad}": array(N.upfirdn2d(x, kernel, up=up, down=down, pad=pad))
                                for up, down, pad in FIR_CASES}}
        record["downsample"] = array(N.Downsample([1, 3, 3, 1]).double()(x))
        record["repr"] = [repr(N.EqualConv2d(3, 4, 3, padding=1)), repr(N.EqualLinear(3, 4)),
                          repr(N.ModulatedConv2d(3, 4, 3, 5, upsample=True))]
        for kind in ("upsample", "downsample", "plain"):
            options = {kind: True} if kind != "plain" else {}
            fused = N.ModulatedConv2d(3, 4, 3, 5, **options).double()
            if name == "kiln":
                initial[kind] = snapshot(fused)
            else:
                fused.load_state_dict({key: torch.tensor(value) for key, value in initial[kind].items()})
            unfused = N.ModulatedConv2d(3, 4, 3, 5, fused=False, **options).double()
            unfused.load_state_dict(fused.state_dict())
            for label, conv in (("fused", fused), ("unfused", unfused)):
                x.grad = None
                out = conv(x, torch.tensor(style))
                (out * out.detach().flip(-1)).sum().backward()
                record[f"{kind} {label}"] = dict(out=array(out), input_grad=array(x.grad), grads=gradients(conv))
        records.append(record)
    assert records[0].pop("repr") == records[1].pop("repr")
    assert_same_records(records[0], records[1])
    for kind in ("upsample", "downsample", "plain"):
        assert_same_records(records[0][f"{kind} fused"]["out"], records[0][f"{kind} unfused"]["out"])


def resumed(make_steps, tmp_path):
    """Four iterations saving ``000003.pt``, then train.py started again with ``--ckpt`` on it: new G, D, g_ema and
    Adams, the checkpoint loaded (``start_iter`` from its name), three more iterations."""
    first = training(make_steps, tmp_path)

    def train(torch, nn, F, model, feeds):
        N, args = model.program
        args.iter, args.save_every = 4, 3
        first(torch, nn, F, model, feeds)
        again = build(torch, nn, F)
        generator, discriminator, g_ema = again["g"], again["d"], again["g_ema"]
        g_optim, d_optim = N.make_optimizers(args, generator, discriminator)
        args.ckpt = str(args.checkpoint_dir / "000003.pt")
        N.load_checkpoint(args, generator, discriminator, g_ema, g_optim, d_optim)
        record = {"loaded": snapshot(again), "loaded g_optim": optimizer_state(g_optim), "start_iter": args.start_iter}
        args.iter = 3
        steps = make_steps(torch, N, args, generator, discriminator, g_optim, d_optim)
        N.train(args, [torch.tensor(images, dtype=torch.get_default_dtype()) for images in REAL_IMAGES[:3]],
                generator, discriminator, g_optim, d_optim, g_ema, "cpu", steps, recorder(record))
        record.update(state=snapshot(again), g_optim=optimizer_state(g_optim), d_optim=optimizer_state(d_optim))
        return record

    return train


def test_stylegan2_resumed_from_a_checkpoint_as_torch(float64_default, fed_draws, tmp_path):
    ours, theirs = lockstep(lambda torch, *rest: eager_steps(*rest), fed_draws, tmp_path, train=resumed)
    assert_same_records(ours, theirs)
    assert theirs["start_iter"] == 3 and len(theirs["d"]) == 3


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled steps"])
def test_stylegan2_float32_trains_as_torch(fed_draws, tmp_path, compiled):
    """Float32 at its level; g_ema's samples to 5e-6 (measured 1.5e-6 on a pixel of 0.033, a sum of terms ten times
    larger from weights an ulp or so apart)."""
    make_steps = compiled_steps(fed_draws) if compiled else lambda torch, *rest: eager_steps(*rest)
    ours, theirs = lockstep(make_steps, fed_draws, tmp_path)
    assert_same_records(ours, theirs, rtol=1e-5, atol=1e-6, looser={"samples": dict(rtol=1e-5, atol=5e-6)})


ITERATION_DRAWS = [(batch, 1, side, side) for batch in (4, 4, 2) for side in (4, 8, 8)] + [(2, 3, 8, 8)]


def whole_iteration(feeds):
    """Two iterations of the loop body (both phases, both regularizers, the EMA) as one function, given to
    ``kiln.compile`` in kiln: it steps two optimizers, so it runs eagerly, warned; torch's eager loop alike."""

    def train(torch, nn, F, model):
        N, args = model.program
        feed = feeds["kiln" if torch is kiln else "torch"]
        feed.reset()
        generator, discriminator, g_ema = model["g"], model["d"], model["g_ema"]
        steps = N.training_steps(args, generator, discriminator, *N.make_optimizers(args, generator, discriminator))

        def iteration(draws, real_img, d_noise, g_noise, path_noise, mean_path_length):
            feed.queue = list(draws)  # the layer noises and the path noise, handed in (as in ``compiled_steps``)
            N.requires_grad(generator, False)
            N.requires_grad(discriminator, True)
            d_loss, _, _ = steps.d_step(real_img, d_noise)
            r1_loss = steps.d_reg_step(real_img)
            N.requires_grad(generator, True)
            N.requires_grad(discriminator, False)
            g_loss = steps.g_step(g_noise)
            path_loss, mean_path_length, _ = steps.g_reg_step(path_noise, mean_path_length)
            N.accumulate(g_ema, generator, 0.5 ** (32 / (10 * 1000)))
            return d_loss, r1_loss, g_loss, path_loss, mean_path_length

        run = kiln.compile(iteration) if torch is kiln else iteration
        mean_path_length, record = torch.tensor(0.0), {"losses": []}
        for images in REAL_IMAGES[:2]:
            real_img = torch.tensor(images)
            d_noise, g_noise, path_noise = ([feed.fresh((batch, ARGS["latent"]))] for batch in (4, 4, 2))
            draws = [feed.fresh(shape) for shape in ITERATION_DRAWS]
            *losses, mean_path_length = run(draws, real_img, d_noise, g_noise, path_noise, mean_path_length)
            record["losses"].append([loss.item() for loss in losses] + [mean_path_length.item()])
        record["state"] = snapshot(model)
        return record

    return train


def test_stylegan2_whole_iteration_compiled_runs_eagerly_as_torch(float64_default, fed_draws):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours, theirs = run_in_lockstep(build, whole_iteration(fed_draws))
    warned = [str(w.message) for w in caught if "kiln.compile" in str(w.message)]
    assert_same_records(ours, theirs)
    assert len(warned) == 1 and "optimizer.step() twice in one compiled step" in warned[0], warned
