"""Porting probe: super-resolution (ESPCN, SRResNet), written once as PyTorch users write it (``torch`` is torch or
kiln) and run in both from the same weights in float64: the low-resolution inputs, bicubic baselines and their PSNR,
the first outputs and gradients, the losses, the PSNR after training and the state after a few steps agree to 1e-10,
eagerly and with the whole training step one ``kiln.compile(fullgraph=True)`` graph against torch's eager loop; one
float32 run.

- Data as SR scripts make it: the low-resolution image by bicubic ``F.interpolate(hr, scale_factor=1 / r,
  mode="bicubic", align_corners=False, antialias=True)``, ``.clamp(0, 1)``; the bicubic baseline ``F.interpolate(lr,
  scale_factor=r, mode="bicubic", align_corners=False)``; PSNR ``10 * torch.log10(1 / mse)``.
- ESPCN (pytorch/examples ``super_resolution``): convs, ``nn.PixelShuffle(r)``, ``init.orthogonal_(w,
  init.calculate_gain('relu'))``; Adam, ``MSELoss``; a variant adding the bicubic upsampling of the input (global
  residual learning).
- SRResNet (SRGAN's generator, small): a 9x9 conv and ``nn.PReLU()``, residual blocks (conv, ``BatchNorm2d``,
  ``PReLU(num_parameters=channels)``, conv, ``BatchNorm2d``, ``x + residual``), the long skip, upsampling by ``conv ->
  PixelShuffle(2) -> PReLU`` or by bicubic resize-conv (``F.interpolate(feat, scale_factor=2, mode="bicubic")`` then a
  conv: the gradient flows back through bicubic), ``(torch.tanh(x) + 1) / 2``; the input ``F.pixel_unshuffle``d first
  (BasicSR's RRDBNet for scale 2) in one variant; then ``model.eval()`` and PSNR under ``torch.no_grad()``.

What broke: ``F.interpolate(..., antialias=True)`` was refused; it is now PyTorch's anti-aliased kernel
(``frontend/functional_interpolate_antialias.py``, ``tests/layers/test_interpolate_antialias_vs_torch.py``). Noticed:
PyTorch 2.13's anti-aliased CPU kernel repeats the first output row when the output width is 1 (kiln does not).
Everything else agreed as first written, but for the biases before a BatchNorm (``NORMED_BIASES``).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, compiled_step_training, gradients, run_in_lockstep, snapshot

SCALE, HR, BATCH = 2, 12, 2
# The biases of SRResNet's convs a BatchNorm follows (SRGAN's code keeps them): the norm subtracts each channel's
# batch mean, so they change no output and their exact gradient is zero; computed, it is rounding (~1e-17), which Adam
# (eps 1e-8) turns into steps of ~lr * 1e-17 / 1e-8 = 1e-11 in directions set by the order of each library's sums.
# Measured after 3 steps: up to 2e-11 apart (lr 1e-2); every other entry within 1e-13.
# The norms' running means take in that noise (3e-12 apart).
NORMED_BIASES = {f"{name}.bias": dict(rtol=0, atol=1e-10)
                 for name in ("block7.0", *(f"blocks.{b}.conv{c}" for b in range(2) for c in (1, 2)))}
NORMED_BIASES |= {f"{name}.running_mean": dict(rtol=0, atol=1e-10)
                  for name in ("block7.1", *(f"blocks.{b}.bn{c}" for b in range(2) for c in (1, 2)))}


def espcn(torch, nn, F, upscale_factor=SCALE, channels=1, bicubic_skip=False):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.relu = nn.ReLU()
            self.conv1 = nn.Conv2d(channels, 8, (5, 5), (1, 1), (2, 2))
            self.conv2 = nn.Conv2d(8, 8, (3, 3), (1, 1), (1, 1))
            self.conv3 = nn.Conv2d(8, 4, (3, 3), (1, 1), (1, 1))
            self.conv4 = nn.Conv2d(4, channels * upscale_factor ** 2, (3, 3), (1, 1), (1, 1))
            self.pixel_shuffle = nn.PixelShuffle(upscale_factor)
            self._initialize_weights()

        def forward(self, x):
            out = self.relu(self.conv1(x))
            out = self.relu(self.conv2(out))
            out = self.relu(self.conv3(out))
            out = self.pixel_shuffle(self.conv4(out))
            if bicubic_skip:
                out = out + F.interpolate(x, scale_factor=upscale_factor, mode="bicubic", align_corners=False)
            return out

        def _initialize_weights(self):
            nn.init.orthogonal_(self.conv1.weight, nn.init.calculate_gain("relu"))
            nn.init.orthogonal_(self.conv2.weight, nn.init.calculate_gain("relu"))
            nn.init.orthogonal_(self.conv3.weight, nn.init.calculate_gain("relu"))
            nn.init.orthogonal_(self.conv4.weight)

    return Net()


def srresnet(torch, nn, F, channels=8, blocks=2, upsample="pixel_shuffle", unshuffle_input=False):
    class ResidualBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
            self.bn1 = nn.BatchNorm2d(channels)
            self.prelu = nn.PReLU(num_parameters=channels)
            self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
            self.bn2 = nn.BatchNorm2d(channels)

        def forward(self, x):
            residual = self.prelu(self.bn1(self.conv1(x)))
            residual = self.bn2(self.conv2(residual))
            return x + residual

    class UpsampleBlock(nn.Module):
        def __init__(self, up_scale):
            super().__init__()
            if upsample == "pixel_shuffle":
                self.conv = nn.Conv2d(channels, channels * up_scale ** 2, kernel_size=3, padding=1)
                self.pixel_shuffle = nn.PixelShuffle(up_scale)
            else:
                self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
            self.up_scale = up_scale
            self.prelu = nn.PReLU()

        def forward(self, x):
            if upsample == "pixel_shuffle":
                return self.prelu(self.pixel_shuffle(self.conv(x)))
            x = F.interpolate(x, scale_factor=self.up_scale, mode="bicubic", align_corners=False)
            return self.prelu(self.conv(x))

    class Generator(nn.Module):
        def __init__(self, scale_factor=SCALE):
            super().__init__()
            in_channels, ups = (3 * 4, int(math.log(scale_factor * 2, 2))) if unshuffle_input \
                else (3, int(math.log(scale_factor, 2)))
            self.block1 = nn.Sequential(nn.Conv2d(in_channels, channels, kernel_size=9, padding=4), nn.PReLU())
            self.blocks = nn.Sequential(*[ResidualBlock() for _ in range(blocks)])
            self.block7 = nn.Sequential(nn.Conv2d(channels, channels, kernel_size=3, padding=1),
                                        nn.BatchNorm2d(channels))
            self.block8 = nn.Sequential(*[UpsampleBlock(2) for _ in range(ups)],
                                        nn.Conv2d(channels, 3, kernel_size=9, padding=4))

        def forward(self, x):
            if unshuffle_input:
                x = F.pixel_unshuffle(x, downscale_factor=2)
            block1 = self.block1(x)
            block7 = self.block7(self.blocks(block1))
            block8 = self.block8(block1 + block7)
            return (torch.tanh(block8) + 1) / 2

    return Generator()


def psnr(torch, sr, hr):
    mse = torch.mean((sr - hr) ** 2)
    return 10 * torch.log10(1 / mse)


def high_resolution(channels, steps=3, dtype=np.float64):
    """Smooth images in [0, 1]: random low frequencies."""
    rng = np.random.default_rng(0)
    y, x = np.meshgrid(np.linspace(0, 1, HR), np.linspace(0, 1, HR), indexing="ij")
    images = np.zeros((steps, BATCH, channels, HR, HR))
    for k in range(3):
        phase = rng.uniform(0, 2 * np.pi, (steps, BATCH, channels, 1, 1))
        images += np.sin((k + 1) * 2.5 * (x + y * rng.uniform(0.5, 1.5)) + phase) / (k + 1)
    return ((images - images.min()) / (images.max() - images.min())).astype(dtype)


def low_resolution(torch, F, hr):
    return F.interpolate(hr, scale_factor=1 / SCALE, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def bicubic_baseline(torch, F, lr):
    return F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)


def train_super_resolution(channels, steps=3, lr=1e-2, dtype=np.float64):
    images = high_resolution(channels, steps, dtype)

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        criterion = nn.MSELoss()
        record = {"losses": [], "lr_images": [], "bicubic": [], "bicubic_psnr": []}
        for hr in images:
            hr = torch.tensor(hr)
            lr_image = low_resolution(torch, F, hr)
            baseline = bicubic_baseline(torch, F, lr_image)
            record["lr_images"].append(array(lr_image))
            record["bicubic"].append(array(baseline))
            record["bicubic_psnr"].append(psnr(torch, baseline.clamp(0, 1), hr).item())
            optimizer.zero_grad()
            sr = model(lr_image)
            loss = criterion(sr, hr)
            loss.backward()
            record.setdefault("first_output", array(sr))
            record.setdefault("grads", gradients(model))
            optimizer.step()
            record["losses"].append(loss.item())
        model.eval()
        with torch.no_grad():
            hr = torch.tensor(images[0])
            sr = model(low_resolution(torch, F, hr))
            record["eval_psnr"] = psnr(torch, sr, hr).item()
            record["eval_output"] = array(sr)
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("bicubic_skip", [False, True], ids=["espcn", "espcn-bicubic-skip"])
def test_espcn_trains_as_torch(bicubic_skip, float64_default):
    ours, theirs = run_in_lockstep(lambda *names: espcn(*names, bicubic_skip=bicubic_skip),
                                   train_super_resolution(channels=1))
    assert_same_records(ours, theirs)
    assert 15 < min(theirs["bicubic_psnr"]) and max(theirs["bicubic_psnr"]) < 60


@pytest.mark.parametrize("upsample, unshuffle_input", [("pixel_shuffle", False), ("bicubic", True)],
                         ids=["srresnet-pixel-shuffle", "srresnet-unshuffled-input-bicubic-resize-conv"])
def test_srresnet_trains_as_torch(upsample, unshuffle_input, float64_default):
    build = lambda *names: srresnet(*names, upsample=upsample, unshuffle_input=unshuffle_input)
    ours, theirs = run_in_lockstep(build, train_super_resolution(channels=3))
    assert_same_records(ours, theirs, looser=NORMED_BIASES)


def compiled_sr_training(channels, dtype=np.float64, steps=3):
    images = high_resolution(channels, steps, dtype)

    def make_batch(lib):
        hr = lib.tensor(images[0])
        return low_resolution(lib, lib.nn.functional, hr), hr

    def loss_of(torch, nn, F, model, lr_image, hr):
        return F.mse_loss(model(lr_image), hr)

    return compiled_step_training(make_batch, lambda lib, model: lib.optim.Adam(model.parameters(), lr=1e-2),
                                  loss_of, steps)


@pytest.mark.parametrize("family", ["espcn-bicubic-skip", "srresnet-unshuffled-input-bicubic-resize-conv"])
def test_super_resolution_compiled_step_as_torch(family, float64_default):
    if family.startswith("espcn"):
        build, channels = (lambda *names: espcn(*names, bicubic_skip=True)), 1
    else:
        build, channels = (lambda *names: srresnet(*names, upsample="bicubic", unshuffle_input=True)), 3
    ours, theirs = run_in_lockstep(build, compiled_sr_training(channels))
    assert_same_records(ours, theirs, looser=NORMED_BIASES)


def test_espcn_compiled_step_in_float32_as_torch():
    """ESPCN in float32 (SRResNet's norm-cancelled biases take lr-sized steps set by rounding in float32)."""
    ours, theirs = run_in_lockstep(lambda *names: espcn(*names, bicubic_skip=True), compiled_sr_training(1, np.float32))
    assert ours["state"]["conv1.weight"].dtype == theirs["state"]["conv1.weight"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=1e-4, atol=1e-5)
