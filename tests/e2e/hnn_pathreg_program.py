"""Programs for ``test_porting_probes_hnn_pathreg.py``, written once as their references write them (``torch`` is torch
or kiln): greydanus/hamiltonian-nn's HNN and rosinality/stylegan2-pytorch's path length regularisation."""

from __future__ import annotations

import math

import numpy as np


def hnn_model(torch, nn, F, input_dim=2, hidden_dim=16, field_type='solenoidal', baseline=False,
              assume_canonical_coords=True):
    """hamiltonian-nn's ``MLP`` (``nn_models.py``: orthogonal init, tanh, a bias-free last layer) inside ``HNN``
    (``hnn.py``: ``forward`` gives ``y.split(1, 1)``, ``time_derivative`` the fields from
    ``torch.autograd.grad(F.sum(), x, create_graph=True)`` times the permutation tensor)."""

    def choose_nonlinearity(name):
        nl = None
        if name == 'tanh':
            nl = torch.tanh
        elif name == 'relu':
            nl = torch.relu
        elif name == 'sigmoid':
            nl = torch.sigmoid
        elif name == 'softplus':
            nl = torch.nn.functional.softplus
        else:
            raise ValueError("nonlinearity not recognized")
        return nl

    class MLP(torch.nn.Module):
        '''Just a salt-of-the-earth MLP'''
        def __init__(self, input_dim, hidden_dim, output_dim, nonlinearity='tanh'):
            super(MLP, self).__init__()
            self.linear1 = torch.nn.Linear(input_dim, hidden_dim)
            self.linear2 = torch.nn.Linear(hidden_dim, hidden_dim)
            self.linear3 = torch.nn.Linear(hidden_dim, output_dim, bias=None)

            for l in [self.linear1, self.linear2, self.linear3]:  # noqa: E741 (as nn_models.py writes it)
                torch.nn.init.orthogonal_(l.weight)  # use a principled initialization

            self.nonlinearity = choose_nonlinearity(nonlinearity)

        def forward(self, x, separate_fields=False):
            h = self.nonlinearity(self.linear1(x))
            h = self.nonlinearity(self.linear2(h))
            return self.linear3(h)

    class HNN(torch.nn.Module):
        '''Learn arbitrary vector fields that are sums of conservative and solenoidal fields'''
        def __init__(self, input_dim, differentiable_model, field_type='solenoidal',
                     baseline=False, assume_canonical_coords=True):
            super(HNN, self).__init__()
            self.baseline = baseline
            self.differentiable_model = differentiable_model
            self.assume_canonical_coords = assume_canonical_coords
            self.M = self.permutation_tensor(input_dim)  # Levi-Civita permutation tensor
            self.field_type = field_type

        def forward(self, x):
            # traditional forward pass
            if self.baseline:
                return self.differentiable_model(x)

            y = self.differentiable_model(x)
            assert y.dim() == 2 and y.shape[1] == 2, "Output tensor should have shape [batch_size, 2]"
            return y.split(1, 1)

        def rk4_time_derivative(self, x, dt):
            return rk4(fun=self.time_derivative, y0=x, t=0, dt=dt)

        def time_derivative(self, x, t=None, separate_fields=False):
            '''NEURAL ODE-STLE VECTOR FIELD'''
            if self.baseline:
                return self.differentiable_model(x)

            '''NEURAL HAMILTONIAN-STLE VECTOR FIELD'''
            F1, F2 = self.forward(x)  # traditional forward pass

            conservative_field = torch.zeros_like(x)  # start out with both components set to 0
            solenoidal_field = torch.zeros_like(x)

            if self.field_type != 'solenoidal':
                dF1 = torch.autograd.grad(F1.sum(), x, create_graph=True)[0]  # gradients for conservative field
                conservative_field = dF1 @ torch.eye(*self.M.shape)

            if self.field_type != 'conservative':
                dF2 = torch.autograd.grad(F2.sum(), x, create_graph=True)[0]  # gradients for solenoidal field
                solenoidal_field = dF2 @ self.M.t()

            if separate_fields:
                return [conservative_field, solenoidal_field]

            return conservative_field + solenoidal_field

        def permutation_tensor(self, n):
            M = None
            if self.assume_canonical_coords:
                M = torch.eye(n)
                M = torch.cat([M[n // 2:], -M[:n // 2]])
            else:
                '''Constructs the Levi-Civita permutation tensor'''
                M = torch.ones(n, n)  # matrix of ones
                M *= 1 - torch.eye(n)  # clear diagonals
                M[::2] *= -1  # pattern of signs
                M[:, ::2] *= -1

                for i in range(n):  # make asymmetric
                    for j in range(i + 1, n):
                        M[i, j] *= -1
            return M

    def rk4(fun, y0, t, dt, *args, **kwargs):
        dt2 = dt / 2.0
        k1 = fun(y0, t, *args, **kwargs)
        k2 = fun(y0 + dt2 * k1, t + dt2, *args, **kwargs)
        k3 = fun(y0 + dt2 * k2, t + dt2, *args, **kwargs)
        k4 = fun(y0 + dt * k3, t + dt, *args, **kwargs)
        dy = dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        return dy

    output_dim = input_dim if baseline else 2
    nn_model = MLP(input_dim, hidden_dim, output_dim, 'tanh')
    return HNN(input_dim, differentiable_model=nn_model, field_type=field_type, baseline=baseline,
               assume_canonical_coords=assume_canonical_coords)


def L2_loss(u, v):
    return (u - v).pow(2).mean()


def spring_data(samples=12, noise_std=0.1, seed=0):
    """hamiltonian-nn's ideal mass-spring (``spring/data.py``): ``H = q^2 + p^2``, ``dq/dt = 2p``, ``dp/dt = -2q``; states
    on circles of random radius with noise, as ``get_trajectory`` samples them (a few points)."""
    rng = np.random.default_rng(seed)
    radius = rng.uniform(0.1, 1.0, samples)
    angle = rng.uniform(0, 2 * np.pi, samples)
    q, p = radius * np.cos(angle), radius * np.sin(angle)
    dq, dp = 2 * p, -2 * q
    x = np.stack([q, p], 1) + rng.standard_normal((samples, 2)) * noise_std
    return x, np.stack([dq, dp], 1)


def path_length_generator(torch, nn, F, latent=4, n_mlp=2, size=4, channels=2):
    """A tiny StyleGAN2-like generator for the path length penalty: a mapping network (``PixelNorm`` then Linears with
    leaky relu) to the ``latents`` ``w`` (``[batch, n_latent, latent]``), each modulating a per-pixel Linear
    synthesis of a learned constant; ``forward(styles, return_latents=True)`` as rosinality's ``Generator``."""

    class PixelNorm(nn.Module):
        def forward(self, input):
            return input * torch.rsqrt(torch.mean(input ** 2, dim=1, keepdim=True) + 1e-8)

    class Generator(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [PixelNorm()]
            for i in range(n_mlp):
                layers += [nn.Linear(latent, latent), nn.LeakyReLU(0.2)]
            self.style = nn.Sequential(*layers)
            self.n_latent = 2
            self.input = nn.Parameter(torch.randn(1, latent, size, size))
            self.mod1 = nn.Linear(latent, latent)
            self.mod2 = nn.Linear(latent, channels * latent)

        def forward(self, styles, return_latents=False):
            w = self.style(styles[0])
            latent_ = w.unsqueeze(1).repeat(1, self.n_latent, 1)
            out = self.input.repeat(w.shape[0], 1, 1, 1)
            s1 = self.mod1(latent_[:, 0]).view(-1, latent, 1, 1)
            out = F.leaky_relu(out * s1, 0.2) * math.sqrt(2)
            s2 = self.mod2(latent_[:, 1]).view(-1, channels, latent)
            image = torch.einsum("bchw,bkc->bkhw", out, s2)
            if return_latents:
                return image, latent_
            return image, None

    return Generator()


def g_path_regularize(torch, fake_img, latents, mean_path_length, decay=0.01, noise=None):
    """rosinality's ``g_path_regularize`` (``noise``: the draw of ``torch.randn_like(fake_img)``, fed)."""
    autograd = torch.autograd
    noise = noise / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
    grad, = autograd.grad(outputs=(fake_img * noise).sum(), inputs=latents, create_graph=True)
    path_lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))

    path_mean = mean_path_length + decay * (path_lengths.mean() - mean_path_length)

    path_penalty = (path_lengths - path_mean).pow(2).mean()

    return path_penalty, path_mean.detach(), path_lengths


def contractive_autoencoder(torch, nn, F, features=6, hidden=3):
    """The contractive autoencoder of the PyTorch ports of Rifai et al.: ``fc1``/``fc2`` without bias, ReLU encoder,
    sigmoid decoder, ``forward`` returning ``(h1, h2)``."""

    class CAE(nn.Module):
        def __init__(self):
            super(CAE, self).__init__()
            self.fc1 = nn.Linear(features, hidden, bias=False)  # Encoder
            self.fc2 = nn.Linear(hidden, features, bias=False)  # Decoder
            self.relu = nn.ReLU()
            self.sigmoid = nn.Sigmoid()

        def encoder(self, x):
            h1 = self.relu(self.fc1(x.view(-1, features)))
            return h1

        def decoder(self, z):
            h2 = self.sigmoid(self.fc2(z))
            return h2

        def forward(self, x):
            h1 = self.encoder(x)
            h2 = self.decoder(h1)
            return h1, h2

    return CAE()


def cae_steps(torch, nn, F, model, optimizer, lam=1e-2):
    """Two training steps as CAE code writes them: the closed-form penalty (``loss_function`` with
    ``Variable(model.state_dict()['fc1.weight'])``, ``contractive_loss.mul_(lam)``), and the one from the encoder's input
    gradient (``h.backward(torch.ones(h.size()), retain_graph=True)``, ``x.grad`` in the loss as a constant,
    ``x.grad.data.zero_()``, then ``loss.backward()``, which fills ``x.grad`` again)."""
    Variable = torch.autograd.Variable
    mse_loss = nn.BCELoss(reduction="sum")

    def loss_function(W, x, recons_x, h, lam):
        mse = mse_loss(recons_x, x)
        dh = h * (1 - h)  # Hadamard product produces size N_batch x N_hidden
        w_sum = torch.sum(Variable(W) ** 2, dim=1)
        w_sum = w_sum.unsqueeze(1)  # shape N_hidden x 1
        contractive_loss = torch.sum(torch.mm(dh ** 2, w_sum), 0)
        return mse + contractive_loss.mul_(lam)

    def closed_form_step(data):
        img = data.view(data.size(0), -1)
        img = Variable(img)
        optimizer.zero_grad()
        hidden_representation, recons_x = model(img)
        W = model.state_dict()['fc1.weight']
        loss = loss_function(W, img, recons_x, hidden_representation, lam)
        loss.backward()
        optimizer.step()
        return loss

    def input_gradient_step(data):
        x = data.view(data.size(0), -1).clone().requires_grad_(True)
        h, recons_x = model(x)
        h.backward(torch.ones(h.size()), retain_graph=True)
        loss = F.mse_loss(recons_x, x) + lam * torch.sqrt(torch.sum(x.grad ** 2))
        x.grad.data.zero_()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss, x.grad

    return closed_form_step, input_gradient_step
