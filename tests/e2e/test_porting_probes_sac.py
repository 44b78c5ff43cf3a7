"""Porting probe: Soft Actor-Critic as CleanRL's ``sac_continuous_action.py`` and Spinning Up's ``sac`` write it
(``tests/e2e/sac_program.py``, one text for both libraries), on a deterministic NumPy environment with random actions
before learning starts and replay buffers of NumPy arrays sampled by ``randint`` indices.

Idioms: the squashed Gaussian actor (mean and log-std heads; log-std tanh-rescaled (CleanRL) or clamped (Spinning Up));
``torch.distributions.Normal(mean, std).rsample()``, ``y_t = torch.tanh(x_t)``, float32 ``action_scale`` /
``action_bias`` buffers, ``log_prob -= torch.log(action_scale * (1 - y_t.pow(2)) + 1e-6)``, ``.sum(1, keepdim=True)``
(Spinning Up's softplus form of the same correction); twin Q networks and ``torch.min``; targets by
``load_state_dict`` (CleanRL) or ``deepcopy`` with frozen parameters (Spinning Up); polyak averaging by
``target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)`` and by ``p_targ.data.mul_(polyak);
p_targ.data.add_((1 - polyak) * p.data)`` under ``no_grad``; automatic entropy tuning (``log_alpha = torch.zeros(1,
requires_grad=True)`` with its own Adam, ``alpha = log_alpha.exp().item()``); separate Adams for actor and critics; the
delayed policy update; Spinning Up freezing the Q-networks by ``p.requires_grad = False`` during the policy step.

Noise: each library's generator gives another stream for one seed, so the standard-normal draw inside
``Normal.rsample`` (``loc + eps * scale`` in both) reads eps from ``NoiseTape`` (tensors filled with NumPy noise before
each environment step and update): torch's ``torch.distributions.normal._standard_normal`` and kiln's
``Distribution._standard_normal`` are replaced for the test. Everything else (``rsample``'s arithmetic, ``log_prob``,
``tanh``, the optimizers) is each library's own.

Compared in float64 to 1e-10: the actions taken, every loss, the Q-values, the first gradients, alpha, and every
network (targets included) after the updates; eagerly (CleanRL's loop with ``.item()``, Spinning Up's), and with the
whole update (critic step, actor step, alpha step, polyak update: three optimizers) one
``kiln.compile(fullgraph=True)`` graph: LeanRL's torch.compile form of CleanRL's update (alpha a tensor refreshed by
``copy_``) and Spinning Up's ``update``. CleanRL trains in float32: its loop also runs so, at float32's level (rtol 2e-4: sums in other orders through
Adam's division by small second moments). No float64 tolerance needed loosening.

What broke: Spinning Up's ``log_prob(pi_action).sum(axis=-1)``: kiln's methods refused NumPy's ``axis=``/``keepdims=``
that PyTorch's native functions take (now frontend/torch_keywords.py, with ``x.permute(dims=...)`` and the other
one-keyword size forms; tests/frontend/test_torch_keywords_vs_torch.py).
Denis Yarats' pytorch_sac (``SquashedNormal``: a ``TransformedDistribution`` with its own ``TanhTransform`` on
``pyd.constraints``) needed ``kiln.distributions.constraints`` and ``.transformed_distribution`` (added); it trains as
torch's eagerly and as a compiled update: its temperature ``log_alpha = torch.tensor(...)`` marked by
``log_alpha.requires_grad = True`` trained eagerly only, until such a leaf became the ``GradLeaf`` that
``requires_grad=True`` at creation makes (``frontend/tensor_eager.py``), which a compiled step differentiates.
LeanRL refreshes ``alpha.copy_(log_alpha.detach().exp())`` after the compiled call; the same write inside the compiled
update (a closure tensor read, then written in place) failed at the next call until a0738ce, and is tested too.
A kiln.compile'd function may trace more than once in a call, so the tape is rewound at the
start of each update (``NoiseTape.rewinding``), in both libraries.
"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.sac_program import (ACT_DIM, OBS_DIM, CleanRLArgs, NoiseTape, ReplayBuffer, SyntheticContinuousEnv, YaratsSAC,
                             cleanrl_networks, cleanrl_update, leanrl_update, spinup_actor_critic, spinup_target,
                             spinup_update, yarats_networks)
from oracles import require_torch


@pytest.fixture
def noise_tapes(monkeypatch):
    """``tapes[lib]``: give each library's ``Normal.rsample`` its noise from the tape ``use(lib, tape)`` installs."""
    torch = require_torch()
    from kiln.frontend.distributions import Distribution

    tapes = {}
    monkeypatch.setattr(torch.distributions.normal, "_standard_normal",
                        lambda shape, dtype=None, device=None: tapes[torch].draw(shape))
    monkeypatch.setattr(Distribution, "_standard_normal", lambda self, shape: tapes[kiln].draw(shape))
    return tapes


def numpy_dtype(torch):
    return np.float64 if torch.get_default_dtype() == torch.float64 else np.float32


def optimizers(torch, nets, log_alpha, args):
    q_optimizer = torch.optim.Adam(list(nets["qf1"].parameters()) + list(nets["qf2"].parameters()), lr=args.q_lr)
    actor_optimizer = torch.optim.Adam(list(nets["actor"].parameters()), lr=args.policy_lr)
    a_optimizer = torch.optim.Adam([log_alpha], lr=args.q_lr)
    return q_optimizer, actor_optimizer, a_optimizer


def train_cleanrl(tapes, leanrl_compiled=None, refresh_alpha=False):
    """CleanRL's loop; ``leanrl_compiled`` None runs its update as written (eagerly), else LeanRL's tensor form of it,
    ``kiln.compile(fullgraph=True)``d in kiln when True."""

    def train(torch, nn, F, nets):
        args, env = CleanRLArgs(), SyntheticContinuousEnv()
        tape = tapes[torch] = NoiseTape(torch, {(1, ACT_DIM): 1, (args.batch_size, ACT_DIM): 3}, args.batch_size)
        actor = nets["actor"]
        target_entropy = -torch.prod(torch.Tensor((ACT_DIM,))).item()
        log_alpha = torch.zeros(1, requires_grad=True)
        alpha = log_alpha.exp().item()
        opts = optimizers(torch, nets, log_alpha, args)
        if leanrl_compiled is None:
            state = {"alpha": alpha, "log_alpha": log_alpha, "target_entropy": target_entropy}
            update = cleanrl_update(torch, F, nets, opts, args, state)
        else:
            alpha = log_alpha.detach().exp()
            update = leanrl_update(torch, F, nets, opts, args, alpha, log_alpha, target_entropy, refresh_alpha)
            update = tape.rewinding(update)
            if leanrl_compiled and torch is kiln:
                update = kiln.compile(update, fullgraph=True)
        rb = ReplayBuffer(32, numpy_dtype(torch))
        record = {"actions": [], "updates": {}, "alphas": []}

        obs, _ = env.reset(seed=1)
        for global_step in range(args.total_timesteps):
            tape.refill()
            if global_step < args.learning_starts:
                actions = env.sample_action()
            else:
                actions, log_prob, mean = actor.get_action(torch.Tensor(obs[None]))
                record["action_dtypes"] = [str(t.dtype).split(".")[-1] + str(tuple(t.shape)) for t in (actions, log_prob, mean)]
                actions = actions.detach().cpu().numpy()[0]
            record["actions"].append(np.array(actions, np.float64))
            next_obs, rewards, terminations, truncations, infos = env.step(actions)
            real_next_obs = next_obs.copy()
            if truncations:
                real_next_obs = infos["final_observation"]
            rb.add(obs, real_next_obs, actions, rewards, terminations)
            obs = next_obs

            if global_step > args.learning_starts:
                data = [torch.tensor(a) for a in rb.sample(args.batch_size)]
                tape.refill()
                if leanrl_compiled is None:
                    record["updates"][f"step {global_step}"] = update(*data, global_step)
                    record["alphas"].append(state["alpha"])
                else:
                    record["updates"][f"step {global_step}"] = [loss.item() for loss in update(*data)]
                    if not refresh_alpha:
                        alpha.copy_(log_alpha.detach().exp())
                    record["alphas"].append(alpha.item())
                record.setdefault("grads", gradients(nets))
                record.setdefault("log_alpha_grad", array(log_alpha.grad))
        record["state"], record["log_alpha"] = snapshot(nets), array(log_alpha)
        record["dtypes"] = [str(t.dtype).split(".")[-1] for t in (actor.action_scale, log_alpha)]
        return record

    return train


def check_cleanrl(noise_tapes, leanrl_compiled=None, refresh_alpha=False, **tolerance):
    ours, theirs = run_in_lockstep(cleanrl_networks, train_cleanrl(noise_tapes, leanrl_compiled, refresh_alpha))
    for key in ("dtypes", "action_dtypes"):
        assert ours.pop(key) == theirs.pop(key), key
    assert_same_records(ours, theirs, **tolerance)
    assert len(theirs["updates"]) == CleanRLArgs.total_timesteps - CleanRLArgs.learning_starts - 1
    assert len(set(theirs["alphas"])) > 2, "alpha was tuned"
    moved = theirs["state"]["qf1_target.fc1.weight"] - theirs["state"]["qf1.fc1.weight"]
    assert 0 < np.abs(moved).max(), "the targets trail the critics"
    return ours, theirs


def test_cleanrl_sac_trains_as_torch(noise_tapes, float64_default):
    ours, theirs = check_cleanrl(noise_tapes)
    assert any("actor_losses" in update for update in theirs["updates"].values()), "the delayed policy update ran"


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-update"])
def test_leanrl_sac_update_trains_as_torch(noise_tapes, compiled, float64_default):
    check_cleanrl(noise_tapes, leanrl_compiled=compiled)


def test_leanrl_sac_alpha_refreshed_inside_the_compiled_update(noise_tapes, float64_default):
    """``alpha.copy_(log_alpha.detach().exp())`` of a closure tensor inside the compiled update (it failed at the next
    call until a0738ce wrote closure tensors back)."""
    check_cleanrl(noise_tapes, leanrl_compiled=True, refresh_alpha=True)


def test_cleanrl_sac_float32_trains_as_torch(noise_tapes):
    """CleanRL's default float32: float32's level."""
    ours, theirs = check_cleanrl(noise_tapes, rtol=2e-4, atol=2e-5)
    assert ours["state"]["qf1.fc1.weight"].dtype == np.float32


def train_spinup(tapes, compiled, steps=11, update_after=4, batch_size=5):
    """Spinning Up's ``sac`` loop (``update_every`` 1): random actions before ``start_steps``, then ``ac.act``."""

    def train(torch, nn, F, ac):
        env, rb = SyntheticContinuousEnv(seed=3), ReplayBuffer(32, numpy_dtype(torch), seed=1)
        tape = tapes[torch] = NoiseTape(torch, {(ACT_DIM,): 1, (batch_size, ACT_DIM): 2}, batch_size)
        ac_targ = spinup_target(ac)
        q_params = list(ac.q1.parameters()) + list(ac.q2.parameters())
        pi_optimizer = torch.optim.Adam(ac.pi.parameters(), lr=2e-2)
        q_optimizer = torch.optim.Adam(q_params, lr=2e-2)
        update = tape.rewinding(spinup_update(torch, ac, ac_targ, q_optimizer, pi_optimizer))
        update = kiln.compile(update, fullgraph=True) if compiled and torch is kiln else update
        record = {"actions": [], "losses": []}
        o, _ = env.reset()
        for t in range(steps):
            tape.refill()
            a = ac.act(torch.as_tensor(o, dtype=torch.get_default_dtype())) if t > update_after else env.sample_action()
            record["actions"].append(np.array(a, np.float64))
            o2, r, terminated, truncated, _ = env.step(a)
            rb.add(o, o2, a, r, terminated)
            o = o2
            if t >= update_after:
                batch = [torch.as_tensor(v, dtype=torch.get_default_dtype()) for v in rb.sample(batch_size)]
                tape.refill()
                record["losses"].append([loss.item() for loss in update(*batch)])
                record.setdefault("grads", gradients(ac))
        record["state"], record["target"] = snapshot(ac), snapshot(ac_targ)
        record["frozen"] = [p.requires_grad for p in ac_targ.parameters()] + [p.requires_grad for p in q_params]
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-update"])
def test_spinningup_sac_trains_as_torch(noise_tapes, compiled, float64_default):
    ours, theirs = run_in_lockstep(spinup_actor_critic, train_spinup(noise_tapes, compiled))
    assert_same_records(ours, theirs)
    assert theirs["frozen"] == [False] * 20 + [True] * 12
    assert "q1.q.0.weight" in theirs["grads"] and "pi.mu_layer.weight" in theirs["grads"]
    assert not np.allclose(theirs["target"]["q1.q.0.weight"], theirs["state"]["q1.q.0.weight"])


def train_yarats(tapes, compiled, updates=5, batch_size=6):
    """pytorch_sac's agent updated on minibatches of a filled replay buffer (``reward`` and ``not_done`` as
    ``(B, 1)`` columns, as its buffer stores them)."""

    def train(torch, nn, F, nets):
        env, rb = SyntheticContinuousEnv(seed=5), ReplayBuffer(32, numpy_dtype(torch), seed=2)
        obs, _ = env.reset()
        for _ in range(12):
            action = env.sample_action()
            next_obs, reward, terminated, truncated, _ = env.step(action)
            rb.add(obs, next_obs, action, reward, terminated)
            obs = next_obs
        tape = tapes[torch] = NoiseTape(torch, {(batch_size, ACT_DIM): 2}, batch_size)
        agent = YaratsSAC(torch, F, nets)
        update = tape.rewinding(agent.update)
        update = kiln.compile(update, fullgraph=True) if compiled and torch is kiln else update
        record = {"losses": [], "alphas": []}
        for _ in range(updates):
            o, a, r, o2, d = (torch.as_tensor(v) for v in rb.sample(batch_size))
            tape.refill()
            record["losses"].append([t.item() for t in update(o, a, r.unsqueeze(-1), o2, (1.0 - d).unsqueeze(-1))])
            record["alphas"].append(agent.alpha.item())
            record.setdefault("grads", gradients(nets))
        record["state"], record["log_alpha"] = snapshot(nets), array(agent.log_alpha)
        record["outputs"] = sorted(nets["actor"].outputs)
        return record

    return train


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-update"])
def test_yarats_pytorch_sac_trains_as_torch(noise_tapes, compiled, float64_default):
    """Denis Yarats' pytorch_sac: ``SquashedNormal`` (a ``TransformedDistribution`` with its own ``TanhTransform`` on
    ``pyd.constraints``), ``chunk(2, dim=-1)`` mean/log-std heads, orthogonal init by ``apply``, critic targets
    ``.detach()``ed (no ``no_grad``), the temperature's ``alpha`` property."""
    ours, theirs = run_in_lockstep(yarats_networks, train_yarats(noise_tapes, compiled))
    assert ours.pop("outputs") == theirs.pop("outputs") == ["mu", "std"]
    assert_same_records(ours, theirs)
    assert len(set(theirs["alphas"])) == len(theirs["alphas"]), "the temperature was tuned"
