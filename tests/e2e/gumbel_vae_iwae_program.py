"""Programs of the Gumbel-softmax VAE / IWAE / beta-VAE porting probe, each written once as its reference writes it
(``torch`` is ``torch`` or ``kiln``): YongfeiYan/Gumbel_Softmax_VAE's ``gumbel_softmax_vae.py`` (ericjang's notebook's
sampler), the importance-weighted autoencoder's bound (Burda et al., as the ``IWAE`` PyTorch ports write it) and
1Konny/Beta-VAE's capacity-annealed objective with the minibatch-weighted total-correlation estimate of beta-TCVAE
(rtqichen/beta-tcvae, AntixK/PyTorch-VAE's ``betatc_vae.py``). Sizes are tiny; every random draw is fed."""

from __future__ import annotations

import math

import numpy as np

PIXELS, LATENT, CATEGORIES, HIDDEN, BATCH = 12, 3, 4, 16, 6
ANNEAL_RATE, TEMP_MIN, TEMP = 0.3, 0.5, 1.0
SAMPLES, Z_DIM, DATASET_SIZE = 5, 3, 60


def gumbel_vae(torch, nn, F, hard=True):
    """YongfeiYan's ``VAE_gumbel`` with the temperature kept on the model (``model.temp``) and the uniform draws
    ``U`` fed to ``sample_gumbel`` (the reference draws ``torch.rand(shape)`` there)."""
    latent_dim, categorical_dim = LATENT, CATEGORIES

    def sample_gumbel(U, eps=1e-20):
        return -torch.log(-torch.log(U + eps) + eps)

    def gumbel_softmax_sample(logits, temperature, U):
        y = logits + sample_gumbel(U)
        return F.softmax(y / temperature, dim=-1)

    def gumbel_softmax(logits, temperature, U, hard=False):
        y = gumbel_softmax_sample(logits, temperature, U)
        if not hard:
            return y.view(-1, latent_dim * categorical_dim)
        shape = y.size()
        _, ind = y.max(dim=-1)
        y_hard = torch.zeros_like(y).view(-1, shape[-1])
        y_hard.scatter_(1, ind.view(-1, 1), 1)
        y_hard = y_hard.view(*shape)
        y_hard = (y_hard - y).detach() + y
        return y_hard.view(-1, latent_dim * categorical_dim)

    class VAE_gumbel(nn.Module):
        def __init__(self, temp):
            super(VAE_gumbel, self).__init__()
            self.fc1 = nn.Linear(PIXELS, HIDDEN)
            self.fc2 = nn.Linear(HIDDEN, HIDDEN)
            self.fc3 = nn.Linear(HIDDEN, latent_dim * categorical_dim)
            self.fc4 = nn.Linear(latent_dim * categorical_dim, HIDDEN)
            self.fc5 = nn.Linear(HIDDEN, HIDDEN)
            self.fc6 = nn.Linear(HIDDEN, PIXELS)
            self.relu = nn.ReLU()
            self.sigmoid = nn.Sigmoid()
            self.temp = temp
            self.hard = hard

        def encode(self, x):
            h1 = self.relu(self.fc1(x))
            h2 = self.relu(self.fc2(h1))
            return self.relu(self.fc3(h2))

        def decode(self, z):
            h4 = self.relu(self.fc4(z))
            h5 = self.relu(self.fc5(h4))
            return self.sigmoid(self.fc6(h5))

        def forward(self, x, U):
            q = self.encode(x.view(-1, PIXELS))
            q_y = q.view(q.size(0), latent_dim, categorical_dim)
            z = gumbel_softmax(q_y, self.temp, U, self.hard)
            return self.decode(z), F.softmax(q_y, dim=-1).reshape(*q.size())

    return VAE_gumbel(TEMP)


def gumbel_vae_loss(torch, F, recon_x, x, qy):
    """The reference's ``loss_function``: summed BCE (``size_average=False``) per example plus the KL to the uniform
    categorical prior."""
    BCE = F.binary_cross_entropy(recon_x, x.view(-1, PIXELS), size_average=False) / x.shape[0]
    log_ratio = torch.log(qy * CATEGORIES + 1e-20)
    KLD = torch.sum(qy * log_ratio, dim=-1).mean()
    return BCE + KLD


def anneal(model, batch_idx):
    """The reference's schedule (every batch here, every 100 there): ``np.maximum`` gives a NumPy float64."""
    model.temp = np.maximum(model.temp * np.exp(-ANNEAL_RATE * batch_idx), TEMP_MIN)


def iwae(torch, nn, F):
    """An IWAE with a Gaussian encoder and a Bernoulli decoder; ``rsample`` is ``loc + scale * eps`` with ``eps``
    fed (what ``Normal.rsample`` computes from its own draw)."""
    from_distributions = torch.distributions

    class IWAE(nn.Module):
        def __init__(self, x_dim=PIXELS, h_dim=HIDDEN, z_dim=Z_DIM):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(x_dim, h_dim), nn.Tanh(), nn.Linear(h_dim, 2 * z_dim))
            self.decoder = nn.Sequential(nn.Linear(z_dim, h_dim), nn.Tanh(), nn.Linear(h_dim, x_dim))
            self.k = SAMPLES

        def encode(self, x):
            mu, logvar = self.encoder(x).chunk(2, dim=-1)
            return from_distributions.Normal(mu, torch.exp(0.5 * logvar))

        def forward(self, x, eps):
            k = self.k
            q_z = self.encode(x)
            z = q_z.loc + q_z.scale * eps  # [k, B, D]: rsample((k,)) with its noise fed
            x_k = x.unsqueeze(0).expand(k, *x.shape)
            prior = from_distributions.Normal(torch.zeros_like(z), torch.ones_like(z))
            logits = self.decoder(z)
            log_px_z = from_distributions.Bernoulli(logits=logits).log_prob(x_k).sum(-1)
            log_w = prior.log_prob(z).sum(-1) + log_px_z - q_z.log_prob(z).sum(-1)
            return torch.logsumexp(log_w, 0) - math.log(k)

    return IWAE()


def iwae_repeat_bound(torch, model, x, eps):
    """The same bound with ``x.repeat(k, 1)`` and a flat ``[k * B, D]`` batch, as other ports write it."""
    k, batch = model.k, x.shape[0]
    x_k = x.repeat(k, 1)
    q_z = model.encode(x_k)
    z = q_z.rsample() if eps is None else q_z.loc + q_z.scale * eps.reshape(k * batch, -1)
    log_px_z = torch.distributions.Bernoulli(logits=model.decoder(z)).log_prob(x_k).sum(-1)
    log_pz = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    log_w = (log_pz + log_px_z - q_z.log_prob(z).sum(-1)).view(k, batch)
    return torch.logsumexp(log_w, 0) - math.log(k)


def beta_vae(torch, nn, F):
    """1Konny's ``BetaVAE_B`` network (fully connected here) with ``self.beta`` kept on the model for beta-TCVAE's
    total-correlation weight (set between steps by ``anneal_beta``)."""

    def reparametrize(mu, logvar, eps):
        std = logvar.div(2).exp()
        return mu + std * eps

    class BetaVAE_B(nn.Module):
        def __init__(self, z_dim=Z_DIM, nc=PIXELS):
            super().__init__()
            self.z_dim = z_dim
            self.encoder = nn.Sequential(nn.Linear(nc, HIDDEN), nn.ReLU(True), nn.Linear(HIDDEN, z_dim * 2))
            self.decoder = nn.Sequential(nn.Linear(z_dim, HIDDEN), nn.ReLU(True), nn.Linear(HIDDEN, nc))
            self.beta = 1.0

        def anneal_beta(self, global_iter, beta_max=4.0, warmup=3):
            self.beta = min(beta_max, 1.0 + (beta_max - 1.0) * global_iter / warmup)

        def forward(self, x, eps):
            distributions = self.encoder(x)
            mu = distributions[:, :self.z_dim]
            logvar = distributions[:, self.z_dim:]
            z = reparametrize(mu, logvar, eps)
            return self.decoder(z), mu, logvar, z

    return BetaVAE_B()


def kl_divergence(mu, logvar):
    klds = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
    total_kld = klds.sum(1).mean(0, True)
    dimension_wise_kld = klds.mean(0)
    mean_kld = klds.mean(1).mean(0, True)
    return total_kld, dimension_wise_kld, mean_kld


def total_correlation(torch, z, mu, logvar, dataset_size):
    """beta-TCVAE's minibatch-weighted sampling estimate: ``log q(z_i | x_j)`` for every pair by broadcasting
    ``[B, 1, D]`` against ``[1, B, D]``."""
    batch_size, latent_dim = z.shape
    q = torch.distributions.Normal(mu.view(1, batch_size, latent_dim),
                                   (0.5 * logvar).exp().view(1, batch_size, latent_dim))
    mat_log_q_z = q.log_prob(z.view(batch_size, 1, latent_dim))  # [B, B, D]
    log_q_z = torch.logsumexp(mat_log_q_z.sum(2), dim=1, keepdim=False) - math.log(batch_size * dataset_size)
    log_prod_q_z = (torch.logsumexp(mat_log_q_z, dim=1, keepdim=False) - math.log(batch_size * dataset_size)).sum(1)
    return (log_q_z - log_prod_q_z).mean()


class Solver:
    """1Konny's ``Solver`` (a plain object): ``global_iter``, ``C_max``, ``C_stop_iter`` and ``gamma`` on it, the
    capacity ``C`` computed in the step from ``global_iter`` (``self.global_iter += 1`` at each step, as its loop)."""

    def __init__(self, torch, F, net, optim, C_max=2.0, C_stop_iter=4, gamma=10.0):
        self.torch, self.F, self.net, self.optim = torch, F, net, optim
        self.C_max, self.C_stop_iter, self.gamma, self.global_iter = C_max, C_stop_iter, gamma, 0

    def step(self, x, eps):
        self.global_iter += 1
        x_recon, mu, logvar, z = self.net(x, eps)
        recon_loss = self.F.binary_cross_entropy_with_logits(x_recon, x, size_average=False).div(x.size(0))
        total_kld, dim_wise_kld, mean_kld = kl_divergence(mu, logvar)
        C = min(self.C_max, self.C_max * self.global_iter / self.C_stop_iter)
        tc = total_correlation(self.torch, z, mu, logvar, DATASET_SIZE)
        beta_vae_loss = recon_loss + self.gamma * self.torch.abs(total_kld - C).squeeze(0) + self.net.beta * tc
        self.optim.zero_grad()
        beta_vae_loss.backward()
        self.optim.step()
        return beta_vae_loss
