"""Porting probes: StyleGAN2's pieces and a capsule network (Sabour et al.), each written once as PyTorch users write
them (``torch`` is torch or kiln) and run in both from the same weights in float64: losses, gradients, path lengths
and the parameters after a few steps agree to 1e-10; eagerly and with each optimizer step as one
``kiln.compile(fullgraph=True)`` graph against torch's eager loop.

- StyleGAN2 (rosinality's stylegan2-pytorch, small): a mapping network of equalized-lr ``EqualLinear``s (weights
  scaled at runtime, ``lr_mul``), ``PixelNorm``; modulated convs (style-modulated weights, demodulation by
  ``rsqrt((w ** 2).sum([2, 3, 4]) + 1e-8)``, the batch as groups: ``F.conv2d(x.view(1, B*C, H, W), w.view(B*O, C, k,
  k), groups=B)``), noise injection with a learned strength (noise fed), upsampling and the RGB skip by bilinear
  ``F.interpolate``; the non-saturating logistic loss (``softplus``), the R1 penalty (``autograd.grad(real_pred.sum(),
  real_img, create_graph=True)`` on an input made ``requires_grad``) and the path-length regularizer
  (``autograd.grad((fake_img * noise).sum(), latents, create_graph=True)``, its running mean), lazily every 2 steps,
  with Adam's lr and betas scaled by the regularization ratio, and ``requires_grad(model, flag)`` toggled between the
  D and G phases. Compiled: the D step, the R1 step, the G step and the path-length step each one graph; also with
  the upsampling modulated conv as rosinality's grouped ``F.conv_transpose2d(..., stride=2, groups=B)``.
- Capsule network: primary capsules by a conv, ``view`` and ``permute``, ``squash``, dynamic routing by agreement in a
  Python loop (``softmax`` over the classes, ``(c * u_hat).sum(dim=1)``, agreement ``(u_hat * v).sum(-1,
  keepdim=True)``), capsule lengths, the margin loss, a reconstruction decoder masked by the true class
  (``F.one_hot``) or by the longest capsule at inference (``torch.eye(n).index_select(0, max_length_indices)``),
  ``torch.index_select`` of one class's capsules; the routing's agreement from ``u_hat`` or from ``u_hat.detach()``.

What broke: the compiled R1 step's ``(r1 / 2 * r1_loss * d_reg_every + 0 * real_pred[0]).backward()`` (a loss of shape
(1,)) was refused by the autodiff pass, which took only 0-d losses; PyTorch takes any one-element tensor, and so does
kiln now (tests/autodiff3/test_one_element_implicit_seed_vs_torch.py). The eager programs needed no change.
Noticed: ``torch.optim.Adam(betas=(0, 0.99))`` (an int beta) raises in torch 2.13 ("betas must be either both floats or
both Tensors"); rosinality writes ``0 ** ratio`` (a float), as here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, compiled_step_training, gradients, run_in_lockstep, snapshot

# --- StyleGAN2 -----------------------------------------------------------------------------------------------------


def stylegan(torch, nn, F, style_dim=8, channels=4, upsample_by="interpolate"):
    class PixelNorm(nn.Module):
        def forward(self, input):
            return input * torch.rsqrt(torch.mean(input ** 2, dim=1, keepdim=True) + 1e-8)

    class EqualLinear(nn.Module):
        def __init__(self, in_dim, out_dim, bias=True, bias_init=0, lr_mul=1, activation=None):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
            self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init)) if bias else None
            self.activation = activation
            self.scale = (1 / math.sqrt(in_dim)) * lr_mul
            self.lr_mul = lr_mul

        def forward(self, input):
            out = F.linear(input, self.weight * self.scale, bias=self.bias * self.lr_mul)
            if self.activation:
                out = F.leaky_relu(out, 0.2) * math.sqrt(2)
            return out

    class EqualConv2d(nn.Module):
        def __init__(self, in_channel, out_channel, kernel_size, stride=1, padding=0):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
            self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
            self.stride, self.padding = stride, padding
            self.bias = nn.Parameter(torch.zeros(out_channel))

        def forward(self, input):
            return F.conv2d(input, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)

    class ModulatedConv2d(nn.Module):
        def __init__(self, in_channel, out_channel, kernel_size, style_dim, demodulate=True, upsample=False):
            super().__init__()
            self.eps = 1e-8
            self.kernel_size, self.in_channel, self.out_channel = kernel_size, in_channel, out_channel
            self.upsample, self.demodulate = upsample, demodulate
            fan_in = in_channel * kernel_size ** 2
            self.scale = 1 / math.sqrt(fan_in)
            self.padding = kernel_size // 2
            self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
            self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)

        def forward(self, input, style):
            batch, in_channel, height, width = input.shape
            style = self.modulation(style).view(batch, 1, in_channel, 1, 1)
            weight = self.scale * self.weight * style
            if self.demodulate:
                demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
                weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
            weight = weight.view(batch * self.out_channel, in_channel, self.kernel_size, self.kernel_size)
            if self.upsample and upsample_by == "transposed":  # rosinality's, without the blur
                weight = weight.view(batch, self.out_channel, in_channel, self.kernel_size, self.kernel_size)
                weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, self.kernel_size,
                                                        self.kernel_size)
                input = input.view(1, batch * in_channel, height, width)
                out = F.conv_transpose2d(input, weight, padding=self.padding, stride=2, output_padding=1, groups=batch)
                _, _, height, width = out.shape
                return out.view(batch, self.out_channel, height, width)
            if self.upsample:
                input = F.interpolate(input, scale_factor=2, mode="bilinear", align_corners=False)
                height, width = height * 2, width * 2
            input = input.view(1, batch * in_channel, height, width)
            out = F.conv2d(input, weight, padding=self.padding, groups=batch)
            _, _, height, width = out.shape
            return out.view(batch, self.out_channel, height, width)

    class NoiseInjection(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(1))

        def forward(self, image, noise):
            return image + self.weight * noise

    class StyledConv(nn.Module):
        def __init__(self, in_channel, out_channel, kernel_size, style_dim, upsample=False):
            super().__init__()
            self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample)
            self.noise = NoiseInjection()
            self.bias = nn.Parameter(torch.zeros(1, out_channel, 1, 1))

        def forward(self, input, style, noise):
            out = self.noise(self.conv(input, style), noise)
            return F.leaky_relu(out + self.bias, 0.2) * math.sqrt(2)

    class ToRGB(nn.Module):
        def __init__(self, in_channel, style_dim):
            super().__init__()
            self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
            self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

        def forward(self, input, style, skip=None):
            out = self.conv(input, style) + self.bias
            if skip is not None:
                out = out + F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
            return out

    class Generator(nn.Module):
        def __init__(self, n_mlp=2, lr_mlp=0.01):
            super().__init__()
            layers = [PixelNorm()]
            for i in range(n_mlp):
                layers.append(EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu"))
            self.style = nn.Sequential(*layers)
            self.input = nn.Parameter(torch.randn(1, channels, 4, 4))
            self.conv1 = StyledConv(channels, channels, 3, style_dim)
            self.to_rgb1 = ToRGB(channels, style_dim)
            self.conv_up = StyledConv(channels, channels, 3, style_dim, upsample=True)
            self.conv2 = StyledConv(channels, channels, 3, style_dim)
            self.to_rgb2 = ToRGB(channels, style_dim)

        def forward(self, z, noises, return_latents=False):
            latent = self.style(z)
            styles = latent.unsqueeze(1).repeat(1, 5, 1)
            out = self.input.repeat(z.shape[0], 1, 1, 1)
            out = self.conv1(out, styles[:, 0], noises[0])
            skip = self.to_rgb1(out, styles[:, 1])
            out = self.conv_up(out, styles[:, 2], noises[1])
            out = self.conv2(out, styles[:, 3], noises[2])
            image = self.to_rgb2(out, styles[:, 4], skip)
            return (image, styles) if return_latents else (image, None)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = EqualConv2d(3, channels, 3, padding=1)
            self.down = EqualConv2d(channels, channels, 3, stride=2, padding=1)
            self.final = EqualLinear(channels * 16, channels, activation="fused_lrelu")
            self.out = EqualLinear(channels, 1)

        def forward(self, x):
            x = F.leaky_relu(self.conv(x), 0.2)
            x = F.leaky_relu(self.down(x), 0.2)
            return self.out(self.final(x.flatten(1)))

    return nn.ModuleDict({"g": Generator(), "d": Discriminator()})


def d_logistic_loss(F, real_pred, fake_pred):
    return F.softplus(-real_pred).mean() + F.softplus(fake_pred).mean()


def d_r1_loss(torch, real_pred, real_img):
    grad_real, = torch.autograd.grad(outputs=real_pred.sum(), inputs=real_img, create_graph=True)
    return grad_real.pow(2).reshape(grad_real.shape[0], -1).sum(1).mean()


def g_path_regularize(torch, fake_img, latents, mean_path_length, noise, decay=0.01):
    grad, = torch.autograd.grad(outputs=(fake_img * noise).sum(), inputs=latents, create_graph=True)
    path_lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))
    path_mean = mean_path_length + decay * (path_lengths.mean() - mean_path_length)
    path_penalty = (path_lengths - path_mean).pow(2).mean()
    return path_penalty, path_mean.detach(), path_lengths


def requires_grad(model, flag=True):
    for p in model.parameters():
        p.requires_grad = flag


def stylegan_steps(torch, F, generator, discriminator, d_reg_every=2, g_reg_every=2, r1=10.0, path_regularize=2.0):
    """The four optimizer steps of rosinality's ``train()``: D, D's lazy R1, G, G's lazy path-length regularizer."""
    g_reg_ratio, d_reg_ratio = g_reg_every / (g_reg_every + 1), d_reg_every / (d_reg_every + 1)
    g_optim = torch.optim.Adam(generator.parameters(), lr=2e-3 * g_reg_ratio,
                               betas=(0 ** g_reg_ratio, 0.99 ** g_reg_ratio))
    d_optim = torch.optim.Adam(discriminator.parameters(), lr=2e-3 * d_reg_ratio,
                               betas=(0 ** d_reg_ratio, 0.99 ** d_reg_ratio))

    def d_step(real_img, z, *noise):
        fake_img, _ = generator(z, noise)
        fake_pred = discriminator(fake_img)
        real_pred = discriminator(real_img)
        d_loss = d_logistic_loss(F, real_pred, fake_pred)
        discriminator.zero_grad()
        d_loss.backward()
        d_optim.step()
        return d_loss

    def d_r1_step(real_img):
        real_img.requires_grad = True
        real_pred = discriminator(real_img)
        r1_loss = d_r1_loss(torch, real_pred, real_img)
        discriminator.zero_grad()
        (r1 / 2 * r1_loss * d_reg_every + 0 * real_pred[0]).backward()
        d_optim.step()
        return r1_loss

    def g_step(z, *noise):
        fake_img, _ = generator(z, noise)
        fake_pred = discriminator(fake_img)
        g_loss = F.softplus(-fake_pred).mean()
        generator.zero_grad()
        g_loss.backward()
        g_optim.step()
        return g_loss

    def g_path_step(z, path_noise, mean_path_length, *noise):
        fake_img, latents = generator(z, noise, return_latents=True)
        path_loss, mean_path_length, path_lengths = g_path_regularize(torch, fake_img, latents, mean_path_length,
                                                                      path_noise)
        generator.zero_grad()
        weighted_path_loss = path_regularize * g_reg_every * path_loss
        weighted_path_loss += 0 * fake_img[0, 0, 0, 0]
        weighted_path_loss.backward()
        g_optim.step()
        return path_loss, mean_path_length, path_lengths

    return d_step, d_r1_step, g_step, g_path_step


def stylegan_draws(steps, batch=2):
    rng = np.random.default_rng(0)
    return [dict(real=rng.standard_normal((batch, 3, 8, 8)), z=rng.standard_normal((batch, 8)),
                 noises=[rng.standard_normal((batch, 1, s, s)) for s in (4, 8, 8)],
                 path_noise=rng.standard_normal((batch, 3, 8, 8)) / math.sqrt(64)) for _ in range(steps)]


def train_stylegan(compiled, steps=3, d_reg_every=2, g_reg_every=2):
    draws = stylegan_draws(steps)

    def train(torch, nn, F, both):
        generator, discriminator = both["g"], both["d"]
        steps_of = stylegan_steps(torch, F, generator, discriminator, d_reg_every, g_reg_every)
        d_step, d_r1_step, g_step, g_path_step = (kiln.compile(f, fullgraph=True) for f in steps_of) \
            if compiled and torch is kiln else steps_of
        mean_path_length = torch.tensor(0.0)
        record = {"d_loss": [], "g_loss": [], "r1": [], "path": [], "path_lengths": [], "mean_path_length": []}
        for i, draw in enumerate(draws):
            real_img, z = torch.tensor(draw["real"]), torch.tensor(draw["z"])
            noise = [torch.tensor(n) for n in draw["noises"]]
            requires_grad(generator, False)
            requires_grad(discriminator, True)
            record["d_loss"].append(d_step(real_img, z, *noise).item())
            if i % d_reg_every == 0:
                record["r1"].append(d_r1_step(real_img).item())
                record.setdefault("d_r1_grads", gradients(discriminator))
            requires_grad(generator, True)
            requires_grad(discriminator, False)
            record["g_loss"].append(g_step(z, *noise).item())
            record.setdefault("g_grads", gradients(generator))
            if i % g_reg_every == 0:
                path_loss, mean_path_length, path_lengths = g_path_step(z, torch.tensor(draw["path_noise"]),
                                                                        mean_path_length, *noise)
                record.setdefault("g_path_grads", gradients(generator))
                record["path"].append(path_loss.item())
                record["path_lengths"].append(array(path_lengths))
                record["mean_path_length"].append(mean_path_length.item())
        record["state"] = snapshot(both)
        return record

    return train


@pytest.mark.parametrize("compiled, upsample_by", [(False, "interpolate"), (True, "interpolate"), (True, "transposed")],
                         ids=["eager", "compiled-steps", "compiled-steps-transposed-conv"])
def test_stylegan2_trains_with_lazy_r1_and_path_length_as_torch(compiled, upsample_by, float64_default):
    """``transposed``: the upsampling modulated conv as ``F.conv_transpose2d(..., stride=2, groups=B)`` of the
    transposed per-sample weights instead of ``interpolate`` then conv."""
    ours, theirs = run_in_lockstep(lambda *names: stylegan(*names, upsample_by=upsample_by), train_stylegan(compiled))
    assert_same_records(ours, theirs)
    assert len(theirs["r1"]) == len(theirs["path"]) == 2 and min(theirs["r1"] + theirs["path"]) > 0
    assert np.abs(theirs["state"]["g.conv1.noise.weight"]).max() > 0  # the noise strength learned


# --- capsule network -----------------------------------------------------------------------------------------------


def capsule_net(torch, nn, F, num_classes=3, routing_iterations=3, image=12, detach_routing=False):
    def squash(s, dim=-1):
        squared_norm = (s ** 2).sum(dim=dim, keepdim=True)
        return squared_norm / (1 + squared_norm) * s / torch.sqrt(squared_norm + 1e-8)

    class PrimaryCaps(nn.Module):
        def __init__(self, in_channels=8, num_capsules=4, capsule_dim=4):
            super().__init__()
            self.capsule_dim = capsule_dim
            self.conv = nn.Conv2d(in_channels, num_capsules * capsule_dim, kernel_size=3, stride=2)

        def forward(self, x):
            out = self.conv(x)
            b = out.size(0)
            out = out.view(b, -1, self.capsule_dim, out.size(2), out.size(3))
            out = out.permute(0, 1, 3, 4, 2).contiguous().view(b, -1, self.capsule_dim)
            return squash(out)

    class DigitCaps(nn.Module):
        def __init__(self, num_routes, in_dim=4, out_dim=6):
            super().__init__()
            self.num_routes = num_routes
            self.W = nn.Parameter(0.1 * torch.randn(1, num_routes, num_classes, out_dim, in_dim))

        def forward(self, u):
            batch_size = u.size(0)
            u = u.unsqueeze(2).unsqueeze(4)  # (B, routes, 1, in_dim, 1)
            u_hat = torch.matmul(self.W, u).squeeze(-1)  # (B, routes, classes, out_dim)
            b_ij = torch.zeros(batch_size, self.num_routes, num_classes, 1, device=u.device)
            for iteration in range(routing_iterations):
                c_ij = F.softmax(b_ij, dim=2)
                s_j = (c_ij * u_hat).sum(dim=1, keepdim=True)
                v_j = squash(s_j)
                if iteration < routing_iterations - 1:
                    agreement = ((u_hat.detach() if detach_routing else u_hat) * v_j).sum(-1, keepdim=True)
                    b_ij = b_ij + agreement
            return v_j.squeeze(1)  # (B, classes, out_dim)

    class CapsNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, kernel_size=3)
            self.primary = PrimaryCaps()
            side = ((image - 2) - 3) // 2 + 1
            self.digits = DigitCaps(num_routes=4 * side * side)
            self.decoder = nn.Sequential(nn.Linear(6 * num_classes, 16), nn.ReLU(inplace=True),
                                         nn.Linear(16, image * image), nn.Sigmoid())

        def forward(self, x, y=None):
            v = self.digits(self.primary(F.relu(self.conv1(x))))
            lengths = torch.sqrt((v ** 2).sum(-1))
            if y is None:  # gram-ai's mask of the longest capsule
                _, max_length_indices = lengths.max(dim=1)
                mask = torch.eye(num_classes).index_select(dim=0, index=max_length_indices)
                y = max_length_indices
            else:
                mask = F.one_hot(y, num_classes).to(v.dtype)
            reconstruction = self.decoder((v * mask.unsqueeze(-1)).view(x.size(0), -1))
            picked = torch.index_select(v, 1, y[:1]).squeeze(1)
            return lengths, reconstruction.view(-1, 1, image, image), picked

    return CapsNet()


def margin_loss(torch, F, lengths, labels, m_plus=0.9, m_minus=0.1, lam=0.5):
    T = F.one_hot(labels, lengths.size(1)).to(lengths.dtype)
    left = F.relu(m_plus - lengths) ** 2
    right = F.relu(lengths - m_minus) ** 2
    return (T * left + lam * (1.0 - T) * right).sum(dim=1).mean()


def capsule_loss(torch, nn, F, model, images, labels):
    lengths, reconstruction, _ = model(images, labels)
    recon = F.mse_loss(reconstruction.view(images.size(0), -1), images.view(images.size(0), -1), reduction="sum")
    return margin_loss(torch, F, lengths, labels) + 0.0005 * recon / images.size(0)


def digits():
    rng = np.random.default_rng(0)
    return rng.random((3, 1, 12, 12)), np.array([0, 2, 1])


def train_capsules(steps=3):
    images, labels = digits()

    def train(torch, nn, F, model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        x, y = torch.tensor(images), torch.tensor(labels)
        record = {"losses": []}
        for _ in range(steps):
            optimizer.zero_grad()
            lengths, reconstruction, picked = model(x, y)
            reconstruction_loss = F.mse_loss(reconstruction, x, reduction="sum") / x.size(0)
            loss = margin_loss(torch, F, lengths, y) + 0.0005 * reconstruction_loss
            loss.backward()
            record.setdefault("output", {"lengths": array(lengths), "reconstruction": array(reconstruction),
                                         "picked": array(picked)})
            record.setdefault("grads", gradients(model))
            optimizer.step()
            record["losses"].append(loss.item())
        with torch.no_grad():
            lengths, reconstruction, _ = model(x)
            record["predicted"] = lengths.argmax(1).tolist()
            record["eval_reconstruction"] = array(reconstruction)
        record["state"] = snapshot(model)
        return record

    return train


@pytest.mark.parametrize("detach_routing", [False, True], ids=["routing-differentiated", "routing-detached"])
def test_capsule_network_with_dynamic_routing_trains_as_torch(detach_routing, float64_default):
    """``routing-detached``: the agreement of the intermediate iterations from ``u_hat.detach()``, as several
    implementations write it (the gradient then reaches ``W`` through the last iteration's ``c * u_hat`` only)."""
    build = lambda torch, nn, F: capsule_net(torch, nn, F, detach_routing=detach_routing)
    ours, theirs = run_in_lockstep(build, train_capsules())
    assert_same_records(ours, theirs)
    assert ours["predicted"] == theirs["predicted"] and theirs["losses"][-1] < theirs["losses"][0]


def test_capsule_network_compiled_step_as_torch(float64_default):
    images, labels = digits()
    train = compiled_step_training(lambda lib: (lib.tensor(images), lib.tensor(labels)),
                                   lambda lib, model: lib.optim.Adam(model.parameters(), lr=1e-2), capsule_loss)
    ours, theirs = run_in_lockstep(capsule_net, train)
    assert_same_records(ours, theirs)
