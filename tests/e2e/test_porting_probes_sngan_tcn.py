"""Porting probes: SNGAN and a Temporal Convolutional Network, each written once as PyTorch users write them (``torch``
is ``torch`` or ``kiln``) and run in both from kiln's initial state: in float64 the first outputs and gradients, the
losses and the whole state after a few steps (the spectral norm's ``weight_orig``/``weight_u``/``weight_v``, weight
norm's ``g``/``v``, BatchNorm's statistics) agree to 1e-10, eagerly and with each training step one
``kiln.compile(fullgraph=True)`` graph against torch's eager loop; a float32 run agrees at float32's level.

- SNGAN (christiancosgrove's pytorch-spectral-normalization-gan ``model_resnet.py`` and ``main.py``, with
  ``torch.nn.utils.spectral_norm`` on every discriminator layer, or the new-style
  ``torch.nn.utils.parametrizations.spectral_norm``): a ResNet generator (``BatchNorm2d``, ``ReLU``,
  ``nn.Upsample(scale_factor=2)``, 3x3 convs, the bypass added, ``Tanh``) and discriminator (``AvgPool2d(2)``, a 1x1
  bypass conv, a spectrally normalized ``Linear``); the hinge loss ``nn.ReLU()(1.0 - D(x)).mean() + nn.ReLU()(1.0 +
  D(G(z))).mean()`` (the discriminator called twice before ``backward()``: each call runs a power iteration, and the
  first call's gradient must use its own ``u``/``v``) and ``-D(G(z)).mean()``, ``Adam(filter(lambda p:
  p.requires_grad, ...), betas=(0.0, 0.9))``, ``ExponentialLR(gamma=0.99)``; then the discriminator in eval mode (no
  power iteration: the buffers stay) and ``remove_spectral_norm``.
- TCN (locuslab/TCN ``tcn.py`` and the adding problem's ``model.py``/``add_test.py``): ``weight_norm(nn.Conv1d(...))``
  (the legacy form, or the new-style parametrization), ``Chomp1d`` (``x[:, :, :-self.chomp_size].contiguous()``),
  dilated causal convs (``padding=(kernel_size-1) * dilation``), the residual 1x1 ``downsample``, ``init_weights``'s
  ``self.conv1.weight.data.normal_(0, 0.01)`` (on the computed weight: no effect in either library, as in PyTorch),
  the last time step to a ``Linear``, ``F.mse_loss``, ``clip_grad_norm_``, Adam; eval mode after.

The generator's layers whose output reaches a BatchNorm before anything else (``dense``, and both convs of its
residual block, whose sum feeds the final ``BatchNorm2d``) are ``bias=False``: such a bias's gradient is rounding
noise (the norm subtracts the mean), which Adam divides by its own size, so the bias moved by steps set by the last
bits of each library's sums (measured with the biases: 2e-12 apart after 2 iterations in float64, 7% in float32).

What broke (fixes tested vs torch in ``tests/frontend/test_spectral_norm_legacy_vs_torch.py``):
- kiln had no legacy ``torch.nn.utils.spectral_norm`` (only the parametrization); it now has it
  (``frontend/spectral_norm_legacy.py``).
- The parametrization's ``spectral_norm`` computed sigma from the ``_u``/``_v`` buffers themselves, so the
  discriminator's second call (on the fakes) rewrote the vectors the first call's gradient was replayed from: the
  eager hinge-loss gradients were silently ~1e-4 off. It now uses copies, as PyTorch's (the compiled step was right).
- A buffer's eager ``copy_`` did not count as an update, so ``backward()`` of a graph that read the buffer before it
  replayed the new values (PyTorch refuses that with its version counter); now refused as after ``mul_``. And
  ``clone()`` of a tensor without gradient (a buffer, or under ``no_grad``) kept a chain back to its source, so a
  write to the source after the clone reached ``backward()``; it is a leaf now, as in PyTorch.
- The legacy ``nn.utils.weight_norm`` now warns PyTorch 2.13's ``FutureWarning``.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot

pytestmark = pytest.mark.filterwarnings("ignore:`(torch|kiln).nn.utils.weight_norm` is deprecated:FutureWarning")

Z_DIM, CHANNELS, IMAGE, BATCH = 6, 3, 8, 4
FLOAT32 = dict(rtol=2e-4, atol=2e-5)


def floats(torch, values):
    """A tensor of ``values`` in the default float dtype (the draws are float64 arrays)."""
    return torch.tensor(values, dtype=torch.get_default_dtype())


# --- SNGAN -----------------------------------------------------------------------------------------------------------


def sngan(torch, nn, F, new_style=False, gen_size=6, disc_size=6):
    SpectralNorm = nn.utils.parametrizations.spectral_norm if new_style else nn.utils.spectral_norm

    class ResBlockGenerator(nn.Module):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, padding=1, bias=False)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
            self.model = nn.Sequential(nn.BatchNorm2d(in_channels), nn.ReLU(), nn.Upsample(scale_factor=2), self.conv1,
                                       nn.BatchNorm2d(out_channels), nn.ReLU(), self.conv2)
            self.bypass = nn.Sequential()
            if stride != 1:
                self.bypass = nn.Upsample(scale_factor=2)

        def forward(self, x):
            return self.model(x) + self.bypass(x)

    class ResBlockDiscriminator(nn.Module):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, padding=1)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1)
            if stride == 1:
                self.model = nn.Sequential(nn.ReLU(), SpectralNorm(self.conv1), nn.ReLU(), SpectralNorm(self.conv2))
            else:
                self.model = nn.Sequential(nn.ReLU(), SpectralNorm(self.conv1), nn.ReLU(), SpectralNorm(self.conv2),
                                           nn.AvgPool2d(2, stride=stride, padding=0))
            self.bypass = nn.Sequential()
            if stride != 1:
                self.bypass_conv = nn.Conv2d(in_channels, out_channels, 1, 1, padding=0)
                self.bypass = nn.Sequential(SpectralNorm(self.bypass_conv), nn.AvgPool2d(2, stride=stride, padding=0))

        def forward(self, x):
            return self.model(x) + self.bypass(x)

    class FirstResBlockDiscriminator(nn.Module):
        def __init__(self, in_channels, out_channels, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, padding=1)
            self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1)
            self.bypass_conv = nn.Conv2d(in_channels, out_channels, 1, 1, padding=0)
            self.model = nn.Sequential(SpectralNorm(self.conv1), nn.ReLU(), SpectralNorm(self.conv2), nn.AvgPool2d(2))
            self.bypass = nn.Sequential(nn.AvgPool2d(2), SpectralNorm(self.bypass_conv))

        def forward(self, x):
            return self.model(x) + self.bypass(x)

    class Generator(nn.Module):
        def __init__(self, z_dim):
            super().__init__()
            self.z_dim = z_dim
            self.dense = nn.Linear(self.z_dim, 4 * 4 * gen_size, bias=False)
            self.final = nn.Conv2d(gen_size, CHANNELS, 3, stride=1, padding=1)
            self.model = nn.Sequential(ResBlockGenerator(gen_size, gen_size, stride=2), nn.BatchNorm2d(gen_size),
                                       nn.ReLU(), self.final, nn.Tanh())

        def forward(self, z):
            return self.model(self.dense(z).view(-1, gen_size, 4, 4))

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = nn.Sequential(FirstResBlockDiscriminator(CHANNELS, disc_size, stride=2),
                                       ResBlockDiscriminator(disc_size, disc_size),
                                       nn.ReLU(), nn.AvgPool2d(4))
            self.fc = nn.Linear(disc_size, 1)
            self.fc = SpectralNorm(self.fc)

        def forward(self, x):
            return self.fc(self.model(x).view(-1, disc_size))

    return nn.ModuleDict({"generator": Generator(Z_DIM), "discriminator": Discriminator()})


def _gan_draws(iterations, disc_iters):
    rng = np.random.default_rng(3)
    data = np.tanh(rng.standard_normal((iterations, BATCH, CHANNELS, IMAGE, IMAGE)))
    return data, rng.standard_normal((iterations, disc_iters + 1, BATCH, Z_DIM))


def sngan_steps(torch, nn, generator, discriminator, optim_disc, optim_gen):
    """main.py's two updates (hinge loss), each zeroing both optimizers first."""

    def disc_step(data, z):
        optim_disc.zero_grad()
        optim_gen.zero_grad()
        disc_loss = nn.ReLU()(1.0 - discriminator(data)).mean() + nn.ReLU()(1.0 + discriminator(generator(z))).mean()
        disc_loss.backward()
        optim_disc.step()
        return disc_loss.detach()

    def gen_step(z):
        optim_disc.zero_grad()
        optim_gen.zero_grad()
        gen_loss = -discriminator(generator(z)).mean()
        gen_loss.backward()
        optim_gen.step()
        return gen_loss.detach()

    return disc_step, gen_step


def train_sngan(compiled=False, iterations=2, disc_iters=1):
    data, zs = _gan_draws(iterations, disc_iters)

    def train(torch, nn, F, both):
        generator, discriminator = both["generator"], both["discriminator"]
        optim_disc = torch.optim.Adam(filter(lambda p: p.requires_grad, discriminator.parameters()), lr=2e-3, betas=(0.0, 0.9))
        optim_gen = torch.optim.Adam(generator.parameters(), lr=2e-3, betas=(0.0, 0.9))
        scheduler_d = torch.optim.lr_scheduler.ExponentialLR(optim_disc, gamma=0.99)
        scheduler_g = torch.optim.lr_scheduler.ExponentialLR(optim_gen, gamma=0.99)
        disc_step, gen_step = sngan_steps(torch, nn, generator, discriminator, optim_disc, optim_gen)
        if compiled and torch is kiln:
            disc_step, gen_step = (kiln.compile(f, fullgraph=True) for f in (disc_step, gen_step))
        record = {"disc_losses": [], "gen_losses": []}
        for it in range(iterations):
            for d_it in range(disc_iters):
                record["disc_losses"].append(disc_step(floats(torch, data[it]), floats(torch, zs[it, d_it])).item())
                if not compiled:
                    record.setdefault("disc_grads", gradients(discriminator))
            record["gen_losses"].append(gen_step(floats(torch, zs[it, disc_iters])).item())
            if not compiled:
                record.setdefault("gen_grads", gradients(generator))
            scheduler_d.step()
            scheduler_g.step()
        record["state"] = snapshot(both)
        discriminator.eval()
        with torch.no_grad():
            record["eval_scores"] = array(discriminator(floats(torch, data[0])))
            record["eval_samples"] = array(generator.eval()(floats(torch, zs[0, 0])))
        record["state_after_eval"] = snapshot(discriminator)
        return record

    return train


def _sngan_build(new_style):
    return lambda torch, nn, F: sngan(torch, nn, F, new_style=new_style)


STYLES = {"nn.utils.spectral_norm": False, "parametrizations.spectral_norm": True}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-steps"])
@pytest.mark.parametrize("style", STYLES)
def test_sngan_trains_as_torch(style, compiled, float64_default):
    ours, theirs = run_in_lockstep(_sngan_build(STYLES[style]), train_sngan(compiled))
    assert_same_records(ours, theirs)
    state = theirs["state"]
    assert ("discriminator.fc.weight_u" in state) != STYLES[style]
    for key, value in theirs["state_after_eval"].items():  # eval mode runs no power iteration
        np.testing.assert_array_equal(value, state[f"discriminator.{key}"], err_msg=key)


def test_sngan_trains_as_torch_in_float32():
    ours, theirs = run_in_lockstep(_sngan_build(False), train_sngan(compiled=True, iterations=1))
    assert ours["state"]["discriminator.fc.weight_u"].dtype == np.float32
    assert_same_records(ours, theirs, **FLOAT32)


def _spectral_norms(torch, discriminator):
    """The largest singular value of each ``weight_orig`` matrix and the power iteration's estimate of it."""
    found = {}
    for name, module in discriminator.named_modules():
        if hasattr(module, "weight_orig"):
            matrix = module.weight_orig.detach().reshape(module.weight_orig.shape[0], -1)
            estimate = (module.weight_u * (matrix @ module.weight_v)).sum()
            found[name] = (np.linalg.norm(array(matrix), 2), estimate.item())
    return found


def test_remove_spectral_norm_after_training_as_torch(float64_default):
    """``remove_spectral_norm`` on every layer after training: a plain ``weight`` holding ``weight_orig / sigma``;
    the stored vectors estimate the largest singular value (checked against NumPy's)."""

    def train(torch, nn, F, both):
        record = train_sngan(iterations=1)(torch, nn, F, both)
        discriminator = both["discriminator"]
        norms = _spectral_norms(torch, discriminator)
        for module in discriminator.modules():
            if hasattr(module, "weight_orig"):
                torch.nn.utils.remove_spectral_norm(module)
        return {"trained": record, "norms": norms, "state": snapshot(discriminator),
                "scores": array(discriminator(floats(torch, _gan_draws(1, 1)[0][0])))}

    ours, theirs = run_in_lockstep(_sngan_build(False), train)
    assert_same_records(ours, theirs)
    assert not any(key.endswith(("_orig", "_u", "_v")) for key in theirs["state"])
    for exact, estimate in theirs["norms"].values():
        assert estimate == pytest.approx(exact, rel=0.2)


# --- TCN -------------------------------------------------------------------------------------------------------------


def tcn(torch, nn, F, new_style=False, input_size=2, num_channels=(5, 5, 6), kernel_size=3, dropout=0.0):
    weight_norm = nn.utils.parametrizations.weight_norm if new_style else nn.utils.weight_norm

    class Chomp1d(nn.Module):
        def __init__(self, chomp_size):
            super().__init__()
            self.chomp_size = chomp_size

        def forward(self, x):
            return x[:, :, :-self.chomp_size].contiguous()

    class TemporalBlock(nn.Module):
        def __init__(self, n_inputs, n_outputs, kernel_size, stride, dilation, padding, dropout=0.2):
            super().__init__()
            self.conv1 = weight_norm(nn.Conv1d(n_inputs, n_outputs, kernel_size, stride=stride, padding=padding, dilation=dilation))
            self.chomp1 = Chomp1d(padding)
            self.relu1 = nn.ReLU()
            self.dropout1 = nn.Dropout(dropout)
            self.conv2 = weight_norm(nn.Conv1d(n_outputs, n_outputs, kernel_size, stride=stride, padding=padding, dilation=dilation))
            self.chomp2 = Chomp1d(padding)
            self.relu2 = nn.ReLU()
            self.dropout2 = nn.Dropout(dropout)
            self.net = nn.Sequential(self.conv1, self.chomp1, self.relu1, self.dropout1,
                                     self.conv2, self.chomp2, self.relu2, self.dropout2)
            self.downsample = nn.Conv1d(n_inputs, n_outputs, 1) if n_inputs != n_outputs else None
            self.relu = nn.ReLU()
            self.init_weights()

        def init_weights(self):
            self.conv1.weight.data.normal_(0, 0.01)
            self.conv2.weight.data.normal_(0, 0.01)
            if self.downsample is not None:
                self.downsample.weight.data.normal_(0, 0.01)

        def forward(self, x):
            out = self.net(x)
            res = x if self.downsample is None else self.downsample(x)
            return self.relu(out + res)

    class TemporalConvNet(nn.Module):
        def __init__(self, num_inputs, num_channels, kernel_size=2, dropout=0.2):
            super().__init__()
            layers = []
            num_levels = len(num_channels)
            for i in range(num_levels):
                dilation_size = 2 ** i
                in_channels = num_inputs if i == 0 else num_channels[i - 1]
                out_channels = num_channels[i]
                layers += [TemporalBlock(in_channels, out_channels, kernel_size, stride=1, dilation=dilation_size,
                                         padding=(kernel_size - 1) * dilation_size, dropout=dropout)]
            self.network = nn.Sequential(*layers)

        def forward(self, x):
            return self.network(x)

    class TCN(nn.Module):
        def __init__(self, input_size, output_size, num_channels, kernel_size, dropout):
            super().__init__()
            self.tcn = TemporalConvNet(input_size, num_channels, kernel_size=kernel_size, dropout=dropout)
            self.linear = nn.Linear(num_channels[-1], output_size)
            self.init_weights()

        def init_weights(self):
            self.linear.weight.data.normal_(0, 0.01)

        def forward(self, x):
            y1 = self.tcn(x)
            return self.linear(y1[:, :, -1])

    return TCN(input_size, 1, list(num_channels), kernel_size, dropout)


def data_generator(N, seq_length, rng):
    """The adding problem (TCN/adding_problem/utils.py) from NumPy draws: random values and two marked positions."""
    X_num = rng.uniform(0, 1, (N, 1, seq_length))
    X_mask = np.zeros((N, 1, seq_length))
    Y = np.zeros((N, 1))
    for i in range(N):
        positions = rng.choice(seq_length, size=2, replace=False)
        X_mask[i, 0, positions[0]] = 1
        X_mask[i, 0, positions[1]] = 1
        Y[i, 0] = X_num[i, 0, positions[0]] + X_num[i, 0, positions[1]]
    return np.concatenate((X_num, X_mask), axis=1), Y


SEQ_LENGTH, TCN_BATCH = 12, 5


def train_tcn(compiled=False, steps=3, clip=0.5):
    x_train, y_train = data_generator(TCN_BATCH * steps, SEQ_LENGTH, np.random.default_rng(4))

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=4e-3)

        def train_step(x, y):
            optimizer.zero_grad()
            output = model(x)
            loss = F.mse_loss(output, y)
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            return loss.detach(), output.detach()

        run = kiln.compile(train_step, fullgraph=True) if compiled and torch is kiln else train_step
        record = {"losses": [], "outputs": []}
        for i in range(0, TCN_BATCH * steps, TCN_BATCH):
            loss, output = run(floats(torch, x_train[i:i + TCN_BATCH]), floats(torch, y_train[i:i + TCN_BATCH]))
            record["losses"].append(loss.item())
            record["outputs"].append(array(output))
            record.setdefault("grads", gradients(model))
        record["state"] = snapshot(model)
        model.eval()
        with torch.no_grad():
            record["eval"] = array(model(floats(torch, x_train[:TCN_BATCH])))
            chomped = model.tcn.network[0].chomp1
            probe = floats(torch, np.arange(24.0).reshape(2, 3, 4))
            record["chomp"] = array(chomped(probe))
            record["layout"] = [probe[:, :, :-chomped.chomp_size].is_contiguous(), chomped(probe).is_contiguous(),
                                chomped(probe).stride()]
        return record

    return train


def _tcn_build(new_style):
    return lambda torch, nn, F: tcn(torch, nn, F, new_style=new_style)


NORMS = {"nn.utils.weight_norm": False, "parametrizations.weight_norm": True}


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-step"])
@pytest.mark.parametrize("norm", NORMS)
def test_tcn_adding_problem_trains_as_torch(norm, compiled, float64_default):
    ours, theirs = run_in_lockstep(_tcn_build(NORMS[norm]), train_tcn(compiled))
    assert ours.pop("layout") == theirs.pop("layout") == [False, True, (6, 2, 1)]
    assert_same_records(ours, theirs)
    assert ("tcn.network.0.conv1.weight_g" in theirs["state"]) != NORMS[norm]
    assert theirs["losses"][-1] < theirs["losses"][0]


def test_tcn_trains_as_torch_in_float32():
    ours, theirs = run_in_lockstep(_tcn_build(False), train_tcn(compiled=True))
    assert ours.pop("layout") == theirs.pop("layout")
    assert ours["state"]["tcn.network.0.conv1.weight_v"].dtype == np.float32
    assert_same_records(ours, theirs, **FLOAT32)
