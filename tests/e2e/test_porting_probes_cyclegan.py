"""Porting probe: CycleGAN's pieces (junyanz/pytorch-CycleGAN-and-pix2pix, small), written once as PyTorch users write
them (``torch`` is torch or kiln) and run in both from the same weights in float64: the first translations, the
generators' and discriminators' gradients, the losses, the learning rates and the state after a few iterations agree
to 1e-10, eagerly and with the generator step and the discriminator step each one ``kiln.compile(fullgraph=True)``
graph against torch's eager loop; one float32 run.

- ``ResnetGenerator``: ``ReflectionPad2d(3)``, a 7x7 conv, two stride-2 convs down, ``ResnetBlock``s
  (``ReflectionPad2d(1)``, conv, norm, ``ReLU(True)``, twice, ``x + conv_block(x)``), two
  ``ConvTranspose2d(kernel_size=3, stride=2, padding=1, output_padding=1)`` up, ``ReflectionPad2d(3)``, a 7x7 conv,
  ``Tanh``; the norm ``functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)`` (so
  ``use_bias = norm_layer.func == nn.InstanceNorm2d``), or ``affine=True``.
- ``NLayerDiscriminator`` (PatchGAN): 4x4 convs, ``LeakyReLU(0.2, True)``, the same norm.
- ``init_weights``: ``net.apply(init_func)`` picking layers by ``classname.find('Conv') != -1``, ``init.normal_(
  m.weight.data, 0.0, 0.02)``, ``init.constant_(m.bias.data, 0.0)``.
- ``GANLoss('lsgan')``: ``MSELoss`` against ``register_buffer('real_label', torch.tensor(1.0))`` ``.expand_as(
  prediction)``; cycle and identity ``L1Loss``; ``set_requires_grad(nets, False)`` around the generator step; D's loss
  from ``fake.detach()`` halved; ``Adam(itertools.chain(G_A.parameters(), G_B.parameters()), lr, betas=(0.5,
  0.999))``.
- ``ImagePool.query``: ``for image in images``, ``torch.unsqueeze(image.data, 0)``, the history filled then swapped at
  random (Python's ``random``, seeded alike for both libraries), ``.clone()``, ``torch.cat``.
- ``LambdaLR`` with CycleGAN's ``lambda_rule`` (constant, then linear decay), stepped once per epoch.

Everything agreed as first written, but for the biases the norms cancel (``NORMED_BIASES``). Found next to it: an
``InstanceNorm2d`` of a 1x1 map (a PatchGAN on too small an image) and a ``BatchNorm`` of one sample gave zeros where
PyTorch raises; they raise now (``frontend/norm_size_checks.py``, ``tests/layers/test_norm_single_value_vs_torch.py``).
"""

from __future__ import annotations

import functools
import itertools
import random

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot

IMAGE, BATCH, NGF, NDF = 12, 2, 4, 4
# The biases of the convs an InstanceNorm follows (CycleGAN's ``use_bias`` is True with InstanceNorm): the norm
# subtracts each channel's mean, so they change no output and their exact gradient is zero; computed, it is rounding
# (~1e-17), which Adam (eps 1e-8) turns into steps of ~lr * 1e-17 / 1e-8 ~ 1e-12 with signs set by the order of each
# library's sums. Measured after 3 iterations: these biases up to 2e-9 in both and as far apart (lr is 2e-3); every other entry of
# the records (translations, gradients, losses, pooled images, the other parameters) within 1e-13.
NORMED_BIASES = [f"/state/{net}.model.{layer}.bias" for net in ("G_A", "G_B")
                 for layer in ("1", "4", "7", "12", "15", *(f"{b}.conv_block.{c}" for b in (10, 11) for c in (1, 5)))]
NORMED_BIASES += [f"/state/{net}.model.{layer}.bias" for net in ("D_A", "D_B") for layer in (2, 5)]


def cyclegan(torch, nn, F, affine=False):
    norm_layer = functools.partial(nn.InstanceNorm2d, affine=affine, track_running_stats=False)
    use_bias = norm_layer.func == nn.InstanceNorm2d

    class ResnetBlock(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.conv_block = nn.Sequential(
                nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias), norm_layer(dim),
                nn.ReLU(True),
                nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, padding=0, bias=use_bias), norm_layer(dim))

        def forward(self, x):
            return x + self.conv_block(x)

    class ResnetGenerator(nn.Module):
        def __init__(self, input_nc=3, output_nc=3, ngf=NGF, n_blocks=2, n_downsampling=2):
            super().__init__()
            model = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                     norm_layer(ngf), nn.ReLU(True)]
            for i in range(n_downsampling):
                mult = 2 ** i
                model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                          norm_layer(ngf * mult * 2), nn.ReLU(True)]
            mult = 2 ** n_downsampling
            for i in range(n_blocks):
                model += [ResnetBlock(ngf * mult)]
            for i in range(n_downsampling):
                mult = 2 ** (n_downsampling - i)
                model += [nn.ConvTranspose2d(ngf * mult, int(ngf * mult / 2), kernel_size=3, stride=2, padding=1,
                                             output_padding=1, bias=use_bias),
                          norm_layer(int(ngf * mult / 2)), nn.ReLU(True)]
            model += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0), nn.Tanh()]
            self.model = nn.Sequential(*model)

        def forward(self, input):
            return self.model(input)

    class NLayerDiscriminator(nn.Module):
        def __init__(self, input_nc=3, ndf=NDF, n_layers=2):
            super().__init__()
            kw, padw = 4, 1
            sequence = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
            nf_mult = 1
            for n in range(1, n_layers):
                nf_mult_prev, nf_mult = nf_mult, min(2 ** n, 8)
                sequence += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw,
                                       bias=use_bias), norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
            nf_mult_prev, nf_mult = nf_mult, min(2 ** n_layers, 8)
            sequence += [nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw,
                                   bias=use_bias), norm_layer(ndf * nf_mult), nn.LeakyReLU(0.2, True)]
            sequence += [nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]
            self.model = nn.Sequential(*sequence)

        def forward(self, input):
            return self.model(input)

    nets = nn.ModuleDict({"G_A": ResnetGenerator(), "G_B": ResnetGenerator(), "D_A": NLayerDiscriminator(),
                          "D_B": NLayerDiscriminator()})
    for net in nets.values():
        init_weights(nn, net)
    return nets


def init_weights(nn, net, init_gain=0.02):
    def init_func(m):
        classname = m.__class__.__name__
        if hasattr(m, "weight") and (classname.find("Conv") != -1 or classname.find("Linear") != -1):
            nn.init.normal_(m.weight.data, 0.0, init_gain)
            if hasattr(m, "bias") and m.bias is not None:
                nn.init.constant_(m.bias.data, 0.0)
        elif classname.find("BatchNorm2d") != -1 or (classname.find("InstanceNorm2d") != -1 and m.weight is not None):
            nn.init.normal_(m.weight.data, 1.0, init_gain)
            nn.init.constant_(m.bias.data, 0.0)

    net.apply(init_func)


def gan_loss_class(torch, nn):
    class GANLoss(nn.Module):
        def __init__(self, target_real_label=1.0, target_fake_label=0.0):
            super().__init__()
            self.register_buffer("real_label", torch.tensor(target_real_label))
            self.register_buffer("fake_label", torch.tensor(target_fake_label))
            self.loss = nn.MSELoss()

        def get_target_tensor(self, prediction, target_is_real):
            target_tensor = self.real_label if target_is_real else self.fake_label
            return target_tensor.expand_as(prediction)

        def __call__(self, prediction, target_is_real):
            return self.loss(prediction, self.get_target_tensor(prediction, target_is_real))

    return GANLoss


class ImagePool:
    """CycleGAN's history of generated images (``util/image_pool.py``), the draws from ``rng`` (``random``)."""

    def __init__(self, torch, pool_size, rng):
        self.torch, self.pool_size, self.rng = torch, pool_size, rng
        if self.pool_size > 0:
            self.num_imgs = 0
            self.images = []

    def query(self, images):
        if self.pool_size == 0:
            return images
        return_images = []
        for image in images:
            image = self.torch.unsqueeze(image.data, 0)
            if self.num_imgs < self.pool_size:
                self.num_imgs = self.num_imgs + 1
                self.images.append(image)
                return_images.append(image)
            else:
                p = self.rng.uniform(0, 1)
                if p > 0.5:
                    random_id = self.rng.randint(0, self.pool_size - 1)
                    tmp = self.images[random_id].clone()
                    self.images[random_id] = image
                    return_images.append(tmp)
                else:
                    return_images.append(image)
        return self.torch.cat(return_images, 0)


def set_requires_grad(nets, requires_grad=False):
    for net in nets:
        for param in net.parameters():
            param.requires_grad = requires_grad


def cyclegan_steps(torch, nn, nets, lambda_A=10.0, lambda_B=10.0, lambda_idt=0.5):
    """CycleGANModel's ``backward_G`` + ``optimizer_G.step()`` and ``backward_D_A/B`` + ``optimizer_D.step()``."""
    G_A, G_B, D_A, D_B = nets["G_A"], nets["G_B"], nets["D_A"], nets["D_B"]
    criterionGAN, criterionCycle, criterionIdt = gan_loss_class(torch, nn)(), nn.L1Loss(), nn.L1Loss()
    optimizer_G = torch.optim.Adam(itertools.chain(G_A.parameters(), G_B.parameters()), lr=2e-3, betas=(0.5, 0.999))
    optimizer_D = torch.optim.Adam(itertools.chain(D_A.parameters(), D_B.parameters()), lr=2e-3, betas=(0.5, 0.999))

    def g_step(real_A, real_B):
        fake_B = G_A(real_A)
        rec_A = G_B(fake_B)
        fake_A = G_B(real_B)
        rec_B = G_A(fake_A)
        optimizer_G.zero_grad()
        loss_idt_A = criterionIdt(G_A(real_B), real_B) * lambda_B * lambda_idt
        loss_idt_B = criterionIdt(G_B(real_A), real_A) * lambda_A * lambda_idt
        loss_G_A = criterionGAN(D_A(fake_B), True)
        loss_G_B = criterionGAN(D_B(fake_A), True)
        loss_cycle_A = criterionCycle(rec_A, real_A) * lambda_A
        loss_cycle_B = criterionCycle(rec_B, real_B) * lambda_B
        loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
        loss_G.backward()
        optimizer_G.step()
        return loss_G, loss_cycle_A, fake_A.detach(), fake_B.detach()

    def backward_D_basic(netD, real, fake):
        loss_D_real = criterionGAN(netD(real), True)
        loss_D_fake = criterionGAN(netD(fake.detach()), False)
        loss_D = (loss_D_real + loss_D_fake) * 0.5
        loss_D.backward()
        return loss_D

    def d_step(real_A, real_B, fake_A, fake_B):
        optimizer_D.zero_grad()
        loss_D_A = backward_D_basic(D_A, real_B, fake_B)
        loss_D_B = backward_D_basic(D_B, real_A, fake_A)
        optimizer_D.step()
        return loss_D_A, loss_D_B

    return g_step, d_step, (optimizer_G, optimizer_D)


def linear_decay_schedulers(torch, optimizers, n_epochs=1, n_epochs_decay=2, epoch_count=1):
    def lambda_rule(epoch):
        return 1.0 - max(0, epoch + epoch_count - n_epochs) / float(n_epochs_decay + 1)

    return [torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda_rule) for optimizer in optimizers]


def images(epochs, dtype=np.float64):
    rng = np.random.default_rng(0)
    shape = (epochs, 2, BATCH, 3, IMAGE, IMAGE)
    return np.tanh(rng.standard_normal(shape)).astype(dtype)


def train_cyclegan(compiled=False, epochs=3, pool_size=3, dtype=np.float64):
    data = images(epochs, dtype)

    def train(torch, nn, F, nets):
        g_step, d_step, optimizers = cyclegan_steps(torch, nn, nets)
        if compiled and torch is kiln:
            g_step, d_step = (kiln.compile(f, fullgraph=True) for f in (g_step, d_step))
        schedulers = linear_decay_schedulers(torch, optimizers)
        fake_A_pool, fake_B_pool = (ImagePool(torch, pool_size, random.Random(seed)) for seed in (1, 2))
        record = {"loss_G": [], "loss_cycle_A": [], "loss_D": [], "lr": [], "pooled": []}
        with torch.no_grad():
            record["first_translation"] = array(nets["G_A"](torch.tensor(data[0, 0])))
        for real_A, real_B in data:
            real_A, real_B = torch.tensor(real_A), torch.tensor(real_B)
            set_requires_grad([nets["D_A"], nets["D_B"]], False)
            loss_G, loss_cycle_A, fake_A, fake_B = g_step(real_A, real_B)
            record.setdefault("generator_grads", gradients(nets))
            set_requires_grad([nets["D_A"], nets["D_B"]], True)
            pooled_A, pooled_B = fake_A_pool.query(fake_A), fake_B_pool.query(fake_B)
            loss_D_A, loss_D_B = d_step(real_A, real_B, pooled_A, pooled_B)
            record.setdefault("discriminator_grads", gradients(nets))
            record["loss_G"].append(loss_G.item())
            record["loss_cycle_A"].append(loss_cycle_A.item())
            record["loss_D"].append([loss_D_A.item(), loss_D_B.item()])
            record["pooled"].append(array(pooled_B))
            for scheduler in schedulers:
                scheduler.step()
            record["lr"].append([optimizer.param_groups[0]["lr"] for optimizer in optimizers])
        record["state"] = snapshot(nets)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-steps"])
def test_cyclegan_trains_as_torch(compiled, float64_default):
    """The norms ``affine=True`` here (their weights and biases trained), ``affine=False`` in the float32 run."""
    ours, theirs = run_in_lockstep(lambda *names: cyclegan(*names, affine=True), train_cyclegan(compiled))
    assert_same_records(ours, theirs, looser={name: dict(rtol=0, atol=1e-8) for name in NORMED_BIASES})
    for name in NORMED_BIASES:  # their gradient is zero up to rounding in both: a real one would move them by ~lr
        assert max(np.abs(ours["state"][name[7:]]).max(), np.abs(theirs["state"][name[7:]]).max()) < 1e-8
    assert np.allclose(theirs["lr"], [[2e-3 * 2 / 3] * 2, [2e-3 / 3] * 2, [0.0] * 2])
    assert 0.01 < np.std(ours["state"]["G_A.model.1.weight"]) < 0.04  # init_weights' normal(0, 0.02) ran in kiln


def test_cyclegan_compiled_step_in_float32_as_torch():
    """float32, as CycleGAN trains: one iteration of the compiled steps against torch's eager loop, each entry to
    5e-4 of its largest value. The instance norms of small maps amplify rounding (measured against torch in float64:
    torch's float32 first gradients up to 1.9e-4 of their scale off, kiln's 6e-5); the norm-cancelled biases take
    lr-sized steps in directions set by rounding in float32 and are only checked to stay within that, as are the
    entries whose gradient is within that rounding of 0 (``set_aside_sign_decided_steps``)."""
    ours, theirs = run_in_lockstep(cyclegan, train_cyclegan(compiled=True, epochs=1, dtype=np.float32))
    assert ours["state"]["G_A.model.1.weight"].dtype == theirs["state"]["G_A.model.1.weight"].dtype == np.float32
    for name in NORMED_BIASES:
        assert max(np.abs(ours["state"][name[7:]]).max(), np.abs(theirs["state"][name[7:]]).max()) <= 2.1e-3
        for entry in ("state", "generator_grads", "discriminator_grads"):  # rounding, as in float64
            for record in (ours, theirs):
                record[entry].pop(name[7:], None)
    set_aside_sign_decided_steps(ours, theirs, 5e-4)
    assert_close_to_scale(ours, theirs, 5e-4)


def set_aside_sign_decided_steps(ours, theirs, fraction, lr=2e-3):
    """Adam's first step is ``lr * g / (|g| + eps)``, lr in the direction of the gradient's sign, so an entry whose
    first gradient is within the gradients' tolerance (``fraction`` of their largest) of 0 may step either way in
    float32: checked to be at most 2 lr apart, then given torch's value. Measured against float64 on an AVX-512 Xeon:
    kiln's float32 gradients up to 6.6e-5 of their scale off, torch's 1.2e-4, so G_B.model.11.conv_block.1.weight
    [13, 13, 1, 0] (3.7e-6 of its scale in float64) stepped 2 lr apart; a sign can only differ below 1.9e-4."""
    for name, value in theirs["state"].items():
        gradient = theirs["generator_grads" if name.startswith("G_") else "discriminator_grads"].get(name)
        if gradient is None:
            continue
        sign_decided = np.abs(gradient) < fraction * np.abs(gradient).max()
        assert np.all(np.abs(ours["state"][name] - value)[sign_decided] <= 2.001 * lr), name
        ours["state"][name] = np.where(sign_decided, value, ours["state"][name])


def assert_close_to_scale(ours, theirs, fraction, where=""):
    """Each array of the records within ``fraction`` of the largest magnitude of torch's."""
    if isinstance(theirs, dict):
        assert set(ours) == set(theirs), f"{where}: keys differ"
        for key in theirs:
            assert_close_to_scale(ours[key], theirs[key], fraction, f"{where}/{key}")
        return
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, where
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=fraction * np.abs(theirs).max(), err_msg=where)
