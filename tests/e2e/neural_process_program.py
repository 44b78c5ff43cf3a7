"""The neural-process programs of ``test_porting_probes_deq_np_siren.py``, each written once as its reference writes
it, as a function of ``(torch, nn, F)`` (``torch`` is ``torch`` or ``kiln``):

- ``neural_process``: deepmind's neural-process notebook ported to torch (deterministic encoder with a mean
  aggregator, latent encoder ``Normal(mu, 0.1 + 0.9 * torch.sigmoid(log_sigma))``, decoder, the ELBO with
  ``kl_divergence(posterior, prior).sum(-1)``); the CNP is the model without its latent path.
- ``dupont_neural_process``: EmilienDupont/neural-processes' image NP (uint8 masks, ``nonzero``, mask indexing) with
  its trainer's loss ``dupont_loss``.
"""

from __future__ import annotations


def neural_process(torch, nn, F, x_size=1, y_size=1, hidden=8, latent=4, use_latent_path=True,
                   use_deterministic_path=True):
    """deepmind's ``LatentModel`` without attention (the NP); ``use_latent_path=False`` is the CNP."""
    Normal, kl_divergence = torch.distributions.Normal, torch.distributions.kl_divergence

    def batch_mlp(input_size, output_sizes):
        layers, size = [], input_size
        for i, out in enumerate(output_sizes):
            layers.append(nn.Linear(size, out))
            if i < len(output_sizes) - 1:
                layers.append(nn.ReLU())
            size = out
        return nn.Sequential(*layers)

    class DeterministicEncoder(nn.Module):
        def __init__(self, output_sizes):
            super().__init__()
            self.mlp = batch_mlp(x_size + y_size, output_sizes)

        def forward(self, context_x, context_y):
            encoder_input = torch.cat([context_x, context_y], dim=-1)
            hidden = self.mlp(encoder_input)
            return hidden.mean(dim=1)  # the mean aggregator

    class LatentEncoder(nn.Module):
        def __init__(self, output_sizes, num_latents):
            super().__init__()
            self.mlp = batch_mlp(x_size + y_size, output_sizes)
            self.penultimate = nn.Linear(output_sizes[-1], (output_sizes[-1] + num_latents) // 2)
            self.mean = nn.Linear((output_sizes[-1] + num_latents) // 2, num_latents)
            self.log_sigma = nn.Linear((output_sizes[-1] + num_latents) // 2, num_latents)

        def forward(self, x, y):
            hidden = self.mlp(torch.cat([x, y], dim=-1)).mean(dim=1)
            hidden = torch.relu(self.penultimate(hidden))
            mu = self.mean(hidden)
            log_sigma = self.log_sigma(hidden)
            sigma = 0.1 + 0.9 * torch.sigmoid(log_sigma)  # bound the variance
            return Normal(mu, sigma)

    class Decoder(nn.Module):
        def __init__(self, representation_size, output_sizes):
            super().__init__()
            self.mlp = batch_mlp(representation_size + x_size, output_sizes)

        def forward(self, representation, target_x):
            hidden = torch.cat((representation, target_x), dim=-1)
            hidden = self.mlp(hidden)
            mu, log_sigma = torch.split(hidden, y_size, dim=-1)
            sigma = 0.1 + 0.9 * F.softplus(log_sigma)  # bound the variance
            return Normal(mu, sigma), mu, sigma

    class LatentModel(nn.Module):
        def __init__(self):
            super().__init__()
            self._use_latent_path, self._use_deterministic_path = use_latent_path, use_deterministic_path
            if use_latent_path:
                self._latent_encoder = LatentEncoder([hidden, hidden], latent)
            if use_deterministic_path:
                self._deterministic_encoder = DeterministicEncoder([hidden, hidden])
            size = latent * use_latent_path + hidden * use_deterministic_path
            self._decoder = Decoder(size, [hidden, hidden, 2 * y_size])

        def forward(self, query, num_targets, target_y=None):
            (context_x, context_y), target_x = query
            representations = []
            if self._use_latent_path:
                prior = self._latent_encoder(context_x, context_y)
                if target_y is None:
                    latent_rep = prior.sample()
                else:
                    posterior = self._latent_encoder(target_x, target_y)
                    latent_rep = posterior.rsample()
                representations.append(latent_rep.unsqueeze(1).repeat(1, num_targets, 1))
            if self._use_deterministic_path:
                deterministic_rep = self._deterministic_encoder(context_x, context_y)
                representations.append(deterministic_rep.unsqueeze(1).repeat(1, num_targets, 1))
            representation = torch.cat(representations, dim=-1)
            dist, mu, sigma = self._decoder(representation, target_x)
            if target_y is None:
                return mu, sigma, None, None, None
            log_p = dist.log_prob(target_y).sum(-1)
            if self._use_latent_path:
                kl = kl_divergence(posterior, prior).sum(-1, keepdim=True)
                kl = kl.repeat(1, num_targets)
                loss = -torch.mean(log_p - kl / num_targets)
            else:
                kl = None
                loss = -torch.mean(log_p)
            return mu, sigma, log_p, kl, loss

    return LatentModel()


def context_target_split(torch, x, y, locations, num_context):
    """EmilienDupont/neural-processes' ``context_target_split`` with the drawn ``locations`` given (an index tensor):
    the first ``num_context`` are the context, all of them the targets."""
    x_context = x[:, locations[:num_context], :]
    y_context = y[:, locations[:num_context], :]
    x_target = x[:, locations, :]
    y_target = y[:, locations, :]
    return x_context, y_context, x_target, y_target


def dupont_neural_process(torch, nn, F, x_dim=2, y_dim=1, r_dim=8, z_dim=4, h_dim=8):
    """EmilienDupont/neural-processes' ``NeuralProcessImg`` (``models.py``, ``utils.py``): ``Encoder``,
    ``MuSigmaEncoder`` (``0.1 + 0.9 * torch.sigmoid``), ``Decoder`` (``0.1 + 0.9 * F.softplus``), the mean
    aggregator, ``Normal`` posteriors and the image-to-points conversion ``img_mask_to_np_input`` (``mask.nonzero()``,
    ``img[mask_img_size]`` by a uint8 mask, ``.float()`` pixel coordinates)."""
    Normal = torch.distributions.Normal

    class Encoder(nn.Module):
        def __init__(self, x_dim, y_dim, h_dim, r_dim):
            super(Encoder, self).__init__()
            layers = [nn.Linear(x_dim + y_dim, h_dim), nn.ReLU(inplace=True),
                      nn.Linear(h_dim, h_dim), nn.ReLU(inplace=True),
                      nn.Linear(h_dim, r_dim)]
            self.input_to_hidden = nn.Sequential(*layers)

        def forward(self, x, y):
            input_pairs = torch.cat((x, y), dim=1)
            return self.input_to_hidden(input_pairs)

    class MuSigmaEncoder(nn.Module):
        def __init__(self, r_dim, z_dim):
            super(MuSigmaEncoder, self).__init__()
            self.r_to_hidden = nn.Linear(r_dim, r_dim)
            self.hidden_to_mu = nn.Linear(r_dim, z_dim)
            self.hidden_to_sigma = nn.Linear(r_dim, z_dim)

        def forward(self, r):
            hidden = torch.relu(self.r_to_hidden(r))
            mu = self.hidden_to_mu(hidden)
            sigma = 0.1 + 0.9 * torch.sigmoid(self.hidden_to_sigma(hidden))
            return mu, sigma

    class Decoder(nn.Module):
        def __init__(self, x_dim, z_dim, h_dim, y_dim):
            super(Decoder, self).__init__()
            self.x_dim, self.z_dim, self.y_dim = x_dim, z_dim, y_dim
            layers = [nn.Linear(x_dim + z_dim, h_dim), nn.ReLU(inplace=True),
                      nn.Linear(h_dim, h_dim), nn.ReLU(inplace=True)]
            self.xz_to_hidden = nn.Sequential(*layers)
            self.hidden_to_mu = nn.Linear(h_dim, y_dim)
            self.hidden_to_sigma = nn.Linear(h_dim, y_dim)

        def forward(self, x, z):
            batch_size, num_points, _ = x.size()
            z = z.unsqueeze(1).repeat(1, num_points, 1)
            x_flat = x.view(batch_size * num_points, self.x_dim)
            z_flat = z.view(batch_size * num_points, self.z_dim)
            input_pairs = torch.cat((x_flat, z_flat), dim=1)
            hidden = self.xz_to_hidden(input_pairs)
            mu = self.hidden_to_mu(hidden)
            pre_sigma = self.hidden_to_sigma(hidden)
            mu = mu.view(batch_size, num_points, self.y_dim)
            pre_sigma = pre_sigma.view(batch_size, num_points, self.y_dim)
            sigma = 0.1 + 0.9 * F.softplus(pre_sigma)
            return mu, sigma

    class NeuralProcess(nn.Module):
        def __init__(self, x_dim, y_dim, r_dim, z_dim, h_dim):
            super(NeuralProcess, self).__init__()
            self.x_dim, self.y_dim, self.r_dim, self.z_dim, self.h_dim = x_dim, y_dim, r_dim, z_dim, h_dim
            self.xy_to_r = Encoder(x_dim, y_dim, h_dim, r_dim)
            self.r_to_mu_sigma = MuSigmaEncoder(r_dim, z_dim)
            self.xz_to_y = Decoder(x_dim, z_dim, h_dim, y_dim)

        def aggregate(self, r_i):
            return torch.mean(r_i, dim=1)

        def xy_to_mu_sigma(self, x, y):
            batch_size, num_points, _ = x.size()
            x_flat = x.view(batch_size * num_points, self.x_dim)
            y_flat = y.contiguous().view(batch_size * num_points, self.y_dim)
            r_i_flat = self.xy_to_r(x_flat, y_flat)
            r_i = r_i_flat.view(batch_size, num_points, self.r_dim)
            r = self.aggregate(r_i)
            return self.r_to_mu_sigma(r)

        def forward(self, x_context, y_context, x_target, y_target=None):
            if self.training:
                mu_target, sigma_target = self.xy_to_mu_sigma(x_target, y_target)
                mu_context, sigma_context = self.xy_to_mu_sigma(x_context, y_context)
                q_target = Normal(mu_target, sigma_target)
                q_context = Normal(mu_context, sigma_context)
                z_sample = q_target.rsample()
                y_pred_mu, y_pred_sigma = self.xz_to_y(x_target, z_sample)
                p_y_pred = Normal(y_pred_mu, y_pred_sigma)
                return p_y_pred, q_target, q_context
            else:
                mu_context, sigma_context = self.xy_to_mu_sigma(x_context, y_context)
                q_context = Normal(mu_context, sigma_context)
                z_sample = q_context.rsample()
                y_pred_mu, y_pred_sigma = self.xz_to_y(x_target, z_sample)
                p_y_pred = Normal(y_pred_mu, y_pred_sigma)
                return p_y_pred

    class NeuralProcessImg(nn.Module):
        def __init__(self, img_size, r_dim, z_dim, h_dim):
            super(NeuralProcessImg, self).__init__()
            self.img_size = img_size
            self.num_channels, self.height, self.width = img_size
            self.neural_process = NeuralProcess(x_dim=2, y_dim=self.num_channels, r_dim=r_dim, z_dim=z_dim,
                                                h_dim=h_dim)

        def forward(self, img, context_mask, target_mask):
            x_context, y_context = img_mask_to_np_input(torch, img, context_mask)
            x_target, y_target = img_mask_to_np_input(torch, img, target_mask)
            return self.neural_process(x_context, y_context, x_target, y_target)

    return NeuralProcessImg((y_dim, 5, 5), r_dim, z_dim, h_dim)


def img_mask_to_np_input(torch, img, mask, normalize=True):
    """utils.py: the visible pixels of ``img`` as points (coordinates in [-1, 1], intensities - 0.5)."""
    batch_size, num_channels, height, width = img.size()
    # Create a mask which matches exactly with image size which will be used to extract pixel intensities
    mask_img_size = mask.unsqueeze(1).repeat(1, num_channels, 1, 1)
    # Number of points corresponds to number of visible pixels in mask
    num_points = mask[0].nonzero().size(0)
    # Shape (num_nonzeros, 3), where each row contains index of batch, height and width of nonzero
    nonzero_idx = mask.nonzero()
    x = nonzero_idx[:, 1:].view(batch_size, num_points, 2).float()
    y = img[mask_img_size].view(batch_size, num_channels, num_points)
    y = y.permute(0, 2, 1)
    if normalize:
        # Normalize x to [-1, 1]
        x = (x - float(height) / 2) / (float(height) / 2)
        # Normalize y's to [-0.5, 0.5]
        y -= 0.5
    return x, y


def random_context_target_mask(torch, img_size, num_context, num_extra_target, rng):
    """utils.py, ``np.random`` given as ``rng``: uint8 masks of the context pixels and of the targets."""
    _, height, width = img_size
    measurements = rng.choice(range(height * width), size=num_context + num_extra_target, replace=False)
    context_mask = torch.zeros(width, height).byte()
    target_mask = torch.zeros(width, height).byte()
    for i, m in enumerate(measurements):
        row = int(m / width)
        col = m % width
        target_mask[row, col] = 1
        if i < num_context:
            context_mask[row, col] = 1
    return context_mask, target_mask


def batch_context_target_mask(torch, img_size, num_context, num_extra_target, batch_size, rng):
    context_mask_batch = torch.zeros(batch_size, *img_size[1:]).byte()
    target_mask_batch = torch.zeros(batch_size, *img_size[1:]).byte()
    for i in range(batch_size):
        context_mask, target_mask = random_context_target_mask(torch, img_size, num_context, num_extra_target, rng)
        context_mask_batch[i] = context_mask
        target_mask_batch[i] = target_mask
    return context_mask_batch, target_mask_batch


def dupont_loss(torch, p_y_pred, y_target, q_target, q_context):
    """training.py's ``NeuralProcessTrainer._loss``: the negative log-likelihood of the targets plus the KL."""
    log_likelihood = p_y_pred.log_prob(y_target).mean(dim=0).sum()
    kl = torch.distributions.kl_divergence(q_target, q_context).mean(dim=0).sum()
    return -log_likelihood + kl
