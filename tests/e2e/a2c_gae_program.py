"""ikostrikov/pytorch-a2c-ppo-acktr-gail's A2C as it writes it (``torch`` is torch or kiln): ``storage.py``,
``distributions.py``, ``utils.py``'s ``AddBias`` and ``init``, ``model.py``'s ``Policy``, ``NNBase`` (the GRU with
``_forward_gru``'s mask splitting) and ``MLPBase``,
``algo/a2c_acktr.py``, ``algo/ppo.py`` (minibatches from ``feed_forward_generator``'s ``BatchSampler``),
``algo/gail.py``'s ``Discriminator``, ``utils.update_linear_schedule`` and ``main.py``'s loop, with a deterministic NumPy vectorised environment, for
``test_porting_probes_rainbow_a2c_vtrace.py``."""

from __future__ import annotations

import collections
import importlib

import numpy as np

from e2e.probe_lockstep import array


# --- A2C with GAE (ikostrikov/pytorch-a2c-ppo-acktr-gail) ---------------------------------------------------------------

class A2CArgs:
    num_steps, num_processes, gamma, gae_lambda, use_gae, use_proper_time_limits = 5, 2, 0.99, 0.95, True, True
    lr, eps, alpha, value_loss_coef, entropy_coef, max_grad_norm, hidden_size = 7e-3, 1e-5, 0.99, 0.5, 0.01, 0.5, 8
    recurrent_policy, algo, use_linear_lr_decay, gail, gail_epoch, gail_batch_size = False, 'a2c', False, False, 2, 5
    clip_param, ppo_epoch, num_mini_batch = 0.2, 2, 2


class Discrete:
    def __init__(self, n):
        self.n = n


class Box:
    def __init__(self, shape):
        self.shape = shape


class SyntheticVecEnv:
    """A deterministic vectorised environment as ``VecPyTorch`` serves it: ``obs' = tanh(obs A + push(action))``,
    reward for ``obs[0]`` near 0.5, done (and reset) after each env's horizon, ``'bad_transition'`` on a time limit."""

    def __init__(self, torch, action_space, num_processes, obs_dim=4, seed=0, float_dtype=None):
        rng = np.random.default_rng(seed)
        self.torch, self.float_dtype = torch, float_dtype or torch.float32
        self.action_space, self.discrete = action_space, isinstance(action_space, Discrete)
        pushes = action_space.n if self.discrete else action_space.shape[0]
        self.A, self.B = rng.standard_normal((obs_dim, obs_dim)) * 0.5, rng.standard_normal((pushes, obs_dim)) * 0.7
        self.start, self.horizons = rng.uniform(-0.5, 0.5, (num_processes, obs_dim)), np.array([3, 4])[:num_processes]

    def reset(self):
        self.t, self.obs = np.zeros(len(self.horizons), int), self.start.copy()
        return self.torch.from_numpy(self.obs).to(self.float_dtype)

    def step(self, actions):
        if self.discrete:
            actions = actions.squeeze(1)
        actions = actions.cpu().numpy()
        push = self.B[actions] if self.discrete else actions @ self.B
        self.obs, self.t = np.tanh(self.obs @ self.A + push), self.t + 1
        reward = 1.0 - np.abs(self.obs[:, 0] - 0.5)
        done = self.t >= self.horizons
        infos = [{"bad_transition": True} if d and env == 1 else {} for env, d in enumerate(done)]
        self.obs[done], self.t[done] = self.start[done], 0
        obs = self.torch.from_numpy(self.obs.copy()).to(self.float_dtype)
        return obs, self.torch.from_numpy(reward).unsqueeze(dim=1).float(), done, infos


def a2c_program(torch, nn, F, draws):
    """The pieces of storage.py, distributions.py, utils.py, model.py and algo/a2c_acktr.py, as a namespace."""

    sampler_module = importlib.import_module(torch.__name__ + ".utils.data.sampler")  # from torch.utils.data.sampler import
    BatchSampler, SubsetRandomSampler = sampler_module.BatchSampler, sampler_module.SubsetRandomSampler

    def _flatten_helper(T, N, _tensor):
        return _tensor.view(T * N, *_tensor.size()[2:])

    class RolloutStorage(object):
        def __init__(self, num_steps, num_processes, obs_shape, action_space, recurrent_hidden_state_size):
            self.obs = torch.zeros(num_steps + 1, num_processes, *obs_shape)
            self.recurrent_hidden_states = torch.zeros(num_steps + 1, num_processes, recurrent_hidden_state_size)
            self.rewards = torch.zeros(num_steps, num_processes, 1)
            self.value_preds = torch.zeros(num_steps + 1, num_processes, 1)
            self.returns = torch.zeros(num_steps + 1, num_processes, 1)
            self.action_log_probs = torch.zeros(num_steps, num_processes, 1)
            if action_space.__class__.__name__ == 'Discrete':
                action_shape = 1
            else:
                action_shape = action_space.shape[0]
            self.actions = torch.zeros(num_steps, num_processes, action_shape)
            if action_space.__class__.__name__ == 'Discrete':
                self.actions = self.actions.long()
            self.masks = torch.ones(num_steps + 1, num_processes, 1)
            # Masks that indicate whether it's a true terminal state or time limit end state
            self.bad_masks = torch.ones(num_steps + 1, num_processes, 1)
            self.num_steps = num_steps
            self.step = 0

        def insert(self, obs, recurrent_hidden_states, actions, action_log_probs, value_preds, rewards, masks,
                   bad_masks):
            self.obs[self.step + 1].copy_(obs)
            self.recurrent_hidden_states[self.step + 1].copy_(recurrent_hidden_states)
            self.actions[self.step].copy_(actions)
            self.action_log_probs[self.step].copy_(action_log_probs)
            self.value_preds[self.step].copy_(value_preds)
            self.rewards[self.step].copy_(rewards)
            self.masks[self.step + 1].copy_(masks)
            self.bad_masks[self.step + 1].copy_(bad_masks)
            self.step = (self.step + 1) % self.num_steps

        def after_update(self):
            self.obs[0].copy_(self.obs[-1])
            self.recurrent_hidden_states[0].copy_(self.recurrent_hidden_states[-1])
            self.masks[0].copy_(self.masks[-1])
            self.bad_masks[0].copy_(self.bad_masks[-1])

        def feed_forward_generator(self, advantages, num_mini_batch=None, mini_batch_size=None):
            num_steps, num_processes = self.rewards.size()[0:2]
            batch_size = num_processes * num_steps
            if mini_batch_size is None:
                assert batch_size >= num_mini_batch, (
                    "PPO requires the number of processes ({}) "
                    "* number of steps ({}) = {} "
                    "to be greater than or equal to the number of PPO mini batches ({})."
                    "".format(num_processes, num_steps, num_processes * num_steps, num_mini_batch))
                mini_batch_size = batch_size // num_mini_batch
            sampler = BatchSampler(
                SubsetRandomSampler(range(batch_size)),
                mini_batch_size,
                drop_last=True)
            # kiln's run draws the minibatches, torch's replays them (its generator orders them otherwise)
            for indices in draws.draw(torch, lambda: torch.tensor(list(sampler))).tolist():
                obs_batch = self.obs[:-1].view(-1, *self.obs.size()[2:])[indices]
                recurrent_hidden_states_batch = self.recurrent_hidden_states[:-1].view(
                    -1, self.recurrent_hidden_states.size(-1))[indices]
                actions_batch = self.actions.view(-1, self.actions.size(-1))[indices]
                value_preds_batch = self.value_preds[:-1].view(-1, 1)[indices]
                return_batch = self.returns[:-1].view(-1, 1)[indices]
                masks_batch = self.masks[:-1].view(-1, 1)[indices]
                old_action_log_probs_batch = self.action_log_probs.view(-1, 1)[indices]
                if advantages is None:
                    adv_targ = None
                else:
                    adv_targ = advantages.view(-1, 1)[indices]
                yield obs_batch, recurrent_hidden_states_batch, actions_batch, \
                    value_preds_batch, return_batch, masks_batch, old_action_log_probs_batch, adv_targ

        def compute_returns(self, next_value, use_gae, gamma, gae_lambda, use_proper_time_limits=True):
            if use_proper_time_limits:
                if use_gae:
                    self.value_preds[-1] = next_value
                    gae = 0
                    for step in reversed(range(self.rewards.size(0))):
                        delta = self.rewards[step] + gamma * self.value_preds[step + 1] * self.masks[step + 1] \
                            - self.value_preds[step]
                        gae = delta + gamma * gae_lambda * self.masks[step + 1] * gae
                        gae = gae * self.bad_masks[step + 1]
                        self.returns[step] = gae + self.value_preds[step]
                else:
                    self.returns[-1] = next_value
                    for step in reversed(range(self.rewards.size(0))):
                        self.returns[step] = (self.returns[step + 1] * gamma * self.masks[step + 1]
                                              + self.rewards[step]) * self.bad_masks[step + 1] \
                            + (1 - self.bad_masks[step + 1]) * self.value_preds[step]

    class FixedCategorical(torch.distributions.Categorical):
        def sample(self):
            return draws.draw(torch, lambda: super(FixedCategorical, self).sample()).unsqueeze(-1)

        def log_probs(self, actions):
            return (
                super()
                .log_prob(actions.squeeze(-1))
                .view(actions.size(0), -1)
                .sum(-1)
                .unsqueeze(-1)
            )

        def mode(self):
            return self.probs.argmax(dim=-1, keepdim=True)

    class FixedNormal(torch.distributions.Normal):
        def sample(self):
            return draws.draw(torch, lambda: super(FixedNormal, self).sample())

        def log_probs(self, actions):
            return super().log_prob(actions).sum(-1, keepdim=True)

        def entropy(self):
            return super().entropy().sum(-1)

        def mode(self):
            return self.mean

    class AddBias(nn.Module):
        def __init__(self, bias):
            super(AddBias, self).__init__()
            self._bias = nn.Parameter(bias.unsqueeze(1))

        def forward(self, x):
            if x.dim() == 2:
                bias = self._bias.t().view(1, -1)
            else:
                bias = self._bias.t().view(1, -1, 1, 1)
            return x + bias

    def init(module, weight_init, bias_init, gain=1):
        weight_init(module.weight.data, gain=gain)
        bias_init(module.bias.data)
        return module

    class Categorical(nn.Module):
        def __init__(self, num_inputs, num_outputs):
            super(Categorical, self).__init__()
            init_ = lambda m: init(m, nn.init.orthogonal_, lambda x: nn.init.constant_(x, 0), gain=0.01)  # noqa: E731
            self.linear = init_(nn.Linear(num_inputs, num_outputs))

        def forward(self, x):
            x = self.linear(x)
            return FixedCategorical(logits=x)

    class DiagGaussian(nn.Module):
        def __init__(self, num_inputs, num_outputs):
            super(DiagGaussian, self).__init__()
            init_ = lambda m: init(m, nn.init.orthogonal_, lambda x: nn.init.constant_(x, 0))  # noqa: E731
            self.fc_mean = init_(nn.Linear(num_inputs, num_outputs))
            self.logstd = AddBias(torch.zeros(num_outputs))

        def forward(self, x):
            action_mean = self.fc_mean(x)
            #  An ugly hack for my KFAC implementation.
            zeros = torch.zeros(action_mean.size())
            if x.is_cuda:
                zeros = zeros.cuda()
            action_logstd = self.logstd(zeros)
            return FixedNormal(action_mean, action_logstd.exp())

    class NNBase(nn.Module):
        def __init__(self, recurrent, recurrent_input_size, hidden_size):
            super(NNBase, self).__init__()
            self._hidden_size = hidden_size
            self._recurrent = recurrent
            if recurrent:
                self.gru = nn.GRU(recurrent_input_size, hidden_size)
                for name, param in self.gru.named_parameters():
                    if 'bias' in name:
                        nn.init.constant_(param, 0)
                    elif 'weight' in name:
                        nn.init.orthogonal_(param)

        @property
        def is_recurrent(self):
            return self._recurrent

        @property
        def recurrent_hidden_state_size(self):
            if self._recurrent:
                return self._hidden_size
            return 1

        @property
        def output_size(self):
            return self._hidden_size

        def _forward_gru(self, x, hxs, masks):
            if x.size(0) == hxs.size(0):
                x, hxs = self.gru(x.unsqueeze(0), (hxs * masks).unsqueeze(0))
                x = x.squeeze(0)
                hxs = hxs.squeeze(0)
            else:
                # x is a (T, N, -1) tensor that has been flatten to (T * N, -1)
                N = hxs.size(0)
                T = int(x.size(0) / N)
                # unflatten
                x = x.view(T, N, x.size(1))
                # Same deal with masks
                masks = masks.view(T, N)
                # Let's figure out which steps in the sequence have a zero for any agent
                # We will always assume t=0 has a zero in it as that makes the logic cleaner
                has_zeros = ((masks[1:] == 0.0)
                             .any(dim=-1)
                             .nonzero()
                             .squeeze()
                             .cpu())
                # +1 to correct the masks[1:]
                if has_zeros.dim() == 0:
                    # Deal with scalar
                    has_zeros = [has_zeros.item() + 1]
                else:
                    has_zeros = (has_zeros + 1).numpy().tolist()
                # add t=0 and t=T to the list
                has_zeros = [0] + has_zeros + [T]
                hxs = hxs.unsqueeze(0)
                outputs = []
                for i in range(len(has_zeros) - 1):
                    # We can now process steps that don't have any zeros in masks together!
                    # This is much faster
                    start_idx = has_zeros[i]
                    end_idx = has_zeros[i + 1]
                    rnn_scores, hxs = self.gru(
                        x[start_idx:end_idx],
                        hxs * masks[start_idx].view(1, -1, 1))
                    outputs.append(rnn_scores)
                # assert len(outputs) == T
                # x is a (T, N, -1) tensor
                x = torch.cat(outputs, dim=0)
                # flatten
                x = x.view(T * N, -1)
                hxs = hxs.squeeze(0)
            return x, hxs

    class MLPBase(NNBase):
        def __init__(self, num_inputs, recurrent=False, hidden_size=64):
            super(MLPBase, self).__init__(recurrent, num_inputs, hidden_size)
            if recurrent:
                num_inputs = hidden_size
            init_ = lambda m: init(m, nn.init.orthogonal_, lambda x: nn.init.constant_(x, 0), np.sqrt(2))  # noqa: E731
            self.actor = nn.Sequential(
                init_(nn.Linear(num_inputs, hidden_size)), nn.Tanh(),
                init_(nn.Linear(hidden_size, hidden_size)), nn.Tanh())
            self.critic = nn.Sequential(
                init_(nn.Linear(num_inputs, hidden_size)), nn.Tanh(),
                init_(nn.Linear(hidden_size, hidden_size)), nn.Tanh())
            relu_init_ = lambda m: init(m, nn.init.orthogonal_, lambda x: nn.init.constant_(x, 0),  # noqa: E731
                                        nn.init.calculate_gain('relu'))
            self.critic_linear = relu_init_(nn.Linear(hidden_size, 1))
            self.train()

        def forward(self, inputs, rnn_hxs, masks):
            x = inputs
            if self.is_recurrent:
                x, rnn_hxs = self._forward_gru(x, rnn_hxs, masks)
            hidden_critic = self.critic(x)
            hidden_actor = self.actor(x)
            return self.critic_linear(hidden_critic), hidden_actor, rnn_hxs

    class Policy(nn.Module):
        def __init__(self, obs_shape, action_space, base_kwargs=None):
            super(Policy, self).__init__()
            if base_kwargs is None:
                base_kwargs = {}
            self.base = MLPBase(obs_shape[0], **base_kwargs)
            if action_space.__class__.__name__ == "Discrete":
                num_outputs = action_space.n
                self.dist = Categorical(self.base.output_size, num_outputs)
            elif action_space.__class__.__name__ == "Box":
                num_outputs = action_space.shape[0]
                self.dist = DiagGaussian(self.base.output_size, num_outputs)
            else:
                raise NotImplementedError

        @property
        def is_recurrent(self):
            return self.base.is_recurrent

        @property
        def recurrent_hidden_state_size(self):
            return self.base.recurrent_hidden_state_size

        def act(self, inputs, rnn_hxs, masks, deterministic=False):
            value, actor_features, rnn_hxs = self.base(inputs, rnn_hxs, masks)
            dist = self.dist(actor_features)
            if deterministic:
                action = dist.mode()
            else:
                action = dist.sample()
            action_log_probs = dist.log_probs(action)
            return value, action, action_log_probs, rnn_hxs

        def get_value(self, inputs, rnn_hxs, masks):
            value, _, _ = self.base(inputs, rnn_hxs, masks)
            return value

        def evaluate_actions(self, inputs, rnn_hxs, masks, action):
            value, actor_features, rnn_hxs = self.base(inputs, rnn_hxs, masks)
            dist = self.dist(actor_features)
            action_log_probs = dist.log_probs(action)
            dist_entropy = dist.entropy().mean()
            return value, action_log_probs, dist_entropy, rnn_hxs

    class A2C_ACKTR():
        def __init__(self, actor_critic, value_loss_coef, entropy_coef, lr=None, eps=None, alpha=None,
                     max_grad_norm=None):
            self.actor_critic = actor_critic
            self.value_loss_coef = value_loss_coef
            self.entropy_coef = entropy_coef
            self.max_grad_norm = max_grad_norm
            self.optimizer = torch.optim.RMSprop(actor_critic.parameters(), lr, eps=eps, alpha=alpha)

        def update_step(self, rollouts):
            """``update`` up to its ``.item()``s (returns the three losses as tensors)."""
            obs_shape = rollouts.obs.size()[2:]
            action_shape = rollouts.actions.size()[-1]
            num_steps, num_processes, _ = rollouts.rewards.size()

            values, action_log_probs, dist_entropy, _ = self.actor_critic.evaluate_actions(
                rollouts.obs[:-1].view(-1, *obs_shape),
                rollouts.recurrent_hidden_states[0].view(-1, self.actor_critic.recurrent_hidden_state_size),
                rollouts.masks[:-1].view(-1, 1),
                rollouts.actions.view(-1, action_shape))

            values = values.view(num_steps, num_processes, 1)
            action_log_probs = action_log_probs.view(num_steps, num_processes, 1)

            advantages = rollouts.returns[:-1] - values
            value_loss = advantages.pow(2).mean()

            action_loss = -(advantages.detach() * action_log_probs).mean()

            self.optimizer.zero_grad()
            (value_loss * self.value_loss_coef + action_loss - dist_entropy * self.entropy_coef).backward()
            nn.utils.clip_grad_norm_(self.actor_critic.parameters(), self.max_grad_norm)
            self.optimizer.step()
            return value_loss.detach(), action_loss.detach(), dist_entropy.detach()

        def update(self, rollouts, update_step=None):
            value_loss, action_loss, dist_entropy = (update_step or self.update_step)(rollouts)
            return value_loss.item(), action_loss.item(), dist_entropy.item()

    class PPO():
        def __init__(self, actor_critic, clip_param, ppo_epoch, num_mini_batch, value_loss_coef, entropy_coef,
                     lr=None, eps=None, max_grad_norm=None, use_clipped_value_loss=True):
            self.actor_critic = actor_critic
            self.clip_param = clip_param
            self.ppo_epoch = ppo_epoch
            self.num_mini_batch = num_mini_batch
            self.value_loss_coef = value_loss_coef
            self.entropy_coef = entropy_coef
            self.max_grad_norm = max_grad_norm
            self.use_clipped_value_loss = use_clipped_value_loss
            self.optimizer = torch.optim.Adam(actor_critic.parameters(), lr=lr, eps=eps)

        def update_minibatch(self, obs_batch, recurrent_hidden_states_batch, actions_batch, value_preds_batch,
                             return_batch, masks_batch, old_action_log_probs_batch, adv_targ):
            """The body of ``update``'s minibatch loop up to its ``.item()``s."""
            # Reshape to do in a single forward pass for all steps
            values, action_log_probs, dist_entropy, _ = self.actor_critic.evaluate_actions(
                obs_batch, recurrent_hidden_states_batch, masks_batch, actions_batch)
            ratio = torch.exp(action_log_probs - old_action_log_probs_batch)
            surr1 = ratio * adv_targ
            surr2 = torch.clamp(ratio, 1.0 - self.clip_param, 1.0 + self.clip_param) * adv_targ
            action_loss = -torch.min(surr1, surr2).mean()
            if self.use_clipped_value_loss:
                value_pred_clipped = value_preds_batch + \
                    (values - value_preds_batch).clamp(-self.clip_param, self.clip_param)
                value_losses = (values - return_batch).pow(2)
                value_losses_clipped = (value_pred_clipped - return_batch).pow(2)
                value_loss = 0.5 * torch.max(value_losses, value_losses_clipped).mean()
            else:
                value_loss = 0.5 * (return_batch - values).pow(2).mean()
            self.optimizer.zero_grad()
            (value_loss * self.value_loss_coef + action_loss - dist_entropy * self.entropy_coef).backward()
            nn.utils.clip_grad_norm_(self.actor_critic.parameters(), self.max_grad_norm)
            self.optimizer.step()
            return value_loss.detach(), action_loss.detach(), dist_entropy.detach()

        def update(self, rollouts, update_minibatch=None):
            advantages = rollouts.returns[:-1] - rollouts.value_preds[:-1]
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-5)
            value_loss_epoch = 0
            action_loss_epoch = 0
            dist_entropy_epoch = 0
            for e in range(self.ppo_epoch):
                data_generator = rollouts.feed_forward_generator(advantages, self.num_mini_batch)
                for sample in data_generator:
                    value_loss, action_loss, dist_entropy = (update_minibatch or self.update_minibatch)(*sample)
                    value_loss_epoch += value_loss.item()
                    action_loss_epoch += action_loss.item()
                    dist_entropy_epoch += dist_entropy.item()
            num_updates = self.ppo_epoch * self.num_mini_batch
            value_loss_epoch /= num_updates
            action_loss_epoch /= num_updates
            dist_entropy_epoch /= num_updates
            return value_loss_epoch, action_loss_epoch, dist_entropy_epoch

    return collections.namedtuple("A2C", "RolloutStorage Policy A2C_ACKTR PPO flatten_helper")(
        RolloutStorage, Policy, A2C_ACKTR, PPO, _flatten_helper)


def update_linear_schedule(optimizer, epoch, total_num_epochs, initial_lr):
    """Decreases the learning rate linearly"""
    lr = initial_lr - (initial_lr * (epoch / float(total_num_epochs)))
    for param_group in optimizer.param_groups:
        param_group['lr'] = lr


def a2c_main(torch, a2c, actor_critic, envs, args, num_updates, update_step=None, discr=None, gail_train_loader=None,
             discr_step=None):
    """main.py's loop: act under ``no_grad``, ``envs.step``, masks by ``torch.FloatTensor``,
    ``insert``, ``get_value``, ``compute_returns``, ``agent.update``, ``after_update``; a record of what it saw.
    ``update_step(agent)`` gives the function ``update`` runs (a compiled ``agent.update_step``, or PPO's
    ``update_minibatch``); ``args.use_linear_lr_decay``: ``update_linear_schedule`` before each update; ``args.gail``:
    ``discr`` trained on ``gail_train_loader``'s expert pairs and the rollouts (each minibatch by ``discr_step``, else
    its ``update_minibatch``), its rewards replacing the env's."""
    if args.algo == 'a2c':
        agent = a2c.A2C_ACKTR(actor_critic, args.value_loss_coef, args.entropy_coef, lr=args.lr, eps=args.eps,
                              alpha=args.alpha, max_grad_norm=args.max_grad_norm)
    elif args.algo == 'ppo':
        agent = a2c.PPO(actor_critic, args.clip_param, args.ppo_epoch, args.num_mini_batch, args.value_loss_coef,
                        args.entropy_coef, lr=args.lr, eps=args.eps, max_grad_norm=args.max_grad_norm)
    update_step = update_step and update_step(agent)
    rollouts = a2c.RolloutStorage(args.num_steps, args.num_processes, (4,), envs.action_space,
                                  actor_critic.recurrent_hidden_state_size)
    obs = envs.reset()
    rollouts.obs[0].copy_(obs)
    record = {"losses": [], "returns": [], "actions": []}
    for j in range(num_updates):
        if args.use_linear_lr_decay:
            # decrease learning rate linearly
            update_linear_schedule(agent.optimizer, j, num_updates, args.lr)
        for step in range(args.num_steps):
            # Sample actions
            with torch.no_grad():
                value, action, action_log_prob, recurrent_hidden_states = actor_critic.act(
                    rollouts.obs[step], rollouts.recurrent_hidden_states[step], rollouts.masks[step])
            # Obser reward and next obs
            obs, reward, done, infos = envs.step(action)
            masks = torch.FloatTensor([[0.0] if done_ else [1.0] for done_ in done])
            bad_masks = torch.FloatTensor([[0.0] if 'bad_transition' in info.keys() else [1.0] for info in infos])
            rollouts.insert(obs, recurrent_hidden_states, action, action_log_prob, value, reward, masks, bad_masks)

        with torch.no_grad():
            next_value = actor_critic.get_value(rollouts.obs[-1], rollouts.recurrent_hidden_states[-1],
                                                rollouts.masks[-1]).detach()
        if args.gail:
            gail_epoch = args.gail_epoch  # (main.py warms up with 100 epochs for the first 10 updates)
            for _ in range(gail_epoch):
                record.setdefault("gail losses", []).append(
                    discr.update(gail_train_loader, rollouts, lambda obs, update=False: obs, discr_step))
            for step in range(args.num_steps):
                rollouts.rewards[step] = discr.predict_reward(
                    rollouts.obs[step], rollouts.actions[step], args.gamma,
                    rollouts.masks[step])
        rollouts.compute_returns(next_value, args.use_gae, args.gamma, args.gae_lambda, args.use_proper_time_limits)
        record["returns"].append(array(rollouts.returns))
        record["actions"].append(array(rollouts.actions))
        record["losses"].append(agent.update(rollouts, update_step))
        rollouts.after_update()
    record["obs0"] = array(rollouts.obs[0])
    return record


# --- GAIL (algo/gail.py) --------------------------------------------------------------------------------------------

class RunningMeanStd(object):
    """baselines' running moments (NumPy), as gail.py's ``ret_rms``."""

    def __init__(self, epsilon=1e-4, shape=()):
        self.mean = np.zeros(shape, 'float64')
        self.var = np.ones(shape, 'float64')
        self.count = epsilon

    def update(self, x):
        batch_mean = np.mean(x, axis=0)
        batch_var = np.var(x, axis=0)
        batch_count = x.shape[0]
        delta = batch_mean - self.mean
        tot_count = self.count + batch_count
        new_mean = self.mean + delta * batch_count / tot_count
        m_a = self.var * self.count
        m_b = batch_var * batch_count
        M2 = m_a + m_b + np.square(delta) * self.count * batch_count / tot_count
        self.mean, self.var, self.count = new_mean, M2 / tot_count, tot_count


def gail_discriminator(torch, nn, F, draws, float_tensor=None):
    """algo/gail.py's ``Discriminator`` (``torch.rand`` of the mixup drawn through ``draws``); ``float_tensor`` stands
    for the expert states' ``torch.FloatTensor`` in the float64 runs."""
    autograd = torch.autograd
    float_tensor = float_tensor or torch.FloatTensor

    class Discriminator(nn.Module):
        def __init__(self, input_dim, hidden_dim, device):
            super(Discriminator, self).__init__()
            self.device = device
            self.trunk = nn.Sequential(
                nn.Linear(input_dim, hidden_dim), nn.Tanh(),
                nn.Linear(hidden_dim, hidden_dim), nn.Tanh(),
                nn.Linear(hidden_dim, 1)).to(device)
            self.trunk.train()
            self.optimizer = torch.optim.Adam(self.trunk.parameters())
            self.returns = None
            self.ret_rms = RunningMeanStd(shape=())

        def compute_grad_pen(self, expert_state, expert_action, policy_state, policy_action, lambda_=10):
            alpha = draws.draw(torch, lambda: torch.rand(expert_state.size(0), 1))
            expert_data = torch.cat([expert_state, expert_action], dim=1)
            policy_data = torch.cat([policy_state, policy_action], dim=1)
            alpha = alpha.expand_as(expert_data).to(expert_data.device)
            mixup_data = alpha * expert_data + (1 - alpha) * policy_data
            mixup_data.requires_grad = True
            disc = self.trunk(mixup_data)
            ones = torch.ones(disc.size()).to(disc.device)
            grad = autograd.grad(
                outputs=disc,
                inputs=mixup_data,
                grad_outputs=ones,
                create_graph=True,
                retain_graph=True,
                only_inputs=True)[0]
            grad_pen = lambda_ * (grad.norm(2, dim=1) - 1).pow(2).mean()
            return grad_pen

        def update(self, expert_loader, rollouts, obsfilt=None, update_minibatch=None):
            self.train()
            policy_data_generator = rollouts.feed_forward_generator(None, mini_batch_size=expert_loader.batch_size)
            loss = 0
            n = 0
            for expert_batch, policy_batch in zip(expert_loader, policy_data_generator):
                policy_state, policy_action = policy_batch[0], policy_batch[2]
                expert_state, expert_action = expert_batch
                expert_state = obsfilt(expert_state.numpy(), update=False)
                expert_state = float_tensor(expert_state).to(self.device)
                expert_action = expert_action.to(self.device)
                loss += (update_minibatch or self.update_minibatch)(policy_state, policy_action, expert_state,
                                                                    expert_action).item()
                n += 1
            return loss / n

        def update_minibatch(self, policy_state, policy_action, expert_state, expert_action):
            """``update``'s loop body after the expert states' conversion: the discriminator on both (the policy's
            first, as there), the losses, the gradient penalty and the Adam step."""
            policy_d = self.trunk(torch.cat([policy_state, policy_action.float()], dim=1))
            expert_d = self.trunk(torch.cat([expert_state, expert_action], dim=1))
            expert_loss = F.binary_cross_entropy_with_logits(expert_d, torch.ones(expert_d.size()).to(self.device))
            policy_loss = F.binary_cross_entropy_with_logits(policy_d, torch.zeros(policy_d.size()).to(self.device))
            gail_loss = expert_loss + policy_loss
            grad_pen = self.compute_grad_pen(expert_state, expert_action, policy_state, policy_action)
            self.optimizer.zero_grad()
            (gail_loss + grad_pen).backward()
            self.optimizer.step()
            return (gail_loss + grad_pen).detach()

        def predict_reward(self, state, action, gamma, masks, update_rms=True):
            with torch.no_grad():
                self.eval()
                d = self.trunk(torch.cat([state, action], dim=1))
                s = torch.sigmoid(d)
                reward = s.log() - (1 - s).log()
                if self.returns is None:
                    self.returns = reward.clone()
                if update_rms:
                    self.returns = self.returns * masks * gamma + reward
                    self.ret_rms.update(self.returns.cpu().numpy())
                return reward / np.sqrt(self.ret_rms.var[0] + 1e-8)

    return Discriminator
