"""Porting probe: PPO as CleanRL's ``ppo.py`` (discrete, ``Categorical``) and ``ppo_continuous_action.py`` (``Normal``
with a learned ``actor_logstd``) write it, once for both libraries (``torch`` is torch or kiln), on a synthetic,
deterministic vectorised environment (NumPy, gym's ``reset``/``step`` API with terminations, truncations and autoreset).

Idioms: ``layer_init`` by ``nn.init.orthogonal_(layer.weight, std)`` and ``constant_``; rollout buffers
``torch.zeros((num_steps, num_envs) + shape)`` written per step (``obs[step] = next_obs``, ``values[step] =
value.flatten()``) under ``torch.no_grad()``; ``torch.Tensor(next_obs)``; GAE in a reversed Python loop
(``advantages[t] = lastgaelam = ...``); flattening by ``reshape((-1,) + shape)``; minibatches of a shuffled index
(``torch.randperm``; CleanRL's ``np.random.shuffle`` is the same gather); ``b_actions.long()[mb_inds]``; the ratio by
``logratio.exp()``; approx-KL and clip fractions under ``no_grad`` with ``.item()``; advantage normalisation; the clipped
surrogate ``torch.max(pg_loss1, pg_loss2)``, the clipped value loss, the entropy bonus; ``nn.utils.clip_grad_norm_``;
``optim.Adam(eps=1e-5)`` with the learning rate annealed by ``optimizer.param_groups[0]["lr"] = lrnow``; the target-KL
early stop; explained variance in NumPy.

kiln's run draws its own actions (``probs.sample()``) and minibatch orders (``torch.randperm``); torch's run replays
them (its generator draws other numbers for a seed), so both see the same rollouts: the values, log-probs,
advantages and returns of each rollout, every minibatch's losses and statistics, the first gradients (after
clipping) and the parameters after agree to 1e-10 in float64, eagerly and with each minibatch update (zero_grad,
forward, backward, ``clip_grad_norm_``, Adam step) one ``kiln.compile(fullgraph=True)`` graph. CleanRL trains in
float32: the discrete agent is also run so, at float32's level.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot

NUM_ENVS, NUM_STEPS, OBS_DIM, N_ACTIONS, ACTION_DIM, HIDDEN = 2, 8, 4, 3, 2, 16


class SyntheticVectorEnv:
    """A deterministic vectorised environment: ``obs' = tanh(obs A + push(action))``; reward for keeping ``obs[0]``
    near 0.5; terminated when ``obs[1] > 0.8``, truncated after each env's horizon; a done env resets (gym's
    autoreset: ``step`` returns the new episode's first observation)."""

    def __init__(self, continuous, seed=0):
        rng = np.random.default_rng(seed)
        self.continuous = continuous
        self.A = rng.standard_normal((OBS_DIM, OBS_DIM)) * 0.5
        self.B = rng.standard_normal((ACTION_DIM if continuous else N_ACTIONS, OBS_DIM)) * 0.7
        self.starts = rng.uniform(-0.5, 0.5, (7, NUM_ENVS, OBS_DIM))
        self.horizons = np.array([5, 3])

    def reset(self, seed=None):
        self.episodes, self.t = np.zeros(NUM_ENVS, int), np.zeros(NUM_ENVS, int)
        self.obs = self.starts[0].copy()
        return self.obs.copy(), {}

    def step(self, action):
        push = action @ self.B if self.continuous else self.B[action]
        self.obs = np.tanh(self.obs @ self.A + push)
        reward = 1.0 - np.abs(self.obs[:, 0] - 0.5) - (0.05 * (action ** 2).sum(-1) if self.continuous else 0.0)
        self.t += 1
        terminations, truncations = self.obs[:, 1] > 0.8, self.t >= self.horizons
        for env in np.flatnonzero(terminations | truncations):
            self.episodes[env] += 1
            self.t[env] = 0
            self.obs[env] = self.starts[self.episodes[env] % len(self.starts), env]
        return self.obs.copy(), reward, terminations, truncations, {}


def ppo_agent(continuous):
    def build(torch, nn, F):
        from_distributions = torch.distributions

        def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
            torch.nn.init.orthogonal_(layer.weight, std)
            torch.nn.init.constant_(layer.bias, bias_const)
            return layer

        def mlp_head(out_features, std):
            return nn.Sequential(layer_init(nn.Linear(OBS_DIM, HIDDEN)), nn.Tanh(), layer_init(nn.Linear(HIDDEN, HIDDEN)),
                                 nn.Tanh(), layer_init(nn.Linear(HIDDEN, out_features), std=std))

        class Agent(nn.Module):
            def __init__(self):
                super().__init__()
                self.critic = mlp_head(1, std=1.0)
                self.actor = mlp_head(N_ACTIONS, std=0.01)

            def get_value(self, x):
                return self.critic(x)

            def get_action_and_value(self, x, action=None):
                logits = self.actor(x)
                probs = from_distributions.Categorical(logits=logits)
                if action is None:
                    action = probs.sample()
                return action, probs.log_prob(action), probs.entropy(), self.critic(x)

        class ContinuousAgent(nn.Module):
            def __init__(self):
                super().__init__()
                self.critic = mlp_head(1, std=1.0)
                self.actor_mean = mlp_head(ACTION_DIM, std=0.01)
                self.actor_logstd = nn.Parameter(torch.zeros(1, ACTION_DIM))

            def get_value(self, x):
                return self.critic(x)

            def get_action_and_value(self, x, action=None):
                action_mean = self.actor_mean(x)
                action_logstd = self.actor_logstd.expand_as(action_mean)
                action_std = torch.exp(action_logstd)
                probs = from_distributions.Normal(action_mean, action_std)
                if action is None:
                    action = probs.sample()
                return action, probs.log_prob(action).sum(1), probs.entropy().sum(1), self.critic(x)

        return ContinuousAgent() if continuous else Agent()

    return build


class Draws:
    """kiln's run draws (``probs.sample()``, ``torch.randperm``) and records; torch's run replays what kiln drew."""

    def __init__(self):
        self.recorded, self.replaying, self.at = [], False, 0

    def start_replay(self):
        self.replaying, self.at = True, 0

    def given(self, torch):
        """The recorded draw as a tensor of ``torch`` when replaying, else None (the caller draws)."""
        if not self.replaying:
            return None
        self.at += 1
        return torch.tensor(self.recorded[self.at - 1])

    def record(self, tensor):
        if not self.replaying:
            self.recorded.append(array(tensor))
        return tensor


class Args:
    learning_rate, num_iterations, gamma, gae_lambda, update_epochs, num_minibatches = 3e-2, 2, 0.99, 0.95, 2, 4
    norm_adv, clip_coef, clip_vloss, ent_coef, vf_coef, max_grad_norm, target_kl = True, 0.2, True, 0.01, 0.5, 0.5, 0.015
    batch_size = NUM_ENVS * NUM_STEPS
    minibatch_size = batch_size // num_minibatches


def ppo_update(torch, nn, agent, optimizer, args, continuous):
    """One minibatch update of CleanRL's loop; returns the losses and statistics as tensors."""

    def update(b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values, mb_inds):
        mb_actions = b_actions[mb_inds] if continuous else b_actions.long()[mb_inds]
        _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], mb_actions)
        logratio = newlogprob - b_logprobs[mb_inds]
        ratio = logratio.exp()

        with torch.no_grad():
            old_approx_kl = (-logratio).mean()
            approx_kl = ((ratio - 1) - logratio).mean()
            clipfrac = ((ratio - 1.0).abs() > args.clip_coef).float().mean()

        mb_advantages = b_advantages[mb_inds]
        if args.norm_adv:
            mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

        pg_loss1 = -mb_advantages * ratio
        pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
        pg_loss = torch.max(pg_loss1, pg_loss2).mean()

        newvalue = newvalue.view(-1)
        if args.clip_vloss:
            v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
            v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -args.clip_coef, args.clip_coef)
            v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
            v_loss_max = torch.max(v_loss_unclipped, v_loss_clipped)
            v_loss = 0.5 * v_loss_max.mean()
        else:
            v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

        entropy_loss = entropy.mean()
        loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

        optimizer.zero_grad()
        loss.backward()
        grad_norm = nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
        optimizer.step()
        return loss, pg_loss, v_loss, entropy_loss, grad_norm, old_approx_kl, approx_kl, clipfrac

    return update


def train_ppo(continuous, compiled, draws):
    def train(torch, nn, F, agent):
        args, envs = Args(), SyntheticVectorEnv(continuous)
        if torch is not kiln:
            draws.start_replay()
        action_shape = (ACTION_DIM,) if continuous else ()
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
        update = ppo_update(torch, nn, agent, optimizer, args, continuous)
        update = kiln.compile(update, fullgraph=True) if compiled and torch is kiln else update
        record = {"rollouts": {}, "minibatches": [], "lrs": [], "explained_var": []}

        obs = torch.zeros((NUM_STEPS, NUM_ENVS) + (OBS_DIM,))
        actions = torch.zeros((NUM_STEPS, NUM_ENVS) + action_shape)
        logprobs = torch.zeros((NUM_STEPS, NUM_ENVS))
        rewards = torch.zeros((NUM_STEPS, NUM_ENVS))
        dones = torch.zeros((NUM_STEPS, NUM_ENVS))
        values = torch.zeros((NUM_STEPS, NUM_ENVS))

        next_obs, _ = envs.reset(seed=1)
        next_obs = torch.Tensor(next_obs)
        next_done = torch.zeros(NUM_ENVS)

        for iteration in range(1, args.num_iterations + 1):
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            lrnow = frac * args.learning_rate
            optimizer.param_groups[0]["lr"] = lrnow
            record["lrs"].append(optimizer.param_groups[0]["lr"])

            for step in range(0, NUM_STEPS):
                obs[step] = next_obs
                dones[step] = next_done
                with torch.no_grad():
                    action, logprob, _, value = agent.get_action_and_value(next_obs, draws.given(torch))
                    values[step] = value.flatten()
                actions[step] = draws.record(action)
                logprobs[step] = logprob
                next_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
                next_done = np.logical_or(terminations, truncations)
                rewards[step] = torch.tensor(reward).view(-1)
                next_obs, next_done = torch.Tensor(next_obs), torch.Tensor(next_done)

            with torch.no_grad():
                next_value = agent.get_value(next_obs).reshape(1, -1)
                advantages = torch.zeros_like(rewards)
                lastgaelam = 0
                for t in reversed(range(NUM_STEPS)):
                    if t == NUM_STEPS - 1:
                        nextnonterminal = 1.0 - next_done
                        nextvalues = next_value
                    else:
                        nextnonterminal = 1.0 - dones[t + 1]
                        nextvalues = values[t + 1]
                    delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                    advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
                returns = advantages + values
            record["dtypes"] = [str(t.dtype).split(".")[-1] for t in (
                next_obs, next_done, next_value, action, logprob, value, advantages, returns, actions.long())]
            record["rollouts"][f"iteration {iteration}"] = {name: array(t) for name, t in (("obs", obs), ("actions", actions), (
                "logprobs", logprobs), ("values", values), ("rewards", rewards), ("dones", dones), (
                "advantages", advantages), ("returns", returns))}

            b_obs = obs.reshape((-1,) + (OBS_DIM,))
            b_logprobs = logprobs.reshape(-1)
            b_actions = actions.reshape((-1,) + action_shape)
            b_advantages = advantages.reshape(-1)
            b_returns = returns.reshape(-1)
            b_values = values.reshape(-1)

            clipfracs = []
            for epoch in range(args.update_epochs):
                b_inds = draws.given(torch)
                b_inds = draws.record(torch.randperm(args.batch_size) if b_inds is None else b_inds)
                for start in range(0, args.batch_size, args.minibatch_size):
                    end = start + args.minibatch_size
                    mb_inds = b_inds[start:end]
                    stats = update(b_obs, b_actions, b_logprobs, b_advantages, b_returns, b_values, mb_inds)
                    clipfracs += [stats[-1].item()]
                    record["minibatches"].append([s.item() for s in stats])
                    record["stat_dtypes"] = [str(s.dtype).split(".")[-1] for s in stats]
                    record.setdefault("grads", gradients(agent))
                approx_kl = stats[6]
                if args.target_kl is not None and approx_kl > args.target_kl:
                    break

            y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
            var_y = np.var(y_true)
            record["explained_var"].append(np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y)
        record["state"] = snapshot(agent)
        return record

    return train


def check_ppo(continuous, compiled, branches=True, **tolerance):
    draws = Draws()
    ours, theirs = run_in_lockstep(ppo_agent(continuous), train_ppo(continuous, compiled, draws))
    assert draws.at == len(draws.recorded), "torch's run replayed every draw kiln made"
    for key in ("dtypes", "stat_dtypes"):
        assert ours.pop(key) == theirs.pop(key), key
    assert_same_records(ours, theirs, **tolerance)
    rollouts = theirs["rollouts"].values()
    assert all(r["dones"].any() for r in rollouts), "every rollout crosses an episode end"
    assert np.allclose(theirs["lrs"], [3e-2, 1.5e-2])
    minibatches = np.array(theirs["minibatches"])
    if not branches:
        return ours, theirs
    assert len(minibatches) < Args.num_iterations * Args.update_epochs * Args.num_minibatches, "target_kl stopped one"
    assert (minibatches[:, -1] > 0).any(), "the surrogate's clip was active in some minibatch"
    assert (minibatches[:, 4] > Args.max_grad_norm).any() and (minibatches[:, 4] < Args.max_grad_norm).any()
    return ours, theirs


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-update"])
@pytest.mark.parametrize("continuous", [False, True], ids=["categorical", "normal"])
def test_cleanrl_ppo_trains_as_torch(continuous, compiled, float64_default):
    check_ppo(continuous, compiled)


def test_cleanrl_ppo_float32_trains_as_torch():
    """CleanRL's default float32; sums in other orders: float32's level."""
    ours, theirs = check_ppo(False, False, branches=False, rtol=1e-4, atol=1e-6)
    assert ours["rollouts"]["iteration 1"]["obs"].dtype == theirs["rollouts"]["iteration 1"]["obs"].dtype == np.float32
