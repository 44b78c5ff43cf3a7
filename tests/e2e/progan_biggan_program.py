"""Progressive GAN and BigGAN pieces written once as PyTorch users write them (``torch`` is torch or kiln), for
``test_porting_probes_progan_biggan.py``.

ProGAN after aladdinpersson's Machine-Learning-Collection ``ProGAN/model.py``, ``utils.py`` and ``train.py`` (the
fade-in also as nashory/pggan-pytorch's ``fadein_layer`` holding ``self.alpha``); BigGAN after ajbrock's
BigGAN-PyTorch ``layers.py`` (``ccbn``, ``SNConv2d`` as ``nn.utils.spectral_norm``), ``losses.py`` (hinge),
``utils.py`` (``ortho``, ``ema``)."""

from __future__ import annotations

FACTORS = [1, 1, 1 / 2]
Z_DIM, IN_CHANNELS, IMG_CHANNELS = 4, 4, 2


# --- ProGAN ----------------------------------------------------------------------------------------------------------

def progan(torch, nn, F, fade="argument"):
    """``nn.ModuleDict(gen=Generator, critic=Discriminator)``: ``fade="argument"`` reads the ``alpha`` passed to
    ``forward``; ``fade="attribute"`` a ``FadeIn`` module's ``self.alpha`` (nashory's), updated between steps."""

    class WSConv2d(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=1, gain=2):
            super().__init__()
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
            self.scale = (gain / (in_channels * (kernel_size ** 2))) ** 0.5
            self.bias = self.conv.bias
            self.conv.bias = None
            nn.init.normal_(self.conv.weight)
            nn.init.zeros_(self.bias)

        def forward(self, x):
            return self.conv(x * self.scale) + self.bias.view(1, self.bias.shape[0], 1, 1)

    class PixelNorm(nn.Module):
        def __init__(self):
            super().__init__()
            self.epsilon = 1e-8

        def forward(self, x):
            return x / torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + self.epsilon)

    class FadeIn(nn.Module):
        def __init__(self):
            super().__init__()
            self.alpha = 0.0

        def update_alpha(self, delta):
            self.alpha = self.alpha + delta
            self.alpha = max(0, min(self.alpha, 1.0))

        def forward(self, x):
            return torch.add(x[0].mul(1.0 - self.alpha), x[1].mul(self.alpha))

    class ConvBlock(nn.Module):
        def __init__(self, in_channels, out_channels, use_pixelnorm=True):
            super().__init__()
            self.use_pn = use_pixelnorm
            self.conv1 = WSConv2d(in_channels, out_channels)
            self.conv2 = WSConv2d(out_channels, out_channels)
            self.leaky = nn.LeakyReLU(0.2)
            self.pn = PixelNorm()

        def forward(self, x):
            x = self.leaky(self.conv1(x))
            x = self.pn(x) if self.use_pn else x
            x = self.leaky(self.conv2(x))
            x = self.pn(x) if self.use_pn else x
            return x

    class Generator(nn.Module):
        def __init__(self, z_dim, in_channels, img_channels):
            super().__init__()
            self.initial = nn.Sequential(
                PixelNorm(), nn.ConvTranspose2d(z_dim, in_channels, 4, 1, 0), nn.LeakyReLU(0.2),
                WSConv2d(in_channels, in_channels, kernel_size=3, stride=1, padding=1), nn.LeakyReLU(0.2), PixelNorm())
            self.initial_rgb = WSConv2d(in_channels, img_channels, kernel_size=1, stride=1, padding=0)
            self.prog_blocks, self.rgb_layers = nn.ModuleList([]), nn.ModuleList([self.initial_rgb])
            self.fade = FadeIn()
            for i in range(len(FACTORS) - 1):
                conv_in_c, conv_out_c = int(in_channels * FACTORS[i]), int(in_channels * FACTORS[i + 1])
                self.prog_blocks.append(ConvBlock(conv_in_c, conv_out_c))
                self.rgb_layers.append(WSConv2d(conv_out_c, img_channels, kernel_size=1, stride=1, padding=0))

        def fade_in(self, alpha, upscaled, generated):
            if fade == "attribute":
                return torch.tanh(self.fade([upscaled, generated]))
            return torch.tanh(alpha * generated + (1 - alpha) * upscaled)

        def forward(self, x, alpha, steps):
            out = self.initial(x)
            if steps == 0:
                return self.initial_rgb(out)
            for step in range(steps):
                upscaled = F.interpolate(out, scale_factor=2, mode="nearest")
                out = self.prog_blocks[step](upscaled)
            final_upscaled = self.rgb_layers[steps - 1](upscaled)
            final_out = self.rgb_layers[steps](out)
            return self.fade_in(alpha, final_upscaled, final_out)

    class Discriminator(nn.Module):
        def __init__(self, in_channels, img_channels):
            super().__init__()
            self.prog_blocks, self.rgb_layers = nn.ModuleList([]), nn.ModuleList([])
            self.leaky = nn.LeakyReLU(0.2)
            self.fade = FadeIn()
            for i in range(len(FACTORS) - 1, 0, -1):
                conv_in, conv_out = int(in_channels * FACTORS[i]), int(in_channels * FACTORS[i - 1])
                self.prog_blocks.append(ConvBlock(conv_in, conv_out, use_pixelnorm=False))
                self.rgb_layers.append(WSConv2d(img_channels, conv_in, kernel_size=1, stride=1, padding=0))
            self.initial_rgb = WSConv2d(img_channels, in_channels, kernel_size=1, stride=1, padding=0)
            self.rgb_layers.append(self.initial_rgb)
            self.avg_pool = nn.AvgPool2d(kernel_size=2, stride=2)
            self.final_block = nn.Sequential(
                WSConv2d(in_channels + 1, in_channels, kernel_size=3, padding=1), nn.LeakyReLU(0.2),
                WSConv2d(in_channels, in_channels, kernel_size=4, padding=0, stride=1), nn.LeakyReLU(0.2),
                WSConv2d(in_channels, 1, kernel_size=1, padding=0, stride=1))

        def fade_in(self, alpha, downscaled, out):
            if fade == "attribute":
                return self.fade([downscaled, out])
            return alpha * out + (1 - alpha) * downscaled

        def minibatch_std(self, x):
            batch_statistics = torch.std(x, dim=0).mean().repeat(x.shape[0], 1, x.shape[2], x.shape[3])
            return torch.cat([x, batch_statistics], dim=1)

        def forward(self, x, alpha, steps):
            cur_step = len(self.prog_blocks) - steps
            out = self.leaky(self.rgb_layers[cur_step](x))
            if steps == 0:
                out = self.minibatch_std(out)
                return self.final_block(out).view(out.shape[0], -1)
            downscaled = self.leaky(self.rgb_layers[cur_step + 1](F.avg_pool2d(x, 2)))
            out = self.avg_pool(self.prog_blocks[cur_step](out))
            out = self.fade_in(alpha, downscaled, out)
            for step in range(cur_step + 1, len(self.prog_blocks)):
                out = self.prog_blocks[step](out)
                out = self.avg_pool(out)
            out = self.minibatch_std(out)
            return self.final_block(out).view(out.shape[0], -1)

    return nn.ModuleDict({"gen": Generator(Z_DIM, IN_CHANNELS, IMG_CHANNELS),
                          "critic": Discriminator(IN_CHANNELS, IMG_CHANNELS)})


def gradient_penalty(torch, critic, real, fake, alpha, train_step, beta):
    """utils.py's, with ``beta`` (``torch.rand((BATCH_SIZE, 1, 1, 1))`` there) fed."""
    BATCH_SIZE, C, H, W = real.shape
    beta = beta.repeat(1, C, H, W)
    interpolated_images = real * beta + fake.detach() * (1 - beta)
    interpolated_images.requires_grad_(True)
    mixed_scores = critic(interpolated_images, alpha, train_step)
    gradient = torch.autograd.grad(inputs=interpolated_images, outputs=mixed_scores,
                                   grad_outputs=torch.ones_like(mixed_scores), create_graph=True, retain_graph=True)[0]
    gradient = gradient.view(gradient.shape[0], -1)
    gradient_norm = gradient.norm(2, dim=1)
    return torch.mean((gradient_norm - 1) ** 2)


def progan_steps(torch, gen, critic, lambda_gp=10.0, lr=1e-3):
    """train.py's critic and generator updates as two functions (the ones a user would compile)."""
    opt_gen = torch.optim.Adam(gen.parameters(), lr=lr, betas=(0.0, 0.99))
    opt_critic = torch.optim.Adam(critic.parameters(), lr=lr, betas=(0.0, 0.99))

    def critic_step(real, noise, beta, alpha, step):
        fake = gen(noise, alpha, step)
        critic_real = critic(real, alpha, step)
        critic_fake = critic(fake.detach(), alpha, step)
        gp = gradient_penalty(torch, critic, real, fake, alpha, step, beta)
        loss_critic = (-(torch.mean(critic_real) - torch.mean(critic_fake)) + lambda_gp * gp
                       + (0.001 * torch.mean(critic_real ** 2)))
        opt_critic.zero_grad()
        loss_critic.backward()
        opt_critic.step()
        return loss_critic, gp

    def generator_step(noise, alpha, step):
        fake = gen(noise, alpha, step)
        gen_fake = critic(fake, alpha, step)
        loss_gen = -torch.mean(gen_fake)
        opt_gen.zero_grad()
        loss_gen.backward()
        opt_gen.step()
        return loss_gen

    return critic_step, generator_step


# --- BigGAN pieces ---------------------------------------------------------------------------------------------------

N_CLASSES, SHARED_DIM, CH, BOTTOM = 3, 4, 4, 2


def biggan(torch, nn, F):
    """``nn.ModuleDict(G=Generator, D=Discriminator, G_ema=Generator)``: SN convs, linears and embeddings,
    class-conditional BatchNorm from a shared embedding and a z chunk, one up block and one down block."""

    def snconv(*args, **kwargs):
        return nn.utils.spectral_norm(nn.Conv2d(*args, **kwargs), eps=1e-6)

    def snlinear(*args, **kwargs):
        return nn.utils.spectral_norm(nn.Linear(*args, **kwargs), eps=1e-6)

    class ccbn(nn.Module):
        def __init__(self, output_size, input_size, eps=1e-5, momentum=0.1):
            super().__init__()
            self.output_size, self.input_size = output_size, input_size
            self.gain = snlinear(input_size, output_size, bias=False)
            self.bias = snlinear(input_size, output_size, bias=False)
            self.eps, self.momentum = eps, momentum
            self.register_buffer('stored_mean', torch.zeros(output_size))
            self.register_buffer('stored_var', torch.ones(output_size))

        def forward(self, x, y):
            gain = (1 + self.gain(y)).view(y.size(0), -1, 1, 1)
            bias = self.bias(y).view(y.size(0), -1, 1, 1)
            out = F.batch_norm(x, self.stored_mean, self.stored_var, None, None, self.training, 0.1, self.eps)
            return out * gain + bias

    class GBlock(nn.Module):
        def __init__(self, in_channels, out_channels, bn_input):
            super().__init__()
            self.activation = nn.ReLU(inplace=False)
            # bias=False (BigGAN's have biases): each output reaches a BatchNorm first (see the test's docstring)
            self.conv1 = snconv(in_channels, out_channels, kernel_size=3, padding=1, bias=False)
            self.conv2 = snconv(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
            self.conv_sc = snconv(in_channels, out_channels, kernel_size=1, padding=0, bias=False)
            self.bn1, self.bn2 = ccbn(in_channels, bn_input), ccbn(out_channels, bn_input)

        def forward(self, x, y):
            h = self.activation(self.bn1(x, y))
            h = F.interpolate(h, scale_factor=2)
            x = F.interpolate(x, scale_factor=2)
            h = self.conv1(h)
            h = self.activation(self.bn2(h, y))
            h = self.conv2(h)
            return h + self.conv_sc(x)

    class Generator(nn.Module):
        def __init__(self, dim_z=4):
            super().__init__()
            self.z_chunk_size = dim_z // 2
            self.shared = nn.Embedding(N_CLASSES, SHARED_DIM)
            self.linear = snlinear(self.z_chunk_size, 2 * CH * BOTTOM ** 2)
            self.block = GBlock(2 * CH, CH, SHARED_DIM + self.z_chunk_size)
            self.output_layer = nn.Sequential(nn.BatchNorm2d(CH), nn.ReLU(inplace=False),
                                              snconv(CH, IMG_CHANNELS, kernel_size=3, padding=1))

        def forward(self, z, y):
            zs = torch.split(z, self.z_chunk_size, 1)
            z = zs[0]
            ys = [torch.cat([y, item], 1) for item in zs[1:]]
            h = self.linear(z)
            h = h.view(h.size(0), -1, BOTTOM, BOTTOM)
            h = self.block(h, ys[0])
            return torch.tanh(self.output_layer(h))

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.activation = nn.ReLU(inplace=False)
            self.conv1 = snconv(IMG_CHANNELS, CH, kernel_size=3, padding=1)
            self.conv2 = snconv(CH, 2 * CH, kernel_size=3, padding=1)
            self.conv_sc = snconv(IMG_CHANNELS, 2 * CH, kernel_size=1, padding=0)
            self.linear = snlinear(2 * CH, 1)
            self.embed = nn.utils.spectral_norm(nn.Embedding(N_CLASSES, 2 * CH), eps=1e-6)

        def forward(self, x, y):
            h = self.conv1(x)
            h = self.conv2(self.activation(h))
            h = F.avg_pool2d(h, 2) + self.conv_sc(F.avg_pool2d(x, 2))
            h = torch.sum(self.activation(h), [2, 3])
            out = self.linear(h)
            out = out + torch.sum(self.embed(y) * h, 1, keepdim=True)
            return out

    return nn.ModuleDict({"G": Generator(), "D": Discriminator(), "G_ema": Generator()})


def loss_hinge_dis(torch, F, dis_fake, dis_real):
    loss_real = torch.mean(F.relu(1. - dis_real))
    loss_fake = torch.mean(F.relu(1. + dis_fake))
    return loss_real, loss_fake


def loss_hinge_gen(torch, dis_fake):
    return -torch.mean(dis_fake)


def ortho(torch, model, strength=1e-4, blacklist=[]):
    with torch.no_grad():
        for param in model.parameters():
            if len(param.shape) < 2 or any([param is item for item in blacklist]):
                continue
            w = param.view(param.shape[0], -1)
            grad = (2 * torch.mm(torch.mm(w, w.t()) * (1. - torch.eye(w.shape[0], device=w.device)), w))
            param.grad.data += strength * grad.view(param.shape)


def toggle_grad(model, on_or_off):
    """BigGAN's ``utils.toggle_grad``: the train function freezes the network it is not updating."""
    for param in model.parameters():
        param.requires_grad = on_or_off


class ema(object):
    """BigGAN's ``utils.ema``: the target's state_dict entries copied from the source's, then moved toward it."""

    def __init__(self, torch, source, target, decay=0.9):
        self.torch, self.source, self.target, self.decay = torch, source, target, decay
        self.source_dict, self.target_dict = self.source.state_dict(), self.target.state_dict()
        with torch.no_grad():
            for key in self.source_dict:
                self.target_dict[key].data.copy_(self.source_dict[key].data)

    def update(self, by="copy"):
        with self.torch.no_grad():
            for key in self.source_dict:
                target, source = self.target_dict[key], self.source_dict[key]
                if by == "copy":  # BigGAN's (num_batches_tracked too: a float blend copied into int64)
                    target.data.copy_(target.data * self.decay + source.data * (1 - self.decay))
                elif not target.is_floating_point():
                    target.copy_(source)
                elif by == "mul_add":
                    target.mul_(self.decay).add_(source.detach(), alpha=1 - self.decay)
                else:
                    target.lerp_(source, 1 - self.decay)


def biggan_steps(torch, F, G, D, lr=2e-3, ortho_strength=1e-2):
    """train_fns.GAN_training_function's D and G updates (one D step per G step), ``ortho`` on both."""
    G_optim = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.0, 0.999), eps=1e-8)
    D_optim = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.0, 0.999), eps=1e-8)

    def d_step(x, y, z, y_fake):
        D_optim.zero_grad()
        with torch.no_grad():
            G_z = G(z, G.shared(y_fake))
        D_fake, D_real = D(G_z, y_fake), D(x, y)
        D_loss_real, D_loss_fake = loss_hinge_dis(torch, F, D_fake, D_real)
        D_loss = D_loss_real + D_loss_fake
        D_loss.backward()
        ortho(torch, D, ortho_strength, blacklist=[param for param in D.embed.parameters()])
        D_optim.step()
        return D_loss_real, D_loss_fake

    def g_step(z, y_fake):
        G_optim.zero_grad()
        D_fake = D(G(z, G.shared(y_fake)), y_fake)
        G_loss = loss_hinge_gen(torch, D_fake)
        G_loss.backward()
        ortho(torch, G, ortho_strength, blacklist=[param for param in G.shared.parameters()])
        G_optim.step()
        return G_loss

    return d_step, g_step
