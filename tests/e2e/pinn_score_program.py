"""Programs for the PINN / score-matching / gradient-penalty porting probes (see
``test_porting_probes_pinn_score.py``), each written once as its reference writes it: ``torch`` is torch or kiln."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


def burgers_dnn(torch, nn, F, layers=(2, 8, 8, 1)):
    """jayroxis/PINNs' ``DNN``: Linear + Tanh layers named in an ``OrderedDict`` inside a ``Sequential``."""

    class DNN(torch.nn.Module):
        def __init__(self, layers):
            super(DNN, self).__init__()
            self.depth = len(layers) - 1
            self.activation = torch.nn.Tanh
            layer_list = list()
            for i in range(self.depth - 1):
                layer_list.append(('layer_%d' % i, torch.nn.Linear(layers[i], layers[i + 1])))
                layer_list.append(('activation_%d' % i, self.activation()))
            layer_list.append(('layer_%d' % (self.depth - 1), torch.nn.Linear(layers[-2], layers[-1])))
            layerDict = OrderedDict(layer_list)
            self.layers = torch.nn.Sequential(layerDict)

        def forward(self, x):
            out = self.layers(x)
            return out

    return DNN(list(layers))


class Draws:
    """Random draws made by kiln and replayed in torch (the two generators differ for one seed): ``randn_like(x)`` is
    ``torch.randn_like(x)``, ``normal_(t, mean, std)`` is ``t.normal_(mean, std)``, each recorded in kiln and given back
    in the same order in torch."""

    def __init__(self):
        self.recorded, self.replaying = [], None

    def begin(self, torch):
        import kiln

        self.replaying = None if torch is kiln else iter(self.recorded)
        self.torch = torch

    def _value(self, draw):
        if self.replaying is None:
            value = draw()
            self.recorded.append(np.array(value.detach().numpy()))
            return value
        return self.torch.tensor(next(self.replaying))

    def randn_like(self, x):
        return self._value(lambda: self.torch.randn_like(x))

    def draw(self, make):
        """``make()`` (a draw: ``torch.randint(...)``, ``torch.rand(...)``) in kiln, its recorded values in torch."""
        return self._value(make)

    def normal_(self, tensor, mean, std):
        if self.replaying is None:
            return self._value(lambda: tensor.normal_(mean, std))
        return tensor.copy_(self._value(None))


def burgers_data(n_u=10, n_f=20, seed=0):
    """Initial/boundary points ``X_u`` (x, t) with ``u = -sin(pi x)`` at t = 0 and 0 at x = +-1, and collocation
    points ``X_f``, as Raissi's Burgers script samples them (a few, from a NumPy generator)."""
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-1, 1, (n_u // 2, 1))
    initial = np.hstack([x0, np.zeros_like(x0)])
    boundary = np.hstack([rng.choice([-1.0, 1.0], (n_u - n_u // 2, 1)), rng.uniform(0, 1, (n_u - n_u // 2, 1))])
    X_u = np.vstack([initial, boundary])
    u = np.vstack([-np.sin(np.pi * x0), np.zeros((n_u - n_u // 2, 1))])
    lb, ub = np.array([-1.0, 0.0]), np.array([1.0, 1.0])
    X_f = lb + (ub - lb) * rng.uniform(0, 1, (n_f, 2))
    return X_u, u, np.vstack([X_f, X_u]), lb, ub


def burgers_pinn(torch, nn, F, dnn, X_u, u, X_f, nu, cast=lambda t: t.double(), lbfgs=None):
    """jayroxis/PINNs' ``PhysicsInformedNN`` (Burgers, forward problem): inputs as ``torch.tensor(..., requires_grad=True)``
    then cast (the reference's ``.float()``; ``cast`` is ``.double()`` in the float64 runs), ``net_f``'s three
    ``torch.autograd.grad(..., grad_outputs=torch.ones_like(u), retain_graph=True, create_graph=True)``, the L-BFGS
    closure ``loss_func`` (``zero_grad``, both losses, ``backward``, ``self.iter += 1``) driven by ``step``."""

    class PhysicsInformedNN():
        def __init__(self, X_u, u, X_f, nu):
            self.x_u = cast(torch.tensor(X_u[:, 0:1], requires_grad=True))
            self.t_u = cast(torch.tensor(X_u[:, 1:2], requires_grad=True))
            self.x_f = cast(torch.tensor(X_f[:, 0:1], requires_grad=True))
            self.t_f = cast(torch.tensor(X_f[:, 1:2], requires_grad=True))
            self.u = cast(torch.tensor(u))
            self.nu = nu
            self.dnn = dnn
            self.optimizer = torch.optim.LBFGS(
                self.dnn.parameters(), lr=1.0, max_iter=50000, max_eval=50000, history_size=50, tolerance_grad=1e-5,
                tolerance_change=1.0 * np.finfo(float).eps, line_search_fn="strong_wolfe")
            if lbfgs is not None:  # the probe's short run
                self.optimizer = torch.optim.LBFGS(self.dnn.parameters(), **lbfgs)
            self.iter = 0
            self.losses = []

        def net_u(self, x, t):
            u = self.dnn(torch.cat([x, t], dim=1))
            return u

        def net_f(self, x, t):
            u = self.net_u(x, t)
            u_t = torch.autograd.grad(u, t, grad_outputs=torch.ones_like(u), retain_graph=True, create_graph=True)[0]
            u_x = torch.autograd.grad(u, x, grad_outputs=torch.ones_like(u), retain_graph=True, create_graph=True)[0]
            u_xx = torch.autograd.grad(u_x, x, grad_outputs=torch.ones_like(u_x), retain_graph=True, create_graph=True)[0]
            f = u_t + u * u_x - self.nu * u_xx
            return f

        def loss_func(self):
            self.optimizer.zero_grad()
            u_pred = self.net_u(self.x_u, self.t_u)
            f_pred = self.net_f(self.x_f, self.t_f)
            loss_u = torch.mean((self.u - u_pred) ** 2)
            loss_f = torch.mean(f_pred ** 2)
            loss = loss_u + loss_f
            loss.backward()
            self.iter += 1
            self.losses.append(loss.item())
            return loss

        def train(self):
            self.dnn.train()
            return self.optimizer.step(self.loss_func)

        def predict(self, X):
            x = cast(torch.tensor(X[:, 0:1], requires_grad=True))
            t = cast(torch.tensor(X[:, 1:2], requires_grad=True))
            self.dnn.eval()
            u = self.net_u(x, t)
            f = self.net_f(x, t)
            u = u.detach().cpu().numpy()
            f = f.detach().cpu().numpy()
            return u, f

    return PhysicsInformedNN(X_u, u, X_f, nu)


def burgers_identification(torch, nn, F, dnn, X, u, lbfgs):
    """jayroxis/PINNs' Burgers identification: the PDE's coefficients ``lambda_1`` and ``lambda_2`` (as its log) are
    ``torch.nn.Parameter``s registered on the network (``register_parameter``), trained by ``optimizer_Adam`` steps
    (``train(nIter)``: a step per iteration with no closure) then by L-BFGS."""

    class PhysicsInformedNN():
        def __init__(self, X, u):
            self.lambda_1 = torch.tensor([0.0], requires_grad=True)
            self.lambda_2 = torch.tensor([-6.0], requires_grad=True)
            self.lambda_1 = torch.nn.Parameter(self.lambda_1)
            self.lambda_2 = torch.nn.Parameter(self.lambda_2)
            self.dnn = dnn
            self.dnn.register_parameter('lambda_1', self.lambda_1)
            self.dnn.register_parameter('lambda_2', self.lambda_2)
            self.x = torch.tensor(X[:, 0:1], requires_grad=True)
            self.t = torch.tensor(X[:, 1:2], requires_grad=True)
            self.u = torch.tensor(u)
            self.optimizer = torch.optim.LBFGS(self.dnn.parameters(), **lbfgs)
            self.optimizer_Adam = torch.optim.Adam(self.dnn.parameters())
            self.iter = 0

        def net_u(self, x, t):
            return self.dnn(torch.cat([x, t], dim=1))

        def net_f(self, x, t):
            lambda_1 = self.lambda_1
            lambda_2 = torch.exp(self.lambda_2)
            u = self.net_u(x, t)
            u_t = torch.autograd.grad(u, t, grad_outputs=torch.ones_like(u), retain_graph=True, create_graph=True)[0]
            u_x = torch.autograd.grad(u, x, grad_outputs=torch.ones_like(u), retain_graph=True, create_graph=True)[0]
            u_xx = torch.autograd.grad(u_x, x, grad_outputs=torch.ones_like(u_x), retain_graph=True, create_graph=True)[0]
            f = u_t + lambda_1 * u * u_x - lambda_2 * u_xx
            return f

        def loss_func(self):
            u_pred = self.net_u(self.x, self.t)
            f_pred = self.net_f(self.x, self.t)
            loss = torch.mean((self.u - u_pred) ** 2) + torch.mean(f_pred ** 2)
            self.optimizer.zero_grad()
            loss.backward()
            self.iter += 1
            return loss

        def adam_step(self):
            """One iteration of the reference's ``train(nIter)``."""
            u_pred = self.net_u(self.x, self.t)
            f_pred = self.net_f(self.x, self.t)
            loss = torch.mean((self.u - u_pred) ** 2) + torch.mean(f_pred ** 2)
            self.optimizer_Adam.zero_grad()
            loss.backward()
            self.optimizer_Adam.step()
            return loss

        def lbfgs_step(self):
            """The reference's ``train``'s L-BFGS part."""
            self.dnn.train()
            return self.optimizer.step(self.loss_func)

    return PhysicsInformedNN(X, u)


def heat_pinn_loss(torch, model, X, X0, u0, alpha=0.1):
    """The 1-D heat equation ``u_t = alpha u_xx`` as many PINN tutorials write it: one input tensor
    ``X.requires_grad_()`` of columns (t, x), ``du = autograd.grad(u, X, torch.ones_like(u), create_graph=True)[0]``
    sliced by ``du[:, 0:1]``, ``du[:, 1:2]``, the second derivative sliced out of a second ``autograd.grad``; the initial
    condition by ``nn.MSELoss``."""
    X = X.clone()
    X.requires_grad_()
    u = model(X)
    du = torch.autograd.grad(u, X, torch.ones_like(u), create_graph=True)[0]
    u_t, u_x = du[:, 0:1], du[:, 1:2]
    u_xx = torch.autograd.grad(u_x, X, torch.ones_like(u_x), create_graph=True)[0][:, 1:2]
    residual = u_t - alpha * u_xx
    mse = torch.nn.MSELoss()
    return mse(residual, torch.zeros_like(residual)) + mse(model(X0), u0)


def score_net(torch, nn, F, dim=2, hidden=16, n_sigmas=0):
    """A toy score network as ermongroup's score-matching repositories write their 2-D models: an MLP with Softplus
    (``n_sigmas`` > 0: NCSN's conditional form, the noise level's embedding added to the hidden layer, as
    ``ConditionalLinear`` does with ``self.embed(y).view(-1, self.num_out) * out``)."""

    class ConditionalLinear(nn.Module):
        def __init__(self, num_in, num_out, num_classes):
            super().__init__()
            self.num_out = num_out
            self.lin = nn.Linear(num_in, num_out)
            self.embed = nn.Embedding(num_classes, num_out)
            self.embed.weight.data.uniform_()

        def forward(self, x, y):
            out = self.lin(x)
            gamma = self.embed(y)
            out = gamma.view(-1, self.num_out) * out
            return out

    class ConditionalModel(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.lin1 = ConditionalLinear(dim, hidden, num_classes)
            self.lin2 = ConditionalLinear(hidden, hidden, num_classes)
            self.lin3 = nn.Linear(hidden, dim)

        def forward(self, x, y):
            x = F.softplus(self.lin1(x, y))
            x = F.softplus(self.lin2(x, y))
            return self.lin3(x)

    if n_sigmas:
        return ConditionalModel(n_sigmas)
    return nn.Sequential(nn.Linear(dim, hidden), nn.Softplus(), nn.Linear(hidden, hidden), nn.Softplus(),
                         nn.Linear(hidden, dim))


def energy_net(torch, nn, F, dim=2, hidden=16):
    """An energy ``E(x)`` (one number per sample): an MLP with ``nn.ELU`` (smooth, so second derivatives are real)."""
    return nn.Sequential(nn.Linear(dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(), nn.Linear(hidden, 1))


def anneal_dsm_score_estimation(torch, scorenet, samples, labels, sigmas, anneal_power=2., randn_like=None):
    """NCSN's ``losses/dsm.py`` (``randn_like``: the noise's draw, ``torch.randn_like`` unless given)."""
    randn_like = randn_like or torch.randn_like
    used_sigmas = sigmas[labels].view(samples.shape[0], *([1] * len(samples.shape[1:])))
    perturbed_samples = samples + randn_like(samples) * used_sigmas
    target = - 1 / (used_sigmas ** 2) * (perturbed_samples - samples)
    scores = scorenet(perturbed_samples, labels)
    target = target.view(target.shape[0], -1)
    scores = scores.view(scores.shape[0], -1)
    loss = 1 / 2. * ((scores - target) ** 2).sum(dim=-1) * used_sigmas.squeeze() ** anneal_power
    return loss.mean(dim=0)


def sliced_score_estimation(torch, score_net, samples, n_particles=1, randn_like=None):
    """ermongroup/sliced_score_matching's ``losses/sliced_sm.py``: unit projections ``v``, ``gradv = sum(score * v)``,
    ``autograd.grad(gradv, dup_samples, create_graph=True)``."""
    autograd = torch.autograd
    randn_like = randn_like or torch.randn_like
    dup_samples = samples.unsqueeze(0).expand(n_particles, *samples.shape).contiguous().view(-1, *samples.shape[1:])
    dup_samples.requires_grad_(True)
    vectors = randn_like(dup_samples)
    vectors = vectors / torch.norm(vectors, dim=-1, keepdim=True)

    grad1 = score_net(dup_samples)
    gradv = torch.sum(grad1 * vectors)
    loss1 = torch.sum(grad1 * vectors, dim=-1) ** 2 * 0.5
    grad2 = autograd.grad(gradv, dup_samples, create_graph=True)[0]
    loss2 = torch.sum(vectors * grad2, dim=-1)

    loss1 = loss1.view(n_particles, -1).mean(dim=0)
    loss2 = loss2.view(n_particles, -1).mean(dim=0)
    loss = loss1 + loss2
    return loss.mean(), loss1.mean(), loss2.mean()


def sliced_score_estimation_vr(torch, score_net, samples, n_particles=1, randn_like=None):
    """The variance-reduced form (Gaussian ``v``, ``||score||^2 / 2`` in closed form)."""
    autograd = torch.autograd
    randn_like = randn_like or torch.randn_like
    dup_samples = samples.unsqueeze(0).expand(n_particles, *samples.shape).contiguous().view(-1, *samples.shape[1:])
    dup_samples.requires_grad_(True)
    vectors = randn_like(dup_samples)

    grad1 = score_net(dup_samples)
    gradv = torch.sum(grad1 * vectors)
    grad2 = autograd.grad(gradv, dup_samples, create_graph=True)[0]

    grad1 = grad1.view(dup_samples.shape[0], -1)
    loss1 = torch.sum(grad1 * grad1, dim=-1) / 2.

    loss2 = torch.sum((vectors * grad2).view(dup_samples.shape[0], -1), dim=-1)

    loss1 = loss1.view(n_particles, -1).mean(dim=0)
    loss2 = loss2.view(n_particles, -1).mean(dim=0)

    loss = loss1 + loss2
    return loss.mean(), loss1.mean(), loss2.mean()


def sliced_score_matching(torch, energy_net, samples, n_particles=1, randn_like=None):
    """The energy-based form (``losses/sliced_sm.py``'s ``sliced_score_matching``): the score is itself
    ``autograd.grad(logp, dup_samples, create_graph=True)``, so the loss's backward is third order in the energy."""
    autograd = torch.autograd
    randn_like = randn_like or torch.randn_like
    dup_samples = samples.unsqueeze(0).expand(n_particles, *samples.shape).contiguous().view(-1, *samples.shape[1:])
    dup_samples.requires_grad_(True)
    vectors = randn_like(dup_samples)
    vectors = vectors / torch.norm(vectors, dim=-1, keepdim=True)

    logp = -energy_net(dup_samples).sum()
    grad1 = autograd.grad(logp, dup_samples, create_graph=True)[0]
    gradv = torch.sum(grad1 * vectors)
    loss1 = torch.sum(grad1 * vectors, dim=-1) ** 2 * 0.5
    grad2 = autograd.grad(gradv, dup_samples, create_graph=True)[0]
    loss2 = torch.sum(vectors * grad2, dim=-1)

    loss1 = loss1.view(n_particles, -1).mean(dim=0)
    loss2 = loss2.view(n_particles, -1).mean(dim=0)
    loss = loss1 + loss2
    return loss.mean(), loss1.mean(), loss2.mean()


def anneal_Langevin_dynamics(torch, x_mod, scorenet, sigmas, n_steps_each=3, step_lr=0.00002, randn_like=None):
    """NCSN's ``anneal_Langevin_dynamics`` (its runner): under ``torch.no_grad()``, integer labels by
    ``(torch.ones(n) * c).long()``, ``x_mod + step_size * grad + noise * np.sqrt(step_size * 2)``, ``x_mod.to('cpu')``."""
    randn_like = randn_like or torch.randn_like
    images = []
    with torch.no_grad():
        for c, sigma in enumerate(sigmas):
            labels = torch.ones(x_mod.shape[0], device=x_mod.device) * c
            labels = labels.long()
            step_size = step_lr * (sigma / sigmas[-1]) ** 2
            for s in range(n_steps_each):
                images.append(torch.clamp(x_mod, 0.0, 1.0).to('cpu'))
                noise = randn_like(x_mod) * np.sqrt(step_size * 2)
                grad = scorenet(x_mod, labels)
                x_mod = x_mod + step_size * grad + noise
        return images


def sample_langevin(torch, x, model, stepsize, n_steps, noise_scale=None, randn_like=None):
    """An EBM's Langevin sampler as EBM code writes it (e.g. ``sample_langevin`` of swyoon's and others'): ``x.requires_grad
    = True``, ``autograd.grad(out.sum(), x, only_inputs=True)``, ``x = x + dynamics`` (the energy's negative is the
    model's output), samples kept by ``x.detach().to('cpu')``."""
    randn_like = randn_like or torch.randn_like
    if noise_scale is None:
        noise_scale = np.sqrt(stepsize * 2)
    l_samples = []
    l_dynamics = []
    x.requires_grad = True
    for _ in range(n_steps):
        l_samples.append(x.detach().to('cpu'))
        noise = randn_like(x) * noise_scale
        out = model(x)
        grad = torch.autograd.grad(out.sum(), x, only_inputs=True)[0]
        dynamics = stepsize * grad + noise
        x = x + dynamics
        l_samples.append(x.detach().to('cpu'))
        l_dynamics.append(dynamics.detach().to('cpu'))
    return l_samples, l_dynamics


def generate_samples(torch, model, inp_imgs, steps=6, step_size=10, draws=None):
    """The UvA deep-learning tutorial's EBM sampler (``Sampler.generate_samples``): parameters frozen by
    ``p.requires_grad = False``, ``torch.set_grad_enabled(True)``, in-place noise ``noise.normal_(0, 0.005)`` (through
    ``draws``), ``inp_imgs.data.add_``/``clamp_``, ``out_imgs.sum().backward()`` into ``inp_imgs.grad``,
    ``inp_imgs.grad.data.clamp_``, ``inp_imgs.grad.detach_()``/``zero_()``, the mode and flags restored."""
    is_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad = False
    inp_imgs.requires_grad = True
    had_gradients_enabled = torch.is_grad_enabled()
    torch.set_grad_enabled(True)
    noise = torch.randn(inp_imgs.shape, device=inp_imgs.device)
    for _ in range(steps):
        draws.normal_(noise, 0, 0.005)
        inp_imgs.data.add_(noise.data)
        inp_imgs.data.clamp_(min=-1.0, max=1.0)
        out_imgs = -model(inp_imgs)
        out_imgs.sum().backward()
        inp_imgs.grad.data.clamp_(-0.03, 0.03)
        inp_imgs.data.add_(-step_size * inp_imgs.grad.data)
        inp_imgs.grad.detach_()
        inp_imgs.grad.zero_()
        inp_imgs.data.clamp_(min=-1.0, max=1.0)
    for p in model.parameters():
        p.requires_grad = True
    model.train(is_training)
    torch.set_grad_enabled(had_gradients_enabled)
    return inp_imgs


def igebm_langevin(torch, model, x, num_steps, step_size=10.0, noise_scale=0.005, randn_like=None):
    """The Langevin loop of PyTorch ports of Du & Mordatch's IGEBM: ``x.requires_grad_(True)`` at each step, the energy's
    input gradient by ``torch.autograd.grad(energy.sum(), x)``, ``x = x - step_size * grad + noise``, then
    ``x.detach_()`` and ``x.clamp_(-1, 1)`` in place."""
    randn_like = randn_like or torch.randn_like
    for _ in range(num_steps):
        x.requires_grad_(True)
        energy = model(x)
        grad = torch.autograd.grad(energy.sum(), x)[0]
        x = x - step_size * grad + noise_scale * randn_like(x)
        x.detach_()
        x.clamp_(-1.0, 1.0)
    return x


def jem_sample_q(torch, f, replay_buffer, batch_size, n_steps, draws, sgld_lr=1.0, sgld_std=0.01, reinit_freq=0.05,
                 FloatTensor=None):
    """JEM's ``sample_q`` with ``sample_p_0``: a replay buffer indexed by ``torch.randint``, re-initialised where
    ``torch.rand(bs) < reinit_freq``, ``t.autograd.Variable(init_sample, requires_grad=True)``, SGLD steps
    ``x_k.data += sgld_lr * f_prime + sgld_std * t.randn_like(x_k)``, ``f.eval()``/``f.train()``, and the samples
    written back by ``replay_buffer[buffer_inds] = final_samples.cpu()`` (draws through ``draws``). ``FloatTensor``: the
    reference's ``t.FloatTensor``; float64 runs give ``torch.Tensor`` (the default dtype's)."""
    t = torch
    FloatTensor = FloatTensor or t.FloatTensor

    def init_random(bs):
        return draws.draw(lambda: FloatTensor(bs, replay_buffer.shape[1]).uniform_(-1, 1))

    def sample_p_0(replay_buffer, bs):
        if len(replay_buffer) == 0:
            return init_random(bs), []
        buffer_size = len(replay_buffer)
        inds = draws.draw(lambda: t.randint(0, buffer_size, (bs,)))
        buffer_samples = replay_buffer[inds]
        random_samples = init_random(bs)
        choose_random = (draws.draw(lambda: t.rand(bs)) < reinit_freq).float()[:, None]
        samples = choose_random * random_samples + (1 - choose_random) * buffer_samples
        return samples, inds

    f.eval()
    init_sample, buffer_inds = sample_p_0(replay_buffer, bs=batch_size)
    x_k = t.autograd.Variable(init_sample, requires_grad=True)
    for k in range(n_steps):
        f_prime = t.autograd.grad(f(x_k).sum(), [x_k], retain_graph=True)[0]
        x_k.data += sgld_lr * f_prime + sgld_std * draws.randn_like(x_k)
    f.train()
    final_samples = x_k.detach()
    if len(replay_buffer) > 0:
        replay_buffer[buffer_inds] = final_samples.cpu()
    return final_samples


def contrastive_divergence_loss(torch, cnn, real_imgs, fake_imgs, alpha=0.1):
    """The UvA tutorial's ``DeepEnergyModel.training_step``'s loss: ``cnn`` outputs the negative energy;
    ``real_out, fake_out = self.cnn(inp_imgs).chunk(2, dim=0)``, the regulariser and the contrastive divergence."""
    inp_imgs = torch.cat([real_imgs, fake_imgs], dim=0)
    real_out, fake_out = cnn(inp_imgs).chunk(2, dim=0)
    reg_loss = alpha * (real_out ** 2 + fake_out ** 2).mean()
    cdiv_loss = fake_out.mean() - real_out.mean()
    loss = reg_loss + cdiv_loss
    return loss


def r1_discriminator(torch, nn, F, channels=2, width=4, size=8):
    """A small StyleGAN-like discriminator: convs with ``F.leaky_relu(..., 0.2) * math.sqrt(2)`` (fused_leaky_relu's
    gain), a minibatch-free head (``view`` + Linear), smooth enough that the R1 penalty's backward is second order
    through convs."""
    import math

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
            self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
            self.final_linear = nn.Linear(2 * width * (size // 2) ** 2, 1)

        def forward(self, input):
            out = F.leaky_relu(self.conv1(input), 0.2) * math.sqrt(2)
            out = F.leaky_relu(self.conv2(out), 0.2) * math.sqrt(2)
            out = out.view(out.shape[0], -1)
            return self.final_linear(out)

    return Discriminator()


def d_logistic_loss(torch, F, real_pred, fake_pred):
    """rosinality/stylegan2-pytorch's ``d_logistic_loss``."""
    real_loss = F.softplus(-real_pred)
    fake_loss = F.softplus(fake_pred)
    return real_loss.mean() + fake_loss.mean()


def d_r1_loss(torch, real_pred, real_img):
    """rosinality/stylegan2-pytorch's ``d_r1_loss``: ``autograd.grad(outputs=real_pred.sum(), inputs=real_img,
    create_graph=True)``, ``grad_real.pow(2).reshape(grad_real.shape[0], -1).sum(1).mean()``."""
    grad_real, = torch.autograd.grad(outputs=real_pred.sum(), inputs=real_img, create_graph=True)
    grad_penalty = grad_real.pow(2).reshape(grad_real.shape[0], -1).sum(1).mean()
    return grad_penalty


def stylegan2_d_steps(torch, F, discriminator, d_optim, r1=10.0, d_reg_every=2):
    """train.py's discriminator update and its lazy R1 regularisation (every ``d_reg_every`` iterations:
    ``real_img.requires_grad = True``, ``(args.r1 / 2 * r1_loss * args.d_reg_every + 0 * real_pred[0]).backward()``)."""

    def requires_grad(model, flag=True):
        for p in model.parameters():
            p.requires_grad = flag

    def d_step(real_img, fake_img):
        requires_grad(discriminator, True)
        fake_pred = discriminator(fake_img)
        real_pred = discriminator(real_img)
        d_loss = d_logistic_loss(torch, F, real_pred, fake_pred)
        discriminator.zero_grad()
        d_loss.backward()
        d_optim.step()
        return d_loss

    def d_reg_step(real_img):
        real_img.requires_grad = True
        real_pred = discriminator(real_img)
        r1_loss = d_r1_loss(torch, real_pred, real_img)
        discriminator.zero_grad()
        (r1 / 2 * r1_loss * d_reg_every + 0 * real_pred[0]).backward()
        d_optim.step()
        return r1_loss

    return d_step, d_reg_step


def flat_parameter_loss(torch, F, model, x, y):
    """A model's loss as a function of its flattened parameters, as curvature code writes it (PyHessian-style
    analyses, influence functions): ``{k: v.detach() for k, v in model.named_parameters()}``, ``torch.cat`` of the
    ``reshape(-1)``s, and ``torch.func.functional_call(model, params, (x,))`` with the flat vector ``split`` back into
    ``view``s of each shape. Returns ``(loss_of_flat, flat)``."""
    functional_call = torch.func.functional_call  # the reference's ``from torch.func import functional_call``
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = list(params)
    shapes = [p.shape for p in params.values()]
    numels = [p.numel() for p in params.values()]
    flat = torch.cat([p.reshape(-1) for p in params.values()])

    def loss_of_flat(flat):
        chunks = flat.split(numels)
        unflat = {name: chunk.view(shape) for name, chunk, shape in zip(names, chunks, shapes)}
        return F.mse_loss(functional_call(model, unflat, (x,)), y)

    return loss_of_flat, flat


def pearlmutter_hvp(torch, loss, params, vs):
    """The double-backward Hessian-vector product (Pearlmutter's trick) as training code writes it:
    ``grads = torch.autograd.grad(loss, params, create_graph=True)``, ``dot = sum((g * v).sum() ...)``,
    ``torch.autograd.grad(dot, params)``."""
    grads = torch.autograd.grad(loss, params, create_graph=True)
    dot = sum((g * v).sum() for g, v in zip(grads, vs))
    return torch.autograd.grad(dot, params)


def functional_burgers_loss(torch, model, X0, nu=0.01):
    """A PINN written with ``torch.func`` as functorch-era tutorials write it: ``u(params, t, x)`` by
    ``functional_call`` on one point (``torch.stack([t, x]).unsqueeze(0)``, ``.squeeze()``), its derivatives by
    ``grad(u, argnums=1)``, ``grad(grad(u, argnums=2), argnums=2)``, the residual mapped over the collocation points by
    ``vmap(residual, in_dims=(None, 0, 0))``, the initial condition by ``vmap`` over ``(torch.zeros_like(X0), X0)``
    (``X0`` a closure tensor). Returns ``(u, loss_fn)``."""
    func = torch.func

    def u(params, t, x):
        return func.functional_call(model, params, (torch.stack([t, x]).unsqueeze(0),)).squeeze()

    u_t = func.grad(u, argnums=1)
    u_x = func.grad(u, argnums=2)
    u_xx = func.grad(func.grad(u, argnums=2), argnums=2)

    def residual(params, t, x):
        return u_t(params, t, x) + u(params, t, x) * u_x(params, t, x) - nu * u_xx(params, t, x)

    def loss_fn(params, T, X):
        r = func.vmap(residual, in_dims=(None, 0, 0))(params, T, X)
        u0 = func.vmap(u, in_dims=(None, 0, 0))(params, torch.zeros_like(X0), X0)
        return (r ** 2).mean() + ((u0 + torch.sin(np.pi * X0)) ** 2).mean()

    return u, loss_fn


def jem_training_step(torch, f, optimizer, x_p, init_sample, noises, sgld_lr=0.1, sgld_std=0.01, n_steps=3):
    """JEM's training iteration with ``sample_q``'s SGLD inside (its draws given: ``init_sample`` for
    ``sample_p_0``'s, ``noises[k]`` for each step's ``t.randn_like(x_k)``), the shape a whole compiled step takes:
    ``f.eval()``, ``t.autograd.Variable(init_sample, requires_grad=True)``, ``autograd.grad(f(x_k).sum(), [x_k],
    retain_graph=True)``, ``x_k.data += ...``, ``f.train()``, then ``fp - fq`` with an L2 penalty on both."""
    t = torch
    f.eval()
    x_k = t.autograd.Variable(init_sample, requires_grad=True)
    for k in range(n_steps):
        f_prime = t.autograd.grad(f(x_k).sum(), [x_k], retain_graph=True)[0]
        x_k.data += sgld_lr * f_prime + sgld_std * noises[k]
    f.train()
    x_q = x_k.detach()
    fp, fq = f(x_p).mean(), f(x_q).mean()
    loss = -(fp - fq) + 0.1 * (fp ** 2 + fq ** 2)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss, x_q
