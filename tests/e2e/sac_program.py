"""Soft Actor-Critic written once for either library (``torch`` is torch or kiln), as CleanRL's
``sac_continuous_action.py`` and Spinning Up's ``sac`` write it, for ``tests/e2e/test_porting_probes_sac.py``.

Also here: a deterministic continuous environment (NumPy, gym's ``step`` API), replay buffers of NumPy arrays sampled
by indices, and ``NoiseTape``, which makes ``Normal.rsample()`` draw the same standard-normal noise in both libraries.
"""

from __future__ import annotations

import itertools
import math
from copy import deepcopy

import numpy as np

OBS_DIM, ACT_DIM, HIDDEN = 3, 2, 16
LOW, HIGH = np.array([-2.0, 0.0]), np.array([2.0, 1.0])


class SyntheticContinuousEnv:
    """``obs' = tanh(obs A + action B)``; reward for keeping ``obs[0]`` near 0.3 cheaply; terminated when ``obs[1] >
    0.7``, truncated after 4 steps; gym's autoreset (the final observation in ``infos``). ``action_space.sample()`` is
    the env's own NumPy draw, the same in both runs."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.A, self.B = rng.standard_normal((OBS_DIM, OBS_DIM)) * 0.6, rng.standard_normal((ACT_DIM, OBS_DIM)) * 0.8
        self.starts, self.rng, self.episodes, self.t = rng.uniform(-0.5, 0.5, (5, OBS_DIM)), rng, 0, 0

    def reset(self, seed=None):
        self.obs, self.t = self.starts[self.episodes % len(self.starts)].copy(), 0
        return self.obs.copy(), {}

    def sample_action(self):
        return self.rng.uniform(LOW, HIGH)

    def step(self, action):
        self.obs = np.tanh(self.obs @ self.A + action @ self.B)
        reward = 1.0 - abs(self.obs[0] - 0.3) - 0.05 * float((action ** 2).sum())
        self.t += 1
        terminated, truncated = bool(self.obs[1] > 0.7), self.t >= 4
        final = self.obs.copy()
        if terminated or truncated:
            self.episodes += 1
            self.reset()
        return self.obs.copy(), reward, terminated, truncated, {"final_observation": final}


class ReplayBuffer:
    """NumPy arrays written at a cursor, sampled by ``randint`` indices (stable-baselines3's / Spinning Up's)."""

    def __init__(self, size, dtype, seed=0):
        self.obs, self.next_obs = np.zeros((size, OBS_DIM), dtype), np.zeros((size, OBS_DIM), dtype)
        self.actions, self.rewards, self.dones = np.zeros((size, ACT_DIM), dtype), np.zeros(size, dtype), np.zeros(size, dtype)
        self.ptr, self.size, self.rng = 0, 0, np.random.RandomState(seed)

    def add(self, obs, next_obs, action, reward, done):
        self.obs[self.ptr], self.next_obs[self.ptr], self.actions[self.ptr] = obs, next_obs, action
        self.rewards[self.ptr], self.dones[self.ptr] = reward, done
        self.ptr, self.size = (self.ptr + 1) % len(self.obs), min(self.size + 1, len(self.obs))

    def sample(self, batch_size):
        idxs = self.rng.randint(0, self.size, size=batch_size)
        return self.obs[idxs], self.actions[idxs], self.rewards[idxs], self.next_obs[idxs], self.dones[idxs]


class NoiseTape:
    """The standard-normal noise of ``Normal.rsample`` (``loc + eps * scale`` in both libraries), the same in kiln and
    torch: their generators give other streams for one seed. The test replaces each library's draw (torch's
    ``torch.distributions.normal._standard_normal``, kiln's ``Distribution._standard_normal``) by ``draw``, which hands
    out eager tensors held here, one per slot of each shape, cycling; ``refill`` gives them new NumPy noise before each
    environment step or update. A ``kiln.compile``d update reads them as lifted closure tensors, so each call sees the
    new noise, as torch's eager loop does."""

    def __init__(self, torch, slots, batch_size, seed=7):
        self.torch, self.slots, self.batch_size, self.rng = torch, slots, batch_size, np.random.default_rng(seed)
        self.buffers = {shape: [torch.zeros(shape) for _ in range(count)] for shape, count in slots.items()}
        self.used = {shape: 0 for shape in slots}

    def refill(self):
        with self.torch.no_grad():
            for shape, buffers in self.buffers.items():
                for buffer in buffers:
                    buffer.copy_(self.torch.tensor(self.rng.standard_normal(shape)))
        self.rewind()

    def rewind(self):
        """Hand out the slots from the first again: at the start of each update, and of each trace of a compiled one
        (``kiln.compile`` may trace a function more than once in a call)."""
        self.used = {shape: 0 for shape in self.slots}

    def rewinding(self, update):
        """``update`` that first rewinds the tape (the function to ``kiln.compile``)."""

        def update_from_the_first_slot(*args):
            self.rewind()
            return update(*args)

        return update_from_the_first_slot

    def draw(self, shape):
        shape = self._slot_shape(tuple(shape))
        slot = self.used[shape] % len(self.buffers[shape])
        self.used[shape] += 1
        return self.buffers[shape][slot]

    def _slot_shape(self, shape):
        """The tape's shape for a draw of ``shape``, whose batch dim is a symbol (``'N'``, the minibatch's
        ``batch_size``) inside ``kiln.compile``."""
        fits = [held for held in self.buffers if len(held) == len(shape) and all(
            dim == other or (isinstance(dim, str) and other == self.batch_size) for dim, other in zip(shape, held))]
        assert len(fits) == 1, f"an rsample of shape {shape}: the tape holds {list(self.buffers)}"
        return fits[0]


# --- CleanRL: sac_continuous_action.py ------------------------------------------------------------------------------

LOG_STD_MAX = 2
LOG_STD_MIN = -5


def cleanrl_networks(torch, nn, F):
    class SoftQNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(OBS_DIM + ACT_DIM, HIDDEN)
            self.fc2 = nn.Linear(HIDDEN, HIDDEN)
            self.fc3 = nn.Linear(HIDDEN, 1)

        def forward(self, x, a):
            x = torch.cat([x, a], 1)
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = self.fc3(x)
            return x

    class Actor(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(OBS_DIM, HIDDEN)
            self.fc2 = nn.Linear(HIDDEN, HIDDEN)
            self.fc_mean = nn.Linear(HIDDEN, ACT_DIM)
            self.fc_logstd = nn.Linear(HIDDEN, ACT_DIM)
            # action rescaling
            self.register_buffer("action_scale", torch.tensor((HIGH - LOW) / 2.0, dtype=torch.float32))
            self.register_buffer("action_bias", torch.tensor((HIGH + LOW) / 2.0, dtype=torch.float32))

        def forward(self, x):
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            mean = self.fc_mean(x)
            log_std = self.fc_logstd(x)
            log_std = torch.tanh(log_std)
            log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (log_std + 1)  # From SpinUp / Denis Yarats
            return mean, log_std

        def get_action(self, x):
            mean, log_std = self(x)
            std = log_std.exp()
            normal = torch.distributions.Normal(mean, std)
            x_t = normal.rsample()  # for reparameterization trick (mean + std * N(0,1))
            y_t = torch.tanh(x_t)
            action = y_t * self.action_scale + self.action_bias
            log_prob = normal.log_prob(x_t)
            # Enforcing Action Bound
            log_prob -= torch.log(self.action_scale * (1 - y_t.pow(2)) + 1e-6)
            log_prob = log_prob.sum(1, keepdim=True)
            mean = torch.tanh(mean) * self.action_scale + self.action_bias
            return action, log_prob, mean

    qf1, qf2, qf1_target, qf2_target = SoftQNetwork(), SoftQNetwork(), SoftQNetwork(), SoftQNetwork()
    qf1_target.load_state_dict(qf1.state_dict())
    qf2_target.load_state_dict(qf2.state_dict())
    return nn.ModuleDict({"actor": Actor(), "qf1": qf1, "qf2": qf2, "qf1_target": qf1_target, "qf2_target": qf2_target})


class CleanRLArgs:
    total_timesteps, learning_starts, batch_size, gamma, tau = 12, 5, 6, 0.99, 0.1
    policy_lr, q_lr, policy_frequency, target_network_frequency, autotune = 3e-2, 2e-2, 2, 1, True


def cleanrl_update(torch, F, nets, optimizers, args, state):
    """The body of CleanRL's ``if global_step > args.learning_starts:`` block after ``rb.sample``; ``state`` holds
    ``alpha`` (a Python float, ``log_alpha.exp().item()``), ``log_alpha`` and ``target_entropy``."""
    actor, qf1, qf2, qf1_target, qf2_target = (nets[k] for k in ("actor", "qf1", "qf2", "qf1_target", "qf2_target"))
    q_optimizer, actor_optimizer, a_optimizer = optimizers

    def update(observations, actions, rewards, next_observations, dones, global_step):
        alpha, log_alpha, target_entropy = state["alpha"], state["log_alpha"], state["target_entropy"]
        with torch.no_grad():
            next_state_actions, next_state_log_pi, _ = actor.get_action(next_observations)
            qf1_next_target = qf1_target(next_observations, next_state_actions)
            qf2_next_target = qf2_target(next_observations, next_state_actions)
            min_qf_next_target = torch.min(qf1_next_target, qf2_next_target) - alpha * next_state_log_pi
            next_q_value = rewards.flatten() + (1 - dones.flatten()) * args.gamma * (min_qf_next_target).view(-1)

        qf1_a_values = qf1(observations, actions).view(-1)
        qf2_a_values = qf2(observations, actions).view(-1)
        qf1_loss = F.mse_loss(qf1_a_values, next_q_value)
        qf2_loss = F.mse_loss(qf2_a_values, next_q_value)
        qf_loss = qf1_loss + qf2_loss

        # optimize the model
        q_optimizer.zero_grad()
        qf_loss.backward()
        q_optimizer.step()
        record = {"qf_loss": qf_loss.item(), "qf1_values": qf1_a_values.detach().numpy().copy()}

        if global_step % args.policy_frequency == 0:  # TD 3 Delayed update support
            for _ in range(args.policy_frequency):  # compensate for the delay by doing 'actor_update_interval' instead of 1
                pi, log_pi, _ = actor.get_action(observations)
                qf1_pi = qf1(observations, pi)
                qf2_pi = qf2(observations, pi)
                min_qf_pi = torch.min(qf1_pi, qf2_pi)
                actor_loss = ((alpha * log_pi) - min_qf_pi).mean()

                actor_optimizer.zero_grad()
                actor_loss.backward()
                actor_optimizer.step()

                if args.autotune:
                    with torch.no_grad():
                        _, log_pi, _ = actor.get_action(observations)
                    alpha_loss = (-log_alpha.exp() * (log_pi + target_entropy)).mean()

                    a_optimizer.zero_grad()
                    alpha_loss.backward()
                    a_optimizer.step()
                    alpha = log_alpha.exp().item()
                record.setdefault("actor_losses", []).append(actor_loss.item())
                record.setdefault("alpha_losses", []).append(alpha_loss.item())
        state["alpha"] = alpha

        # update the target networks
        if global_step % args.target_network_frequency == 0:
            for param, target_param in zip(qf1.parameters(), qf1_target.parameters()):
                target_param.data.copy_(args.tau * param.data + (1 - args.tau) * target_param.data)
            for param, target_param in zip(qf2.parameters(), qf2_target.parameters()):
                target_param.data.copy_(args.tau * param.data + (1 - args.tau) * target_param.data)
        return record

    return update


def leanrl_update(torch, F, nets, optimizers, args, alpha, log_alpha, target_entropy, refresh_alpha=False):
    """The same update as one function of tensors, as LeanRL's ``sac_continuous_action_torchcompile.py`` writes it for
    ``torch.compile``: ``alpha`` a tensor the loop refreshes after each call by ``alpha.copy_(log_alpha.detach().exp())``
    (no ``.item()``; ``refresh_alpha`` refreshes it inside instead), losses returned detached, the policy update every
    call; the polyak update of the targets (LeanRL's ``lerp_`` of a TensorDict, outside) in CleanRL's form, inside."""
    actor, qf1, qf2, qf1_target, qf2_target = (nets[k] for k in ("actor", "qf1", "qf2", "qf1_target", "qf2_target"))
    q_optimizer, actor_optimizer, a_optimizer = optimizers

    def update(observations, actions, rewards, next_observations, dones):
        with torch.no_grad():
            next_state_actions, next_state_log_pi, _ = actor.get_action(next_observations)
            qf1_next_target = qf1_target(next_observations, next_state_actions)
            qf2_next_target = qf2_target(next_observations, next_state_actions)
            min_qf_next_target = torch.min(qf1_next_target, qf2_next_target) - alpha * next_state_log_pi
            next_q_value = rewards.flatten() + (1 - dones.flatten()) * args.gamma * min_qf_next_target.view(-1)
        q_optimizer.zero_grad()
        qf1_a_values = qf1(observations, actions).view(-1)
        qf2_a_values = qf2(observations, actions).view(-1)
        qf_loss = F.mse_loss(qf1_a_values, next_q_value) + F.mse_loss(qf2_a_values, next_q_value)
        qf_loss.backward()
        q_optimizer.step()

        actor_optimizer.zero_grad()
        pi, log_pi, _ = actor.get_action(observations)
        min_qf_pi = torch.min(qf1(observations, pi), qf2(observations, pi))
        actor_loss = ((alpha * log_pi) - min_qf_pi).mean()
        actor_loss.backward()
        actor_optimizer.step()

        a_optimizer.zero_grad()
        with torch.no_grad():
            _, log_pi, _ = actor.get_action(observations)
        alpha_loss = (-log_alpha.exp() * (log_pi + target_entropy)).mean()
        alpha_loss.backward()
        a_optimizer.step()
        if refresh_alpha:
            alpha.copy_(log_alpha.detach().exp())

        # update the target networks
        for param, target_param in zip(qf1.parameters(), qf1_target.parameters()):
            target_param.data.copy_(args.tau * param.data + (1 - args.tau) * target_param.data)
        for param, target_param in zip(qf2.parameters(), qf2_target.parameters()):
            target_param.data.copy_(args.tau * param.data + (1 - args.tau) * target_param.data)
        return qf_loss.detach(), actor_loss.detach(), alpha_loss.detach()

    return update


# --- Spinning Up: sac/core.py and sac/sac.py -----------------------------------------------------------------------

SPINUP_LOG_STD_MAX = 2
SPINUP_LOG_STD_MIN = -20


def spinup_actor_critic(torch, nn, F):
    def mlp(sizes, activation, output_activation=nn.Identity):
        layers = []
        for j in range(len(sizes) - 1):
            act = activation if j < len(sizes) - 2 else output_activation
            layers += [nn.Linear(sizes[j], sizes[j + 1]), act()]
        return nn.Sequential(*layers)

    class SquashedGaussianMLPActor(nn.Module):
        def __init__(self, obs_dim, act_dim, hidden_sizes, activation, act_limit):
            super().__init__()
            self.net = mlp([obs_dim] + list(hidden_sizes), activation, activation)
            self.mu_layer = nn.Linear(hidden_sizes[-1], act_dim)
            self.log_std_layer = nn.Linear(hidden_sizes[-1], act_dim)
            self.act_limit = act_limit

        def forward(self, obs, deterministic=False, with_logprob=True):
            net_out = self.net(obs)
            mu = self.mu_layer(net_out)
            log_std = self.log_std_layer(net_out)
            log_std = torch.clamp(log_std, SPINUP_LOG_STD_MIN, SPINUP_LOG_STD_MAX)
            std = torch.exp(log_std)

            # Pre-squash distribution and sample
            pi_distribution = torch.distributions.Normal(mu, std)
            if deterministic:
                # Only used for evaluating policy at test time.
                pi_action = mu
            else:
                pi_action = pi_distribution.rsample()

            if with_logprob:
                logp_pi = pi_distribution.log_prob(pi_action).sum(axis=-1)
                logp_pi -= (2 * (np.log(2) - pi_action - F.softplus(-2 * pi_action))).sum(axis=1)
            else:
                logp_pi = None

            pi_action = torch.tanh(pi_action)
            pi_action = self.act_limit * pi_action
            return pi_action, logp_pi

    class MLPQFunction(nn.Module):
        def __init__(self, obs_dim, act_dim, hidden_sizes, activation):
            super().__init__()
            self.q = mlp([obs_dim + act_dim] + list(hidden_sizes) + [1], activation)

        def forward(self, obs, act):
            q = self.q(torch.cat([obs, act], dim=-1))
            return torch.squeeze(q, -1)  # Critical to ensure q has right shape.

    class MLPActorCritic(nn.Module):
        def __init__(self, hidden_sizes=(HIDDEN, HIDDEN), activation=nn.ReLU):
            super().__init__()
            act_limit = 1.5
            self.pi = SquashedGaussianMLPActor(OBS_DIM, ACT_DIM, hidden_sizes, activation, act_limit)
            self.q1 = MLPQFunction(OBS_DIM, ACT_DIM, hidden_sizes, activation)
            self.q2 = MLPQFunction(OBS_DIM, ACT_DIM, hidden_sizes, activation)

        def act(self, obs, deterministic=False):
            with torch.no_grad():
                a, _ = self.pi(obs, deterministic, False)
                return a.numpy()

    return MLPActorCritic()


def spinup_update(torch, ac, ac_targ, q_optimizer, pi_optimizer, gamma=0.99, alpha=0.2, polyak=0.9):
    """``sac.py``'s ``compute_loss_q``, ``compute_loss_pi`` and ``update`` (the Q-networks frozen by ``requires_grad =
    False`` for the policy step, the target networks by polyak averaging under ``no_grad``); returns the losses."""
    q_params = itertools.chain(ac.q1.parameters(), ac.q2.parameters())
    q_params = list(q_params)  # Spinning Up keeps the chain; a list serves the loop of each update

    def compute_loss_q(o, a, r, o2, d):
        q1 = ac.q1(o, a)
        q2 = ac.q2(o, a)

        # Bellman backup for Q functions
        with torch.no_grad():
            # Target actions come from *current* policy
            a2, logp_a2 = ac.pi(o2)

            # Target Q-values
            q1_pi_targ = ac_targ.q1(o2, a2)
            q2_pi_targ = ac_targ.q2(o2, a2)
            q_pi_targ = torch.min(q1_pi_targ, q2_pi_targ)
            backup = r + gamma * (1 - d) * (q_pi_targ - alpha * logp_a2)

        # MSE loss against Bellman backup
        loss_q1 = ((q1 - backup) ** 2).mean()
        loss_q2 = ((q2 - backup) ** 2).mean()
        loss_q = loss_q1 + loss_q2
        return loss_q

    def compute_loss_pi(o):
        pi, logp_pi = ac.pi(o)
        q1_pi = ac.q1(o, pi)
        q2_pi = ac.q2(o, pi)
        q_pi = torch.min(q1_pi, q2_pi)

        # Entropy-regularized policy loss
        loss_pi = (alpha * logp_pi - q_pi).mean()
        return loss_pi

    def update(o, a, r, o2, d):
        # First run one gradient descent step for Q1 and Q2
        q_optimizer.zero_grad()
        loss_q = compute_loss_q(o, a, r, o2, d)
        loss_q.backward()
        q_optimizer.step()

        # Freeze Q-networks so you don't waste computational effort
        # computing gradients for them during the policy learning step.
        for p in q_params:
            p.requires_grad = False

        # Next run one gradient descent step for pi.
        pi_optimizer.zero_grad()
        loss_pi = compute_loss_pi(o)
        loss_pi.backward()
        pi_optimizer.step()

        # Unfreeze Q-networks so you can optimize it at next DDPG step.
        for p in q_params:
            p.requires_grad = True

        # Finally, update target networks by polyak averaging.
        with torch.no_grad():
            for p, p_targ in zip(ac.parameters(), ac_targ.parameters()):
                # NB: We use an in-place operation rather than "out=" version to avoid
                # overhead of the torch.distributions.Normal
                p_targ.data.mul_(polyak)
                p_targ.data.add_((1 - polyak) * p.data)
        return loss_q.detach(), loss_pi.detach()

    return update


def spinup_target(ac):
    """``ac_targ = deepcopy(ac)`` with its parameters frozen, as ``sac.py`` makes it."""
    ac_targ = deepcopy(ac)
    for p in ac_targ.parameters():
        p.requires_grad = False
    return ac_targ


# --- Denis Yarats' pytorch_sac: agent/actor.py, agent/critic.py, agent/sac.py, utils.py -----------------------------


def yarats_squashed_normal(torch):
    """``actor.py``'s ``TanhTransform`` (on ``pyd.constraints``) and ``SquashedNormal``."""
    pyd = torch.distributions
    F = torch.nn.functional

    class TanhTransform(pyd.transforms.Transform):
        domain = pyd.constraints.real
        codomain = pyd.constraints.interval(-1.0, 1.0)
        bijective = True
        sign = +1

        def __init__(self, cache_size=1):
            super().__init__(cache_size=cache_size)

        @staticmethod
        def atanh(x):
            return 0.5 * (x.log1p() - (-x).log1p())

        def __eq__(self, other):
            return isinstance(other, TanhTransform)

        def _call(self, x):
            return x.tanh()

        def _inverse(self, y):
            # We do not clamp to the boundary here as it may degrade the performance of certain algorithms.
            # one should use `cache_size=1` instead
            return self.atanh(y)

        def log_abs_det_jacobian(self, x, y):
            # We use a formula that is more numerically stable, see details in the following link
            # https://github.com/tensorflow/probability/commit/ef6bb176e0ebd1cf6e25c6b5cecdd2428c22963f#diff-e120f70e92e6741bca649f04fcd907b7
            return 2. * (math.log(2.) - x - F.softplus(-2. * x))

    class SquashedNormal(pyd.transformed_distribution.TransformedDistribution):
        def __init__(self, loc, scale):
            self.loc = loc
            self.scale = scale

            self.base_dist = pyd.Normal(loc, scale)
            transforms = [TanhTransform()]
            super().__init__(self.base_dist, transforms)

        @property
        def mean(self):
            mu = self.loc
            for tr in self.transforms:
                mu = tr(mu)
            return mu

    return SquashedNormal


def yarats_networks(torch, nn, F, hidden_dim=HIDDEN, hidden_depth=2, log_std_bounds=(-5, 2)):
    SquashedNormal = yarats_squashed_normal(torch)

    def weight_init(m):
        """Custom weight init for Conv2D and Linear layers."""
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight.data)
            if hasattr(m.bias, 'data'):
                m.bias.data.fill_(0.0)

    def mlp(input_dim, hidden_dim, output_dim, hidden_depth, output_mod=None):
        if hidden_depth == 0:
            mods = [nn.Linear(input_dim, output_dim)]
        else:
            mods = [nn.Linear(input_dim, hidden_dim), nn.ReLU(inplace=True)]
            for i in range(hidden_depth - 1):
                mods += [nn.Linear(hidden_dim, hidden_dim), nn.ReLU(inplace=True)]
            mods.append(nn.Linear(hidden_dim, output_dim))
        if output_mod is not None:
            mods.append(output_mod)
        trunk = nn.Sequential(*mods)
        return trunk

    class DiagGaussianActor(nn.Module):
        """torch.distributions implementation of an diagonal Gaussian policy."""
        def __init__(self, obs_dim, action_dim, hidden_dim, hidden_depth, log_std_bounds):
            super().__init__()
            self.log_std_bounds = log_std_bounds
            self.trunk = mlp(obs_dim, hidden_dim, 2 * action_dim, hidden_depth)
            self.outputs = dict()
            self.apply(weight_init)

        def forward(self, obs):
            mu, log_std = self.trunk(obs).chunk(2, dim=-1)

            # constrain log_std inside [log_std_min, log_std_max]
            log_std = torch.tanh(log_std)
            log_std_min, log_std_max = self.log_std_bounds
            log_std = log_std_min + 0.5 * (log_std_max - log_std_min) * (log_std + 1)

            std = log_std.exp()

            self.outputs['mu'] = mu
            self.outputs['std'] = std

            dist = SquashedNormal(mu, std)
            return dist

    class DoubleQCritic(nn.Module):
        """Critic network, employes double Q-learning."""
        def __init__(self, obs_dim, action_dim, hidden_dim, hidden_depth):
            super().__init__()
            self.Q1 = mlp(obs_dim + action_dim, hidden_dim, 1, hidden_depth)
            self.Q2 = mlp(obs_dim + action_dim, hidden_dim, 1, hidden_depth)
            self.outputs = dict()
            self.apply(weight_init)

        def forward(self, obs, action):
            assert obs.size(0) == action.size(0)
            obs_action = torch.cat([obs, action], dim=-1)
            q1 = self.Q1(obs_action)
            q2 = self.Q2(obs_action)
            self.outputs['q1'] = q1
            self.outputs['q2'] = q2
            return q1, q2

    critic, critic_target = (DoubleQCritic(OBS_DIM, ACT_DIM, hidden_dim, hidden_depth) for _ in range(2))
    critic_target.load_state_dict(critic.state_dict())
    actor = DiagGaussianActor(OBS_DIM, ACT_DIM, hidden_dim, hidden_depth, log_std_bounds)
    return nn.ModuleDict({"actor": actor, "critic": critic, "critic_target": critic_target})


class YaratsSAC:
    """``agent/sac.py``'s ``SACAgent`` update: ``update_critic``, ``update_actor_and_alpha`` (a learnable temperature
    ``log_alpha`` tensor, ``alpha`` a property), ``utils.soft_update_params``; ``update`` runs all three."""

    def __init__(self, torch, F, nets, discount=0.99, init_temperature=0.1, lr=1e-2, tau=0.05):
        self.torch, self.F, self.discount, self.critic_tau = torch, F, discount, tau
        self.actor, self.critic, self.critic_target = nets["actor"], nets["critic"], nets["critic_target"]
        self.log_alpha = torch.tensor(np.log(init_temperature)).to("cpu")
        self.log_alpha.requires_grad = True
        # set target entropy to -|A|
        self.target_entropy = -ACT_DIM
        self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=lr, betas=(0.9, 0.999))
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=lr, betas=(0.9, 0.999))
        self.log_alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=lr, betas=(0.9, 0.999))

    @property
    def alpha(self):
        return self.log_alpha.exp()

    def update_critic(self, obs, action, reward, next_obs, not_done):
        torch, F = self.torch, self.F
        dist = self.actor(next_obs)
        next_action = dist.rsample()
        log_prob = dist.log_prob(next_action).sum(-1, keepdim=True)
        target_Q1, target_Q2 = self.critic_target(next_obs, next_action)
        target_V = torch.min(target_Q1, target_Q2) - self.alpha.detach() * log_prob
        target_Q = reward + (not_done * self.discount * target_V)
        target_Q = target_Q.detach()

        # get current Q estimates
        current_Q1, current_Q2 = self.critic(obs, action)
        critic_loss = F.mse_loss(current_Q1, target_Q) + F.mse_loss(current_Q2, target_Q)

        # Optimize the critic
        self.critic_optimizer.zero_grad()
        critic_loss.backward()
        self.critic_optimizer.step()
        return critic_loss.detach()

    def update_actor_and_alpha(self, obs):
        torch = self.torch
        dist = self.actor(obs)
        action = dist.rsample()
        log_prob = dist.log_prob(action).sum(-1, keepdim=True)
        actor_Q1, actor_Q2 = self.critic(obs, action)

        actor_Q = torch.min(actor_Q1, actor_Q2)
        actor_loss = (self.alpha.detach() * log_prob - actor_Q).mean()

        # optimize the actor
        self.actor_optimizer.zero_grad()
        actor_loss.backward()
        self.actor_optimizer.step()

        self.log_alpha_optimizer.zero_grad()
        alpha_loss = (self.alpha * (-log_prob - self.target_entropy).detach()).mean()
        alpha_loss.backward()
        self.log_alpha_optimizer.step()
        return actor_loss.detach(), alpha_loss.detach(), -log_prob.mean().detach()

    def update(self, obs, action, reward, next_obs, not_done):
        critic_loss = self.update_critic(obs, action, reward, next_obs, not_done)
        actor_loss, alpha_loss, entropy = self.update_actor_and_alpha(obs)
        for param, target_param in zip(self.critic.parameters(), self.critic_target.parameters()):
            target_param.data.copy_(self.critic_tau * param.data + (1 - self.critic_tau) * target_param.data)
        return critic_loss, actor_loss, alpha_loss, entropy
