"""pytorch/examples' generative programs, ``dcgan/main.py`` and ``vae/main.py``, ported to kiln by changing the imports.

Each program is written once against torch-style names (``lib`` is ``torch`` or ``kiln``, ``nn``, ``F`` and ``optim``
likewise) with the original's models and the idioms of its loop; the data is scikit-learn's bundled 8x8 digits instead
of MNIST/CIFAR (the DCGAN's upsampled to 16x16, its nets one stage shorter to match), loaded by
``lib.utils.data.DataLoader`` over a ``TensorDataset``.

- ``dcgan`` (at 16x16, and one iteration at its own 64x64 RGB size): a Generator of ConvTranspose2d + BatchNorm2d +
  ReLU + Tanh and a Discriminator of Conv2d + BatchNorm2d + LeakyReLU(inplace) + Sigmoid, each ``forward`` checking
  ``input.is_cuda``; ``weights_init`` by ``model.apply`` and ``classname.find('Conv')`` with ``nn.init.normal_``/
  ``zeros_`` (or the first version's ``m.weight.data.normal_``); BCELoss; two Adams with ``betas=(0.5, 0.999)``;
  ``torch.full((b,), real_label, dtype=real_cpu.dtype, device=device)``, ``label.fill_``, ``netD(fake.detach())``,
  ``errD_real.backward()`` and ``errD_fake.backward()`` accumulating before one step, ``output.mean().item()``,
  ``torch.randn(b, nz, 1, 1, device=device)``, the device from ``torch.accelerator`` and the state_dicts saved with
  ``torch.save(obj, path)``.
- ``vae``: fc encoder/decoder, ``reparameterize`` by ``torch.exp(0.5*logvar)`` and ``torch.randn_like``,
  ``F.binary_cross_entropy(reduction='sum')`` + KLD, ``model.train()/eval()``, ``torch.no_grad()`` for the test loss,
  ``torch.cat`` of originals and reconstructions, and samples decoded from ``torch.randn(64, Z).to(device)``.

Random draws differ between frameworks, so the lockstep tests replace ``lib.randn``/``lib.randn_like`` with the same
NumPy noise for both (``_fed_noise``); kiln and PyTorch start from the same weights, see the same batches, and their
losses, parameters and buffers agree to ~1e-10 in float64, for PyTorch's loop run eagerly and for kiln's compiled
steps. The unmodified programs, drawing from kiln's own generator, train too (the losses go down; the DCGAN's compiled
steps, fed the same draws, give the eager loop's losses).

kiln: a GAN's two updates compile as two training steps over wrapper modules (``DiscriminatorStep``,
``GeneratorStep``) with ``fake`` computed by ``kiln.compile(netG)``; the eager loop is main.py's as written. The G step
recomputes ``netG(noise)`` (same weights, same values), so netG's BatchNorm running statistics take two updates an
iteration in the compiled path, one in PyTorch's; everything else matches.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import kiln
from oracles import libraries, require_torch

TIGHT = dict(rtol=1e-10, atol=1e-12)
NZ, NGF, NDF, NC = 8, 4, 4, 1
PIXELS, HIDDEN, LATENT = 64, 32, 4


def _libraries(name):
    lib, nn, F = libraries(name)
    return lib, nn, F, lib.optim


# --- dcgan/main.py -------------------------------------------------------------------------------------------------


def dcgan_program(lib, nn):
    """``weights_init``, ``Generator`` and ``Discriminator`` as dcgan/main.py writes them (16x16 images)."""

    def weights_init(m):
        classname = m.__class__.__name__
        if classname.find('Conv') != -1:
            lib.nn.init.normal_(m.weight, 0.0, 0.02)
        elif classname.find('BatchNorm') != -1:
            lib.nn.init.normal_(m.weight, 1.0, 0.02)
            lib.nn.init.zeros_(m.bias)

    class Generator(nn.Module):
        def __init__(self, ngpu):
            super(Generator, self).__init__()
            self.ngpu = ngpu
            self.main = nn.Sequential(
                # input is Z, going into a convolution
                nn.ConvTranspose2d(NZ, NGF * 4, 4, 1, 0, bias=False),
                nn.BatchNorm2d(NGF * 4),
                nn.ReLU(True),
                # state size. (ngf*4) x 4 x 4
                nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(NGF * 2),
                nn.ReLU(True),
                # state size. (ngf*2) x 8 x 8
                nn.ConvTranspose2d(NGF * 2, NC, 4, 2, 1, bias=False),
                nn.Tanh()
                # state size. (nc) x 16 x 16
            )

        def forward(self, input):
            if input.is_cuda and self.ngpu > 1:
                output = nn.parallel.data_parallel(self.main, input, range(self.ngpu))
            else:
                output = self.main(input)
            return output

    class Discriminator(nn.Module):
        def __init__(self, ngpu):
            super(Discriminator, self).__init__()
            self.ngpu = ngpu
            self.main = nn.Sequential(
                # input is (nc) x 16 x 16
                nn.Conv2d(NC, NDF, 4, 2, 1, bias=False),
                nn.LeakyReLU(0.2, inplace=True),
                # state size. (ndf) x 8 x 8
                nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False),
                nn.BatchNorm2d(NDF * 2),
                nn.LeakyReLU(0.2, inplace=True),
                # state size. (ndf*2) x 4 x 4
                nn.Conv2d(NDF * 2, 1, 4, 1, 0, bias=False),
                nn.Sigmoid()
            )

        def forward(self, input):
            if input.is_cuda and self.ngpu > 1:
                output = nn.parallel.data_parallel(self.main, input, range(self.ngpu))
            else:
                output = self.main(input)
            return output.view(-1, 1).squeeze(1)

    return weights_init, Generator, Discriminator


def pick_device(lib, no_accel=False):
    """The device choice of current pytorch/examples: the accelerator if there is one, else the CPU."""
    use_accel = not no_accel and lib.accelerator.is_available()
    return lib.accelerator.current_accelerator() if use_accel else lib.device("cpu")


def dcgan_nets(lib, nn, dtype=None):
    """``netG`` and ``netD`` built, initialised by ``apply(weights_init)`` and moved ``to(device)`` as main.py does."""
    weights_init, Generator, Discriminator = dcgan_program(lib, nn)
    device = pick_device(lib)
    netG, netD = Generator(1).to(device), Discriminator(1).to(device)
    netG.apply(weights_init)
    netD.apply(weights_init)
    return (netG.double(), netD.double()) if dtype == "float64" else (netG, netD)


def dcgan_train(lib, nn, optim, netG, netD, dataloader, lr=0.0002, beta1=0.5):
    """main.py's loop over ``dataloader``: one D update on a real and a fake batch, then one G update. Returns each
    iteration's ``(errD, errG, D_x, D_G_z1, D_G_z2)``."""
    device = pick_device(lib)
    criterion = nn.BCELoss()
    real_label = 1
    fake_label = 0
    optimizerD = optim.Adam(netD.parameters(), lr=lr, betas=(beta1, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=lr, betas=(beta1, 0.999))
    history = []
    for i, data in enumerate(dataloader, 0):
        # (1) Update D network: maximize log(D(x)) + log(1 - D(G(z)))
        netD.zero_grad()
        real_cpu = data[0].to(device)
        batch_size = real_cpu.size(0)
        label = lib.full((batch_size,), real_label, dtype=real_cpu.dtype, device=device)
        output = netD(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()

        noise = lib.randn(batch_size, NZ, 1, 1, device=device)
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        D_G_z1 = output.mean().item()
        errD = errD_real + errD_fake
        optimizerD.step()

        # (2) Update G network: maximize log(D(G(z)))
        netG.zero_grad()
        label.fill_(real_label)  # fake labels are real for generator cost
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        D_G_z2 = output.mean().item()
        optimizerG.step()
        history.append((errD.item(), errG.item(), D_x, D_G_z1, D_G_z2))
    return history


def _gan_images(count: int, offset: int = 0) -> np.ndarray:
    """Digits upsampled to 16x16 and scaled to [-1, 1] (``Normalize((0.5,), (0.5,))`` of ``ToTensor``'s [0, 1])."""
    from kiln.runtime.data import load_digits

    x, _ = load_digits()
    images = np.kron(x[offset:offset + count].reshape(-1, 8, 8), np.ones((2, 2)))[:, None]
    return (images - 0.5) / 0.5


def _dataloader(lib, images: np.ndarray, batch_size: int, dtype=np.float64, shuffle=False):
    """``lib.utils.data.DataLoader`` over the images and (unused) labels, as main.py's (in order for the lockstep tests:
    both frameworks see the same batches)."""
    import importlib

    data = importlib.import_module(f"{lib.__name__}.utils.data")
    dataset = data.TensorDataset(lib.tensor(images.astype(dtype)), lib.tensor(np.zeros(len(images), np.int64)))
    return data.DataLoader(dataset, batch_size=batch_size, shuffle=shuffle)


@contextlib.contextmanager
def _fed_noise(lib, name: str, draws):
    """``lib.<name>`` (``randn``, ``randn_like``) gives the next of ``draws`` (an array becomes a ``lib`` tensor; a traced
    step input is given as it is) instead of a random one: both frameworks see the same noise."""
    original, draws = getattr(lib, name), iter(draws)
    setattr(lib, name, lambda *args, **kwargs: _as_tensor(lib, next(draws)))
    try:
        yield
    finally:
        setattr(lib, name, original)


def _as_tensor(lib, draw):
    return lib.tensor(draw) if isinstance(draw, np.ndarray) else draw


def _same_weights(torch, model, twin) -> None:
    """PyTorch's twin takes kiln's initial weights (a kiln state_dict loads into torch by name, as arrays)."""
    twin.load_state_dict({name: torch.tensor(np.array(value)) for name, value in model.state_dict().items()})


def _assert_same_state(model, twin, names=None) -> None:
    theirs = twin.state_dict()
    for name, value in model.state_dict().items():
        if names is None or name in names:
            np.testing.assert_allclose(np.asarray(value), theirs[name].numpy(), **TIGHT, err_msg=name)


def _assert_same_grads(model, twin) -> None:
    """The ``.grad`` the last iteration left: errG's for netG, errD's plus errG's for netD (its zero_grad comes next)."""
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), **TIGHT, err_msg=name)


def _dcgan_twins(torch):
    kiln.manual_seed(0)
    netG, netD = dcgan_nets(kiln, kiln.nn, "float64")
    twinG, twinD = dcgan_nets(torch, torch.nn, "float64")
    _same_weights(torch, netG, twinG)
    _same_weights(torch, netD, twinD)
    return netG, netD, twinG, twinD


def legacy_weights_init(m):
    """The first dcgan/main.py's initialisation, through ``.data``: ``m.weight.data.normal_(0.0, 0.02)``..."""
    classname = m.__class__.__name__
    if classname.find('Conv') != -1:
        m.weight.data.normal_(0.0, 0.02)
    elif classname.find('BatchNorm') != -1:
        m.weight.data.normal_(1.0, 0.02)
        m.bias.data.fill_(0)


@pytest.mark.parametrize("legacy", [False, True], ids=["nn.init", "data.normal_"])
def test_dcgan_weights_init_draws_torchs_distribution(legacy):
    kiln.manual_seed(0)
    weights_init, Generator, Discriminator = dcgan_program(kiln, kiln.nn)
    netG, netD = Generator(1), Discriminator(1)
    netG.main[1].bias.data += 1.0  # so that zeros show the initialisation ran
    netG.apply(legacy_weights_init if legacy else weights_init)
    netD.apply(legacy_weights_init if legacy else weights_init)
    conv = np.concatenate([netG.main[0].weight.data.ravel(), netD.main[2].weight.data.ravel()])
    assert abs(conv.mean()) < 0.004 and 0.018 < conv.std() < 0.022
    assert np.all(netG.main[1].bias.data == 0) and np.all(np.abs(netG.main[1].weight.data - 1.0) < 0.1)
    assert netG.main[1].weight.data.std() > 0  # drawn, not left at PyTorch's default of ones


def test_dcgan_eager_loop_matches_torch_in_float64(tmp_path):
    torch = require_torch()
    netG, netD, twinG, twinD = _dcgan_twins(torch)
    assert (repr(netG), repr(netD)) == (repr(twinG), repr(twinD))  # print(netG), print(netD)
    images = _gan_images(48)
    noise = np.random.default_rng(0).normal(size=(3, 16, NZ, 1, 1))
    with _fed_noise(kiln, "randn", noise):
        ours = dcgan_train(kiln, kiln.nn, kiln.optim, netG, netD, _dataloader(kiln, images, 16))
    with _fed_noise(torch, "randn", noise):
        theirs = dcgan_train(torch, torch.nn, torch.optim, twinG, twinD, _dataloader(torch, images, 16))
    np.testing.assert_allclose(ours, theirs, **TIGHT)
    _assert_same_state(netG, twinG)
    _assert_same_state(netD, twinD)
    _assert_same_grads(netG, twinG)
    _assert_same_grads(netD, twinD)
    kiln.save(netG.state_dict(), tmp_path / "netG_epoch_0.pth")  # torch.save's order
    restored, _ = dcgan_nets(kiln, kiln.nn, "float64")
    restored.load_state_dict(kiln.load(tmp_path / "netG_epoch_0.pth"))
    _assert_same_state(restored, twinG)


def original_size_nets(lib, nn, nz=100, ngf=64, ndf=64, nc=3):
    """main.py's nets at their own sizes (64x64 RGB images, nz=100), as ``nn.Sequential``s of its layers."""
    netG = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())
    body = nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())
    netD = nn.Sequential(body, nn.Flatten(0))  # output.view(-1, 1).squeeze(1)
    return netG.double(), netD.double()


def test_dcgan_at_its_original_size_matches_torch_for_an_iteration():
    """All five stages, 64x64 RGB, nz=100 (ngf = ndf = 16, not 64, for test time): one iteration of the loop, batch 2, in
    float64. Adam's first step is g / (|g| + eps): where a gradient is near eps its last bits show, so the weights are
    compared to 1e-10 absolute (of weights ~0.02)."""
    torch = require_torch()
    kiln.manual_seed(5)
    (netG, netD), (twinG, twinD) = original_size_nets(kiln, kiln.nn, ngf=16, ndf=16), original_size_nets(torch, torch.nn, ngf=16, ndf=16)
    _same_weights(torch, netG, twinG)
    _same_weights(torch, netD, twinD)
    rng = np.random.default_rng(5)
    images, noise = np.tanh(rng.normal(size=(2, 3, 64, 64))), rng.normal(size=(1, 2, 100, 1, 1))
    with _fed_noise(kiln, "randn", noise):
        ours = dcgan_train(kiln, kiln.nn, kiln.optim, netG, netD, _dataloader(kiln, images, 2))
    with _fed_noise(torch, "randn", noise):
        theirs = dcgan_train(torch, torch.nn, torch.optim, twinG, twinD, _dataloader(torch, images, 2))
    np.testing.assert_allclose(ours, theirs, **TIGHT)
    for model, twin in ((netG, twinG), (netD, twinD)):
        for name, value in twin.state_dict().items():
            np.testing.assert_allclose(np.asarray(model.state_dict()[name]), value.numpy(), rtol=1e-10, atol=1e-10, err_msg=name)
        _assert_same_grads(model, twin)


class DiscriminatorStep(kiln.nn.Module):
    """kiln: the D update as one compiled step: ``netD`` on the real batch and on the (detached) fake one."""

    def __init__(self, netD):
        super().__init__()
        self.netD = netD

    def forward(self, real, fake):
        return self.netD(real), self.netD(fake)


class GeneratorStep(kiln.nn.Module):
    """kiln: the G update as one compiled step: ``netD(netG(noise))``; only netG's optimizer updates it."""

    def __init__(self, netG, netD):
        super().__init__()
        self.netG, self.netD = netG, netD

    def forward(self, noise):
        return self.netD(self.netG(noise))


def discriminator_loss(outputs, label):
    """errD_real + errD_fake: ``label`` is the real batch's (ones); the fake one's are zeros."""
    criterion = kiln.nn.BCELoss()
    real, fake = outputs
    return criterion(real, label) + criterion(fake, kiln.zeros_like(label))


def compiled_dcgan_steps(netG, netD, lr=0.0002, beta1=0.5):
    """The generator's forward, the D step and the G step, each compiled once."""
    optimizerD = kiln.optim.Adam(netD.parameters(), lr=lr, betas=(beta1, 0.999))
    optimizerG = kiln.optim.Adam(netG.parameters(), lr=lr, betas=(beta1, 0.999))
    generate = kiln.compile(netG)
    step_d = kiln.compile_train_step(DiscriminatorStep(netD), discriminator_loss, optimizerD)
    step_g = kiln.compile_train_step(GeneratorStep(netG, netD), kiln.nn.BCELoss(), optimizerG)
    return generate, step_d, step_g


def test_dcgan_compiled_steps_match_torch_in_float64():
    """The compiled D step sees netG's output as data (``fake.detach()``); the G step recomputes it from the same noise
    and weights. netG's BatchNorm running statistics are therefore updated twice an iteration (by ``generate`` and by
    the G step), PyTorch's once: the check covers every parameter, netD's buffers, and the losses."""
    torch = require_torch()
    netG, netD, twinG, twinD = _dcgan_twins(torch)
    images = _gan_images(48)
    noise = np.random.default_rng(1).normal(size=(3, 16, NZ, 1, 1))
    generate, step_d, step_g = compiled_dcgan_steps(netG, netD)
    ones = np.ones(16)
    ours = []
    for (real, _), z in zip(_dataloader(kiln, images, 16), noise):
        fake = generate(z)
        ours.append((step_d(real, fake, ones), step_g(z, ones)))
    with _fed_noise(torch, "randn", noise):
        theirs = dcgan_train(torch, torch.nn, torch.optim, twinG, twinD, _dataloader(torch, images, 16))
    np.testing.assert_allclose(ours, [row[:2] for row in theirs], **TIGHT)
    _assert_same_state(netD, twinD)
    _assert_same_state(netG, twinG, names={name for name, _ in netG.named_parameters()})


def test_unmodified_dcgan_trains_eagerly_and_compiled_alike():
    """With kiln's own ``randn`` and a shuffling DataLoader: D learns to tell the digits from G's samples (its loss falls,
    D(x) - D(G(z)) opens up), and the compiled steps, drawing the same numbers from the same seed, give the same losses."""
    kiln.manual_seed(3)
    netG, netD = dcgan_nets(kiln, kiln.nn)
    dataloader = _dataloader(kiln, np.tile(_gan_images(64), (3, 1, 1, 1)), 32, np.float32, shuffle=True)
    errD, errG, D_x, D_G_z1, _ = np.array(dcgan_train(kiln, kiln.nn, kiln.optim, netG, netD, dataloader, lr=0.002)).T
    assert errD[-2:].mean() < 0.92 * errD[:2].mean() and D_x[-1] - D_G_z1[-1] > 0.1
    kiln.manual_seed(3)
    netG, netD = dcgan_nets(kiln, kiln.nn)
    generate, step_d, step_g = compiled_dcgan_steps(netG, netD, lr=0.002)
    ones, losses = np.ones(32, np.float32), []
    for real, _ in dataloader:
        noise = kiln.randn(32, NZ, 1, 1)
        losses.append((step_d(real, generate(noise), ones), step_g(noise, ones)))
    np.testing.assert_allclose(losses, np.stack([errD, errG], 1), rtol=1e-4)


# --- vae/main.py ---------------------------------------------------------------------------------------------------


def vae_program(lib, nn, F):
    """``VAE`` and ``loss_function`` as vae/main.py writes them (64 pixels, not 784)."""

    class VAE(nn.Module):
        def __init__(self):
            super(VAE, self).__init__()
            self.fc1 = nn.Linear(PIXELS, HIDDEN)
            self.fc21 = nn.Linear(HIDDEN, LATENT)
            self.fc22 = nn.Linear(HIDDEN, LATENT)
            self.fc3 = nn.Linear(LATENT, HIDDEN)
            self.fc4 = nn.Linear(HIDDEN, PIXELS)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = lib.exp(0.5 * logvar)
            eps = lib.randn_like(std)
            return mu + eps * std

        def decode(self, z):
            h3 = F.relu(self.fc3(z))
            return lib.sigmoid(self.fc4(h3))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, PIXELS))
            z = self.reparameterize(mu, logvar)
            return self.decode(z), mu, logvar

    # Reconstruction + KL divergence losses summed over all elements and batch
    def loss_function(recon_x, x, mu, logvar):
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, PIXELS), reduction='sum')
        # 0.5 * sum(1 + log(sigma^2) - mu^2 - sigma^2)
        KLD = -0.5 * lib.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return BCE + KLD

    return VAE, loss_function


def vae_epoch(lib, model, loss_function, optimizer, train_loader, test_loader, sample=None):
    """main.py's ``train(epoch)``, ``test(epoch)`` and the sampling after them: returns the train loss per batch, the
    test loss, the comparison grid's shape and the samples."""
    device = pick_device(lib)
    model.train()
    losses = []
    for batch_idx, (data, _) in enumerate(train_loader):
        data = data.to(device)
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        losses.append(loss.item())
        optimizer.step()
    model.eval()
    test_loss = 0
    with lib.no_grad():
        for i, (data, _) in enumerate(test_loader):
            data = data.to(device)
            recon_batch, mu, logvar = model(data)
            test_loss += loss_function(recon_batch, data, mu, logvar).item()
            if i == 0:
                n = min(data.size(0), 8)
                comparison = lib.cat([data[:n], recon_batch.view(data.size(0), 1, 8, 8)[:n]])
    with lib.no_grad():
        sample = lib.randn(16, LATENT).to(device) if sample is None else sample
        sample = model.decode(sample).cpu()
    return losses, test_loss, tuple(comparison.shape), np.asarray(sample.view(16, 1, 8, 8))


def _vae_loaders(lib, dtype=np.float64, batch_size=32):
    """Digits in [0, 1] (``ToTensor``'s range), as ``(N, 1, 8, 8)``: 128 to train on, 32 to test."""
    from kiln.runtime.data import load_digits

    x, y = load_digits()
    images = x.reshape(-1, 1, 8, 8).astype(dtype)
    train, test = images[:128], images[128:160]
    return _dataloader(lib, train, batch_size, dtype), _dataloader(lib, test, batch_size, dtype)


def _vae_twins(torch):
    kiln.manual_seed(4)
    VAE, loss_function = vae_program(kiln, kiln.nn, kiln.nn.functional)
    TorchVAE, torch_loss = vae_program(torch, torch.nn, torch.nn.functional)
    model, twin = VAE().double(), TorchVAE().double()
    _same_weights(torch, model, twin)
    return model, loss_function, twin, torch_loss


def test_vae_eager_epoch_matches_torch_in_float64():
    torch = require_torch()
    model, loss_function, twin, torch_loss = _vae_twins(torch)
    rng = np.random.default_rng(5)
    eps = rng.normal(size=(5, 32, LATENT))  # four train batches, one test batch
    sample = rng.normal(size=(16, LATENT))
    with _fed_noise(kiln, "randn_like", eps):
        ours = vae_epoch(kiln, model, loss_function, kiln.optim.Adam(model.parameters(), lr=1e-3), *_vae_loaders(kiln), kiln.tensor(sample))
    with _fed_noise(torch, "randn_like", eps):
        theirs = vae_epoch(torch, twin, torch_loss, torch.optim.Adam(twin.parameters(), lr=1e-3), *_vae_loaders(torch), torch.tensor(sample))
    np.testing.assert_allclose(ours[0], theirs[0], **TIGHT)
    assert ours[1] == pytest.approx(theirs[1], rel=1e-10) and ours[2] == theirs[2] == (16, 1, 8, 8)
    np.testing.assert_allclose(ours[3], theirs[3], **TIGHT)
    _assert_same_state(model, twin)


class VAEWithFedNoise(kiln.nn.Module):
    """kiln: the VAE with ``eps`` as a step input instead of ``randn_like``'s draw, for the lockstep check only."""

    def __init__(self, vae):
        super().__init__()
        self.vae = vae

    def forward(self, x, eps):
        with _fed_noise(kiln, "randn_like", [eps]):
            return self.vae(x)


def test_vae_compiled_step_matches_torch_in_float64():
    torch = require_torch()
    model, loss_function, twin, torch_loss = _vae_twins(torch)
    eps = np.random.default_rng(6).normal(size=(4, 32, LATENT))
    step = kiln.compile_train_step(VAEWithFedNoise(model), lambda out, x: loss_function(out[0], x, *out[1:]), kiln.optim.Adam(model.parameters(), lr=1e-3))
    train_loader, _ = _vae_loaders(kiln)
    ours = [step(data, noise, data) for (data, _), noise in zip(train_loader, eps)]
    torch_train, _ = _vae_loaders(torch)
    optimizer, theirs = torch.optim.Adam(twin.parameters(), lr=1e-3), []
    with _fed_noise(torch, "randn_like", eps):
        for data, _ in torch_train:
            optimizer.zero_grad()
            recon_batch, mu, logvar = twin(data)
            loss = torch_loss(recon_batch, data, mu, logvar)
            loss.backward()
            optimizer.step()
            theirs.append(loss.item())
    np.testing.assert_allclose(ours, theirs, **TIGHT)
    _assert_same_state(model, twin)


def test_unmodified_vae_trains_eagerly_and_compiled():
    """With kiln's own ``randn_like`` (eagerly from kiln's generator, compiled from the step's seed) the loss falls."""
    kiln.manual_seed(7)
    VAE, loss_function = vae_program(kiln, kiln.nn, kiln.nn.functional)
    model = VAE()
    optimizer = kiln.optim.Adam(model.parameters(), lr=1e-2)
    train_loader, test_loader = _vae_loaders(kiln, np.float32)
    first = vae_epoch(kiln, model, loss_function, optimizer, train_loader, test_loader)
    for _ in range(3):
        last = vae_epoch(kiln, model, loss_function, optimizer, train_loader, test_loader)
    assert np.mean(last[0]) < 0.9 * np.mean(first[0]) and last[1] < first[1]
    assert np.all((last[3] > 0) & (last[3] < 1))
    z = kiln.randn(16, LATENT)
    np.testing.assert_allclose(kiln.compile(model.decode)(z), np.asarray(model.decode(z)), rtol=1e-5, atol=1e-6)
    compiled = VAE()
    step = kiln.compile_train_step(compiled, lambda out, x: loss_function(out[0], x, *out[1:]), kiln.optim.Adam(compiled.parameters(), lr=1e-2))
    losses = [float(step(data, data)) for _ in range(4) for data, _ in train_loader]
    assert np.mean(losses[-4:]) < 0.9 * np.mean(losses[:4])
