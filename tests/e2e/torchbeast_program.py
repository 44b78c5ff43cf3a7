"""facebookresearch/torchbeast's IMPALA as it writes it (``torch`` is torch or kiln): ``vtrace.py``,
``monobeast.py``'s ``AtariNet`` (tiny, LSTM core), buffers, ``act``, ``get_batch`` and ``learn`` with its losses, on a
deterministic NumPy 'Atari', for ``test_porting_probes_rainbow_a2c_vtrace.py``."""

from __future__ import annotations

import collections

import numpy as np


# --- IMPALA V-trace (facebookresearch/torchbeast) ------------------------------------------------------------------------

class BeastFlags:
    unroll_length, num_actors, num_actions, frame, discounting, reward_clipping = 4, 2, 3, 12, 0.99, "abs_one"
    baseline_cost, entropy_cost, grad_norm_clipping, learning_rate, alpha, epsilon, momentum = 0.5, 0.01, 40.0, 5e-3, \
        0.99, 0.01, 0
    total_steps = 64


def vtrace_program(torch, nn, F):
    """vtrace.py as written (``from_logits``, ``from_importance_weights`` under ``@torch.no_grad()``) and
    monobeast.py's three losses."""
    VTraceFromLogitsReturns = collections.namedtuple(
        "VTraceFromLogitsReturns",
        ["vs", "pg_advantages", "log_rhos", "behavior_action_log_probs", "target_action_log_probs"],
    )
    VTraceReturns = collections.namedtuple("VTraceReturns", "vs pg_advantages")

    def action_log_probs(policy_logits, actions):
        return -F.nll_loss(
            F.log_softmax(torch.flatten(policy_logits, 0, -2), dim=-1),
            torch.flatten(actions),
            reduction="none",
        ).view_as(actions)

    def from_logits(behavior_policy_logits, target_policy_logits, actions, discounts, rewards, values,
                    bootstrap_value, clip_rho_threshold=1.0, clip_pg_rho_threshold=1.0):
        """V-trace for softmax policies."""
        target_action_log_probs = action_log_probs(target_policy_logits, actions)
        behavior_action_log_probs = action_log_probs(behavior_policy_logits, actions)
        log_rhos = target_action_log_probs - behavior_action_log_probs
        vtrace_returns = from_importance_weights(
            log_rhos=log_rhos, discounts=discounts, rewards=rewards, values=values, bootstrap_value=bootstrap_value,
            clip_rho_threshold=clip_rho_threshold, clip_pg_rho_threshold=clip_pg_rho_threshold)
        return VTraceFromLogitsReturns(
            log_rhos=log_rhos,
            behavior_action_log_probs=behavior_action_log_probs,
            target_action_log_probs=target_action_log_probs,
            **vtrace_returns._asdict(),
        )

    @torch.no_grad()
    def from_importance_weights(log_rhos, discounts, rewards, values, bootstrap_value, clip_rho_threshold=1.0,
                                clip_pg_rho_threshold=1.0):
        """V-trace from log importance weights."""
        with torch.no_grad():
            rhos = torch.exp(log_rhos)
            if clip_rho_threshold is not None:
                clipped_rhos = torch.clamp(rhos, max=clip_rho_threshold)
            else:
                clipped_rhos = rhos

            cs = torch.clamp(rhos, max=1.0)
            # Append bootstrapped value to get [v1, ..., v_t+1]
            values_t_plus_1 = torch.cat([values[1:], torch.unsqueeze(bootstrap_value, 0)], dim=0)
            deltas = clipped_rhos * (rewards + discounts * values_t_plus_1 - values)

            acc = torch.zeros_like(bootstrap_value)
            result = []
            for t in range(discounts.shape[0] - 1, -1, -1):
                acc = deltas[t] + discounts[t] * cs[t] * acc
                result.append(acc)
            result.reverse()
            vs_minus_v_xs = torch.stack(result)

            # Add V(x_s) to get v_s.
            vs = torch.add(vs_minus_v_xs, values)

            # Advantage for policy gradient.
            broadcasted_bootstrap_values = torch.ones_like(vs[0]) * bootstrap_value
            vs_t_plus_1 = torch.cat([vs[1:], broadcasted_bootstrap_values.unsqueeze(0)], dim=0)
            if clip_pg_rho_threshold is not None:
                clipped_pg_rhos = torch.clamp(rhos, max=clip_pg_rho_threshold)
            else:
                clipped_pg_rhos = rhos
            pg_advantages = clipped_pg_rhos * (rewards + discounts * vs_t_plus_1 - values)

            # Make sure no gradients backpropagated through the returned values.
            return VTraceReturns(vs=vs, pg_advantages=pg_advantages)

    def compute_baseline_loss(advantages):
        return 0.5 * torch.sum(advantages ** 2)

    def compute_entropy_loss(logits):
        """Return the entropy loss, i.e., the negative entropy of the policy."""
        policy = F.softmax(logits, dim=-1)
        log_policy = F.log_softmax(logits, dim=-1)
        return torch.sum(policy * log_policy)

    def compute_policy_gradient_loss(logits, actions, advantages):
        cross_entropy = F.nll_loss(
            F.log_softmax(torch.flatten(logits, 0, 1), dim=-1),
            target=torch.flatten(actions, 0, 1),
            reduction="none",
        )
        cross_entropy = cross_entropy.view_as(advantages)
        return torch.sum(cross_entropy * advantages.detach())

    return collections.namedtuple("Vtrace", "from_logits compute_baseline_loss compute_entropy_loss "
                                            "compute_policy_gradient_loss")(
        from_logits, compute_baseline_loss, compute_entropy_loss, compute_policy_gradient_loss)


def atari_net(torch, nn, F, draws, float_dtype=None):
    """monobeast.py's ``AtariNet`` (tiny convolutions) with the LSTM core; ``x.float()`` of the frames reads
    ``float_dtype`` in the float64 runs, and the actor's ``torch.multinomial`` draws through ``draws`` when
    ``self.draws`` is set (the actor model; the learner's sampled actions are unused)."""

    def to_float(x):
        return x.float() if float_dtype is None else x.to(float_dtype)

    class AtariNet(nn.Module):
        def __init__(self, observation_shape, num_actions, use_lstm=False):
            super(AtariNet, self).__init__()
            self.observation_shape = observation_shape
            self.num_actions = num_actions
            self.draws = None

            # Feature extraction.
            self.conv1 = nn.Conv2d(in_channels=self.observation_shape[0], out_channels=4, kernel_size=4, stride=2)
            self.conv2 = nn.Conv2d(4, 4, kernel_size=3, stride=1)
            self.conv3 = nn.Conv2d(4, 8, kernel_size=3, stride=1)

            # Fully connected layer.
            self.fc = nn.Linear(8, 12)

            # FC output size + one-hot of last action + last reward.
            core_output_size = self.fc.out_features + num_actions + 1

            self.use_lstm = use_lstm
            if use_lstm:
                self.core = nn.LSTM(core_output_size, core_output_size, 2)

            self.policy = nn.Linear(core_output_size, self.num_actions)
            self.baseline = nn.Linear(core_output_size, 1)

        def initial_state(self, batch_size):
            if not self.use_lstm:
                return tuple()
            return tuple(torch.zeros(self.core.num_layers, batch_size, self.core.hidden_size) for _ in range(2))

        def forward(self, inputs, core_state=()):
            x = inputs["frame"]  # [T, B, C, H, W].
            T, B, *_ = x.shape
            x = torch.flatten(x, 0, 1)  # Merge time and batch.
            x = to_float(x) / 255.0
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = F.relu(self.conv3(x))
            x = x.view(T * B, -1)
            x = F.relu(self.fc(x))

            one_hot_last_action = F.one_hot(inputs["last_action"].view(T * B), self.num_actions).float()
            clipped_reward = torch.clamp(inputs["reward"], -1, 1).view(T * B, 1)
            core_input = torch.cat([x, clipped_reward, one_hot_last_action], dim=-1)

            if self.use_lstm:
                core_input = core_input.view(T, B, -1)
                core_output_list = []
                notdone = (~inputs["done"]).float()
                for input, nd in zip(core_input.unbind(), notdone.unbind()):
                    # Reset core state to zero whenever an episode ended.
                    # Make `done` broadcastable with (num_layers, B, hidden_size) states:
                    nd = nd.view(1, -1, 1)
                    core_state = tuple(nd * s for s in core_state)
                    output, core_state = self.core(input.unsqueeze(0), core_state)
                    core_output_list.append(output)
                core_output = torch.flatten(torch.cat(core_output_list), 0, 1)
            else:
                core_output = core_input

            policy_logits = self.policy(core_output)
            baseline = self.baseline(core_output)

            if self.training:
                sample = lambda: torch.multinomial(F.softmax(policy_logits, dim=1), num_samples=1)  # noqa: E731
                action = sample() if self.draws is None else self.draws.draw(torch, sample)
            else:
                # Don't sample when testing.
                action = torch.argmax(policy_logits, dim=1)

            policy_logits = policy_logits.view(T, B, self.num_actions)
            baseline = baseline.view(T, B)
            action = action.view(T, B)

            return (dict(policy_logits=policy_logits, baseline=baseline, action=action), core_state)

    return AtariNet


class SyntheticAtari:
    """A deterministic one-env 'Atari' behind torchbeast's ``Environment`` wrapper outputs: uint8 frames from a table,
    reward 1 for the step's lucky action else -0.2 (clipped by the learner's ``abs_one``), episodes of 3 or 5 steps."""

    def __init__(self, torch, flags, seed):
        rng = np.random.default_rng(seed)
        self.torch, self.flags = torch, flags
        self.frames = rng.integers(0, 256, (flags.total_steps, 1, flags.frame, flags.frame), dtype=np.uint8)
        self.lucky, self.length = rng.integers(0, flags.num_actions, flags.total_steps), 3 + 2 * seed
        self.t, self.episode_step, self.episode_return = 0, 0, 0.0

    def output(self, reward, done, last_action):
        torch = self.torch
        return dict(frame=torch.from_numpy(self.frames[self.t]).view((1, 1) + self.frames.shape[1:]),
                    reward=torch.tensor(reward).view(1, 1), done=torch.tensor(done).view(1, 1),
                    episode_return=torch.tensor(self.episode_return).view(1, 1),
                    last_action=torch.tensor(last_action).view(1, 1))

    def initial(self):
        return self.output(0.0, False, 0)

    def step(self, action):
        reward = 1.0 if action == self.lucky[self.t] else -0.2
        self.t, self.episode_step, self.episode_return = self.t + 1, self.episode_step + 1, self.episode_return + reward
        done = self.episode_step == self.length
        out = self.output(reward * 2.0, done, action)
        if done:
            self.episode_step, self.episode_return = 0, 0.0
        return out


def create_buffers(torch, flags, obs_shape, num_actions, num_buffers):
    T = flags.unroll_length
    specs = dict(
        frame=dict(size=(T + 1, *obs_shape), dtype=torch.uint8),
        reward=dict(size=(T + 1,), dtype=torch.get_default_dtype()),
        done=dict(size=(T + 1,), dtype=torch.bool),
        episode_return=dict(size=(T + 1,), dtype=torch.get_default_dtype()),
        policy_logits=dict(size=(T + 1, num_actions), dtype=torch.get_default_dtype()),
        baseline=dict(size=(T + 1,), dtype=torch.get_default_dtype()),
        last_action=dict(size=(T + 1,), dtype=torch.int64),
        action=dict(size=(T + 1,), dtype=torch.int64),
    )
    buffers = {key: [] for key in specs}
    for _ in range(num_buffers):
        for key in buffers:
            buffers[key].append(torch.empty(**specs[key]))
    return buffers


def act_unroll(torch, flags, model, env, buffers, initial_agent_state_buffers, index, state):
    """One pass of monobeast's ``act`` loop body: write the unroll into buffer ``index``; ``state`` is the actor's
    ``(env_output, agent_output, agent_state)``, carried to the next unroll."""
    env_output, agent_output, agent_state = state
    for key in env_output:
        buffers[key][index][0, ...] = env_output[key]
    for key in agent_output:
        buffers[key][index][0, ...] = agent_output[key]
    for i, tensor in enumerate(agent_state):
        initial_agent_state_buffers[index][i][...] = tensor
    for t in range(flags.unroll_length):
        with torch.no_grad():
            agent_output, agent_state = model(env_output, agent_state)
        env_output = env.step(agent_output["action"].item())
        for key in env_output:
            buffers[key][index][t + 1, ...] = env_output[key]
        for key in agent_output:
            buffers[key][index][t + 1, ...] = agent_output[key]
    return env_output, agent_output, agent_state


def get_batch(torch, buffers, initial_agent_state_buffers, indices):
    batch = {key: torch.stack([buffers[key][m] for m in indices], dim=1) for key in buffers}
    initial_agent_state = (torch.cat(ts, dim=1) for ts in zip(*[initial_agent_state_buffers[m] for m in indices]))
    return batch, tuple(initial_agent_state)


def monobeast_learn_step(torch, nn, vtrace, flags, model, optimizer):
    """``learn`` as written up to its ``stats`` (the losses returned as tensors, read by ``.item()`` outside), without
    ``scheduler.step()`` and ``actor_model.load_state_dict`` (the caller runs them after)."""

    def learn(batch, initial_agent_state):
        learner_outputs, unused_state = model(batch, initial_agent_state)

        # Take final value function slice for bootstrapping.
        bootstrap_value = learner_outputs["baseline"][-1]

        # Move from obs[t] -> action[t] to action[t] -> obs[t].
        batch = {key: tensor[1:] for key, tensor in batch.items()}
        learner_outputs = {key: tensor[:-1] for key, tensor in learner_outputs.items()}

        rewards = batch["reward"]
        if flags.reward_clipping == "abs_one":
            clipped_rewards = torch.clamp(rewards, -1, 1)
        elif flags.reward_clipping == "none":
            clipped_rewards = rewards

        discounts = (~batch["done"]).float() * flags.discounting

        vtrace_returns = vtrace.from_logits(
            behavior_policy_logits=batch["policy_logits"],
            target_policy_logits=learner_outputs["policy_logits"],
            actions=batch["action"],
            discounts=discounts,
            rewards=clipped_rewards,
            values=learner_outputs["baseline"],
            bootstrap_value=bootstrap_value,
        )

        pg_loss = vtrace.compute_policy_gradient_loss(
            learner_outputs["policy_logits"], batch["action"], vtrace_returns.pg_advantages)
        baseline_loss = flags.baseline_cost * vtrace.compute_baseline_loss(
            vtrace_returns.vs - learner_outputs["baseline"])
        entropy_loss = flags.entropy_cost * vtrace.compute_entropy_loss(learner_outputs["policy_logits"])

        total_loss = pg_loss + baseline_loss + entropy_loss

        optimizer.zero_grad()
        total_loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), flags.grad_norm_clipping)
        optimizer.step()
        return dict(total_loss=total_loss.detach(), pg_loss=pg_loss.detach(), baseline_loss=baseline_loss.detach(),
                    entropy_loss=entropy_loss.detach(), vs=vtrace_returns.vs)

    return learn
