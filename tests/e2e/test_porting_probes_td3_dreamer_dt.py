"""Porting probes: three RL / sequence-decision families, each written once as its reference writes it (``torch`` is
``torch`` or ``kiln``) and run in both from kiln's initial weights, in float64 to 1e-10 (float32 at its level): TD3,
Dreamer(V2)'s world model and imagined behavior, and the Decision Transformer.

TD3 (sfujim/TD3's ``TD3.py``, ``utils.py`` and ``main.py``, tiny): ``Actor`` (``self.max_action * torch.tanh(...)``),
``Critic`` with Q1/Q2 and ``Q1()``, ``copy.deepcopy`` targets, target policy smoothing (``(torch.randn_like(action) *
self.policy_noise).clamp(-self.noise_clip, self.noise_clip)``; the noise fed from a ``NoiseTape`` in both: the
generators differ), ``torch.min(target_Q1, target_Q2)``, ``reward + not_done * self.discount * target_Q`` under
``no_grad``, ``F.mse_loss(current_Q1, target_Q) + F.mse_loss(current_Q2, target_Q)``, the delayed actor update
(``if self.total_it % self.policy_freq == 0``), soft updates ``target_param.data.copy_(self.tau * param.data + (1 -
self.tau) * target_param.data)``, the NumPy ``ReplayBuffer`` with ``torch.FloatTensor(self.state[ind]).to(self.device)``,
``select_action``'s ``.cpu().data.numpy().flatten()`` plus NumPy exploration noise, and ``save``/``load`` of the
state_dicts (``torch.save(self.critic.state_dict(), filename + "_critic")``) into a tmp dir, kiln's policy also loading
torch's files. Eagerly, and with ``policy.update`` (``train`` after the sampling: the minibatch, the counter, the
critic step, the delayed actor step and the soft updates) one ``kiln.compile(fullgraph=True)`` graph against torch's
eager loop; the trained actor exported by ``kiln.onnx.export`` and run by onnxruntime. The float64 runs build the
minibatch with ``torch.DoubleTensor`` (``torch.FloatTensor`` is float32 whatever the default dtype, in both: a float64
critic refuses it), the one word a float64 user changes; the float32 run is the reference as written.

Dreamer(V2) (jsikyoon/dreamer-torch's ``networks.py``, ``tools.py`` and ``models.py``, as written but for an MLP encoder
and an 'obs' head of vector observations in place of the conv encoder and decoder): the ``RSSM`` with its ``GRUCell``
(LayerNorm, ``torch.split`` of the gates, Keras' ``[state]`` lists), discrete latents (``torchd.independent.Independent(
tools.OneHotDist(logit), 1)``, ``OneHotDist`` a ``torchd.one_hot_categorical.OneHotCategorical`` whose ``sample`` adds
``probs - probs.detach()`` in place, ``mode`` by ``F.one_hot(torch.argmax(super().logits, axis=-1), ...)``) and Gaussian
ones (``tools.ContDist(torchd.independent.Independent(torchd.normal.Normal(mean, std), 1))``, ``sigmoid2`` std),
``observe``'s ``static_scan`` over time with the ``permute`` swap of the time axis, ``kl_loss``'s KL balancing
(``torchd.kl.kl_divergence`` of ``dist(sg(post))``, ``torch.maximum(torch.mean(value), torch.Tensor([free])[0])``),
``DenseHead``'s ``nn.Linear(inp_dim, np.prod(self._shape))``, ``tools.Optimizer`` (``torch.cuda.amp.GradScaler(enabled=
False)``, ``clip_grad_norm_``, ``loss.detach().cpu().numpy()``, ``norm.item()``), ``tools.RequiresGrad``
(``requires_grad_`` on enter and exit), ``WorldModel._train``, and ``ImagBehavior._train``: imagination by
``static_scan`` over ``torch.arange(horizon)`` with the one-hot actor's straight-through samples, the slow value target
(``d.data = mix * s.data + (1 - mix) * d.data``), ``lambda_return`` by the reversed Python loop of
``static_scan_for_lambda_return`` (``torch.cat``, ``reshape``, ``unbind``, then ``torch.stack(target, dim=1)``),
``torch.cumprod`` weights and the 'both' actor gradient (dynamics and REINFORCE mixed, ``log_prob`` of the one-hot
actions). The categorical and Gaussian draws come from a ``NoiseTape`` in both libraries (``OneHotCategorical.sample``
as ``argmax(logits + noise)`` one-hot, ``Normal``'s standard-normal draw); everything else is each library's. Eagerly,
and the world model's step (its ``_train`` without the NumPy metrics) one ``kiln.compile(fullgraph=True)`` graph; and
NM512/dreamerv3-torch's ``kl_loss`` (free nats by ``torch.clip(rep_loss, min=free)``), values and gradients.
As written, ``ImagBehavior._train`` calls its optimizers after ``RequiresGrad`` froze the actor and value again, so
torch accumulates no gradient into them (its ``AccumulateGrad`` skips a leaf that no longer requires grad): they never
train, in torch and now in kiln; a variant stepping them inside the ``with`` blocks trains them. ``cell='gru'``
(``nn.GRUCell`` called with ``[deter]``) fails in both.

Decision Transformer (kzl/decision-transformer's ``decision_transformer.py`` over ``trajectory_gpt2.py``'s GPT-2, written
out without HF: ``Conv1D`` by ``torch.addmm`` and ``view``, the uint8 ``tril`` ``bias`` buffer and ``masked_bias`` in
``torch.where(mask.bool(), w, ...)``, ``split_heads``' ``permute(0, 2, 3, 1)`` keys, ``merge_heads``' ``contiguous``,
``gelu_new``, the ``(1.0 - attention_mask) * -10000.0`` mask, HF's ``_init_weights`` by ``apply`` and
``p.data.normal_``; no positional embeddings, as there): ``embed_timestep`` Embedding added to the return, state and
action embeddings, ``torch.stack((returns_embeddings, state_embeddings, action_embeddings), dim=1).permute(0, 2, 1,
3).reshape(batch_size, 3*seq_length, self.hidden_size)``, the stacked attention mask, ``x.reshape(batch_size,
seq_length, 3, self.hidden_size).permute(0, 2, 1, 3)``, experiment.py's NumPy ``get_batch`` (left padding,
``discount_cumsum``, ``torch.from_numpy(...).to(dtype=torch.float32)``), seq_trainer.py's ``train_step`` (the MSE on
``action_preds.reshape(-1, act_dim)[attention_mask.reshape(-1) > 0]``, AdamW, ``clip_grad_norm_(..., .25)``,
``LambdaLR`` warmup) and evaluate_episodes.py's ``evaluate_episode_rtg`` (``get_action``'s left padding by
``torch.cat([torch.zeros(...), states], dim=1)`` and its ``attention_mask``, ``actions[-1] = action``, the context grown
by ``torch.cat``). Eagerly and with ``model = kiln.compile(model, fullgraph=True)``; the reference's float32 casts in
float32, and float64 with ``torch.float64`` in their place; the action head exported by ``kiln.onnx.export`` and run by
onnxruntime. The whole ``train_step`` under ``kiln.compile(fullgraph=
True)`` trains as torch: the boolean-mask index's mask is made from the step's input, so its values are specialized and
guarded (``frontend/pending_masked_rows.py``; it was refused as a data-dependent shape, which torch 2.13's
``torch.compile(fullgraph=True)`` traces with an unbacked size).

What broke: ``kiln.compile(policy.update)`` of ``class TD3(object)`` counted ``self.total_it += 1`` once per trace,
not per call, and ran the first trace's branch of ``self.total_it % self.policy_freq`` at every call, silently: a
plain object has no ``__setattr__`` hook that records the write. Now the attributes a trace changes on the plain
objects a compiled function reaches (a bound method's own, those its closure holds) are replayed per call, and guarded
where the trace read them before writing, as ``torch.compile`` (``runtime/plain_object_writes.py``;
``tests/runtime/test_compiled_plain_object_attribute_writes.py``). Dreamer: kiln had no
``OneHotCategorical`` (nor ``OneHotCategoricalStraightThrough``, ``constraints.one_hot``, and the submodules
``torchd.one_hot_categorical``, ``.kl``, ``.independent``, ``.categorical``): added (``frontend/distributions_one_hot.py``;
``tests/distributions/test_one_hot_categorical_vs_torch.py``). Its backward after ``RequiresGrad``'s exit raised
"nothing to differentiate": kiln read ``requires_grad`` at ``backward()``; now, as torch, whether a result requires grad
is settled when its op runs, and ``backward()`` accumulates only into parameters that still require grad
(``frontend/eager_values.py`` ``trained_parameter``, ``runtime/eager_backward.py`` ``still_requires_grad``;
``tests/runtime/test_requires_grad_flipped_between_forward_and_backward_vs_torch.py``). Decision Transformer: nothing.
"""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest

import kiln
import kiln.onnx
from e2e.probe_lockstep import (array, assert_same_records, compiled_module_training, gradients, run_in_lockstep,
                                snapshot)
from e2e.sac_program import ACT_DIM, HIGH, OBS_DIM, NoiseTape, SyntheticContinuousEnv
from oracles import libraries, require, require_torch

HIDDEN, BATCH = 16, 6


@pytest.fixture
def noise_tapes(monkeypatch):
    """``tapes[lib]``: each library's ``randn_like`` (TD3's target policy smoothing) reads the tape set there."""
    torch = require_torch()
    tapes = {}
    for lib in (kiln, torch):
        monkeypatch.setattr(lib, "randn_like", lambda input, lib=lib, **options: tapes[lib].draw(input.shape))
    return tapes


# --- sfujim/TD3: TD3.py and utils.py ---------------------------------------------------------------------------------


def td3_program(torch, nn, F, tensor_type=None):
    """``(TD3, ReplayBuffer)`` as TD3.py and utils.py write them (256 hidden units there, ``HIDDEN`` here);
    ``tensor_type`` None is the reference's ``torch.FloatTensor``. ``train`` samples, then calls ``update`` (the rest
    of the reference's ``train``: the function a ``torch.compile`` user compiles, the sampling being NumPy)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    FloatTensor = tensor_type or torch.FloatTensor

    class Actor(nn.Module):
        def __init__(self, state_dim, action_dim, max_action):
            super(Actor, self).__init__()
            self.l1 = nn.Linear(state_dim, HIDDEN)
            self.l2 = nn.Linear(HIDDEN, HIDDEN)
            self.l3 = nn.Linear(HIDDEN, action_dim)
            self.max_action = max_action

        def forward(self, state):
            a = F.relu(self.l1(state))
            a = F.relu(self.l2(a))
            return self.max_action * torch.tanh(self.l3(a))

    class Critic(nn.Module):
        def __init__(self, state_dim, action_dim):
            super(Critic, self).__init__()
            # Q1 architecture
            self.l1 = nn.Linear(state_dim + action_dim, HIDDEN)
            self.l2 = nn.Linear(HIDDEN, HIDDEN)
            self.l3 = nn.Linear(HIDDEN, 1)
            # Q2 architecture
            self.l4 = nn.Linear(state_dim + action_dim, HIDDEN)
            self.l5 = nn.Linear(HIDDEN, HIDDEN)
            self.l6 = nn.Linear(HIDDEN, 1)

        def forward(self, state, action):
            sa = torch.cat([state, action], 1)
            q1 = F.relu(self.l1(sa))
            q1 = F.relu(self.l2(q1))
            q1 = self.l3(q1)
            q2 = F.relu(self.l4(sa))
            q2 = F.relu(self.l5(q2))
            q2 = self.l6(q2)
            return q1, q2

        def Q1(self, state, action):
            sa = torch.cat([state, action], 1)
            q1 = F.relu(self.l1(sa))
            q1 = F.relu(self.l2(q1))
            q1 = self.l3(q1)
            return q1

    class TD3(object):
        def __init__(self, state_dim, action_dim, max_action, discount=0.99, tau=0.05, policy_noise=0.2,
                     noise_clip=0.5, policy_freq=2, lr=3e-3):
            self.actor = Actor(state_dim, action_dim, max_action).to(device)
            self.actor_target = copy.deepcopy(self.actor)
            self.actor_optimizer = torch.optim.Adam(self.actor.parameters(), lr=lr)
            self.critic = Critic(state_dim, action_dim).to(device)
            self.critic_target = copy.deepcopy(self.critic)
            self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=lr)
            self.max_action = max_action
            self.discount = discount
            self.tau = tau
            self.policy_noise = policy_noise
            self.noise_clip = noise_clip
            self.policy_freq = policy_freq
            self.total_it = 0

        def select_action(self, state):
            state = FloatTensor(state.reshape(1, -1)).to(device)
            return self.actor(state).cpu().data.numpy().flatten()

        def train(self, replay_buffer, batch_size=256):
            self.update(*replay_buffer.sample(batch_size))

        def update(self, state, action, next_state, reward, not_done):
            self.total_it += 1
            with torch.no_grad():
                # Select action according to policy and add clipped noise
                noise = (
                    torch.randn_like(action) * self.policy_noise
                ).clamp(-self.noise_clip, self.noise_clip)
                next_action = (
                    self.actor_target(next_state) + noise
                ).clamp(-self.max_action, self.max_action)
                # Compute the target Q value
                target_Q1, target_Q2 = self.critic_target(next_state, next_action)
                target_Q = torch.min(target_Q1, target_Q2)
                target_Q = reward + not_done * self.discount * target_Q
            # Get current Q estimates
            current_Q1, current_Q2 = self.critic(state, action)
            # Compute critic loss
            critic_loss = F.mse_loss(current_Q1, target_Q) + F.mse_loss(current_Q2, target_Q)
            # Optimize the critic
            self.critic_optimizer.zero_grad()
            critic_loss.backward()
            self.critic_optimizer.step()
            # Delayed policy updates
            if self.total_it % self.policy_freq == 0:
                # Compute actor losse
                actor_loss = -self.critic.Q1(state, self.actor(state)).mean()
                # Optimize the actor
                self.actor_optimizer.zero_grad()
                actor_loss.backward()
                self.actor_optimizer.step()
                # Update the frozen target models
                for param, target_param in zip(self.critic.parameters(), self.critic_target.parameters()):
                    target_param.data.copy_(self.tau * param.data + (1 - self.tau) * target_param.data)
                for param, target_param in zip(self.actor.parameters(), self.actor_target.parameters()):
                    target_param.data.copy_(self.tau * param.data + (1 - self.tau) * target_param.data)

        def save(self, filename):
            torch.save(self.critic.state_dict(), filename + "_critic")
            torch.save(self.critic_optimizer.state_dict(), filename + "_critic_optimizer")
            torch.save(self.actor.state_dict(), filename + "_actor")
            torch.save(self.actor_optimizer.state_dict(), filename + "_actor_optimizer")

        def load(self, filename):
            self.critic.load_state_dict(torch.load(filename + "_critic"))
            self.critic_optimizer.load_state_dict(torch.load(filename + "_critic_optimizer"))
            self.critic_target = copy.deepcopy(self.critic)
            self.actor.load_state_dict(torch.load(filename + "_actor"))
            self.actor_optimizer.load_state_dict(torch.load(filename + "_actor_optimizer"))
            self.actor_target = copy.deepcopy(self.actor)

    class ReplayBuffer(object):
        def __init__(self, state_dim, action_dim, max_size=int(1e6)):
            self.max_size = max_size
            self.ptr = 0
            self.size = 0
            self.state = np.zeros((max_size, state_dim))
            self.action = np.zeros((max_size, action_dim))
            self.next_state = np.zeros((max_size, state_dim))
            self.reward = np.zeros((max_size, 1))
            self.not_done = np.zeros((max_size, 1))
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

        def add(self, state, action, next_state, reward, done):
            self.state[self.ptr] = state
            self.action[self.ptr] = action
            self.next_state[self.ptr] = next_state
            self.reward[self.ptr] = reward
            self.not_done[self.ptr] = 1. - done
            self.ptr = (self.ptr + 1) % self.max_size
            self.size = min(self.size + 1, self.max_size)

        def sample(self, batch_size):
            ind = np.random.randint(0, self.size, size=batch_size)
            return (
                FloatTensor(self.state[ind]).to(self.device),
                FloatTensor(self.action[ind]).to(self.device),
                FloatTensor(self.next_state[ind]).to(self.device),
                FloatTensor(self.reward[ind]).to(self.device),
                FloatTensor(self.not_done[ind]).to(self.device)
            )

    return TD3, ReplayBuffer


def td3_networks(tensor_type_name=None):
    """A ``run_in_lockstep`` build: the TD3 policy (``.policy``) and its ReplayBuffer class (``.buffer``); its four
    networks are the model (their state_dicts: the targets start as deepcopies, so kiln's initial state loads into
    torch's twin whole)."""

    def build(torch, nn, F):
        tensor_type = getattr(torch, tensor_type_name) if tensor_type_name else None
        TD3, ReplayBuffer = td3_program(torch, nn, F, tensor_type)
        policy = TD3(OBS_DIM, ACT_DIM, float(HIGH[0]))
        nets = nn.ModuleDict(dict(actor=policy.actor, actor_target=policy.actor_target, critic=policy.critic,
                                  critic_target=policy.critic_target))
        nets.policy, nets.buffer = policy, ReplayBuffer
        return nets

    return build


def train_td3(tapes, compiled=False, max_timesteps=9, start_timesteps=5, expl_noise=0.1):
    """main.py's loop: random actions for ``start_timesteps``, then ``select_action`` plus
    ``np.random.normal(0, max_action * expl_noise)`` clipped, ``policy.train`` at every later step (``np.random.seed``
    fixes the exploration noise and the buffer's indices alike in both runs)."""

    def train(torch, nn, F, nets):
        policy, env = nets.policy, SyntheticContinuousEnv(seed=4)
        replay_buffer = nets.buffer(OBS_DIM, ACT_DIM, max_size=64)
        tape = tapes[torch] = NoiseTape(torch, {(BATCH, ACT_DIM): 1}, BATCH)
        if compiled and torch is kiln:  # the tape (a closure's object) rewound at each trace and call
            policy.update = kiln.compile(tape.rewinding(policy.update), fullgraph=True)
        np.random.seed(0)
        max_action = float(HIGH[0])
        probe_state, probe_action = (torch.tensor(np.random.default_rng(1).uniform(-1, 1, (3, n))).to(torch.get_default_dtype())
                                     for n in (OBS_DIM, ACT_DIM))
        record = {"actions": [], "q": {}, "grads": {}}
        state, _ = env.reset()
        for t in range(max_timesteps):
            if t < start_timesteps:
                action = env.sample_action()
            else:
                action = (
                    policy.select_action(np.array(state))
                    + np.random.normal(0, max_action * expl_noise, size=ACT_DIM)
                ).clip(-max_action, max_action)
            record["actions"].append(np.array(action, np.float64))
            next_state, reward, terminated, truncated, _ = env.step(action)
            replay_buffer.add(state, action, next_state, reward, float(terminated))
            state = next_state
            if t >= start_timesteps:
                tape.refill()
                policy.train(replay_buffer, BATCH)
                record["grads"][f"update {policy.total_it}"] = gradients(nets)
                with torch.no_grad():
                    record["q"][f"update {policy.total_it}"] = [array(q) for q in policy.critic(probe_state, probe_action)]
        record["state"], record["total_it"] = snapshot(nets), policy.total_it
        return record

    return train


def check_td3(noise_tapes, compiled, tensor_type_name, **tolerance):
    ours, theirs = run_in_lockstep(td3_networks(tensor_type_name), train_td3(noise_tapes, compiled))
    assert_same_records(ours, theirs, **tolerance)
    assert ours["total_it"] == theirs["total_it"] == 4
    assert [set(g) for g in theirs["grads"].values()][:2] == [
        {n for n in theirs["state"] if n.startswith("critic.")},  # the first update: the critic's step only
        {n for n in theirs["state"] if n.startswith(("critic.", "actor."))}]  # the second: the actor's too
    moved = theirs["state"]["actor_target.l1.weight"] - theirs["state"]["actor.l1.weight"]
    assert 0 < np.abs(moved).max(), "the targets trail"
    return ours, theirs


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled-update"])
def test_td3_trains_as_torch(noise_tapes, compiled, float64_default):
    check_td3(noise_tapes, compiled, "DoubleTensor")


def test_td3_float32_as_written_trains_as_torch(noise_tapes):
    """The reference as written: ``torch.FloatTensor`` minibatches, float32 networks, the compiled update."""
    ours, _ = check_td3(noise_tapes, True, None, rtol=2e-4, atol=2e-5)
    assert ours["state"]["critic.l1.weight"].dtype == np.float32


def test_td3_save_load_and_onnx_export_as_torch(noise_tapes, float64_default, tmp_path):
    """``policy.save(f"./models/{file_name}")`` after training, ``policy.load`` into a fresh TD3 (its targets deepcopies
    of the loaded networks, Adam's state restored): the same actions, and one more update agrees with torch's; kiln's
    policy loads torch's files too. The trained actor exported by ``kiln.onnx.export`` runs in onnxruntime as torch's."""
    onnxruntime = require("onnxruntime")
    for kiln_loads_torchs in (False, True):  # the second time, torch's files are there from the first
        ours, theirs = run_in_lockstep(td3_networks("DoubleTensor"),
                                       _saved_and_loaded(noise_tapes, tmp_path, kiln_loads_torchs))
        assert_same_records(ours, theirs)
    states = np.random.default_rng(3).standard_normal((4, OBS_DIM))
    exported = onnxruntime.InferenceSession(str(tmp_path / "actor.onnx")).run(None, {"state": states})[0]
    np.testing.assert_allclose(exported, theirs["actions"], rtol=1e-10, atol=1e-12)


def _saved_and_loaded(tapes, tmp_path, kiln_loads_torchs):
    """Train 3 updates, save; a fresh policy loads the library's own files (kiln's policy torch's files where
    ``kiln_loads_torchs``: kiln.load reads torch's archives; torch does not read kiln's .npz)."""

    def train(torch, nn, F, nets):
        record = train_td3(tapes, max_timesteps=8)(torch, nn, F, nets)
        policy = nets.policy
        policy.save(str(tmp_path / f"{torch.__name__}_TD3"))
        fresh = td3_networks("DoubleTensor")(torch, nn, F).policy
        fresh.load(str(tmp_path / f"{'torch' if kiln_loads_torchs else torch.__name__}_TD3"))
        states = np.random.default_rng(3).standard_normal((4, OBS_DIM))
        if torch is kiln:
            kiln.onnx.export(policy.actor, (torch.tensor(states[:1]),), str(tmp_path / "actor.onnx"),
                             input_names=["state"], dynamic_axes={"state": {0: "batch"}})
        with torch.no_grad():
            actions = array(fresh.actor(torch.tensor(states)))
        np.testing.assert_allclose(actions, array(policy.actor(torch.tensor(states)).detach()), rtol=1e-12)
        buffer = nets.buffer(OBS_DIM, ACT_DIM, max_size=16)
        for row in np.random.default_rng(5).standard_normal((10, 2 * OBS_DIM + ACT_DIM + 1)):
            buffer.add(row[:OBS_DIM], np.tanh(row[OBS_DIM:OBS_DIM + ACT_DIM]), row[-OBS_DIM - 1:-1], row[-1], 0.0)
        tapes[torch].refill()
        fresh.total_it = 1  # the next update steps the actor too
        fresh.train(buffer, BATCH)
        return {"loaded": {"actor": snapshot(fresh.actor), "critic": snapshot(fresh.critic)}, "actions": actions,
                "after": {"actor": snapshot(fresh.actor), "critic_target": snapshot(fresh.critic_target)},
                "trained": record["state"]}

    return train


# --- Dreamer(V2): jsikyoon/dreamer-torch's networks.py, tools.py and models.py --------------------------------------

OBS, EMBED, ACTIONS, STOCH, DISCRETE, DETER, UNITS, T_SEQ, B_SEQ, HORIZON = 5, 6, 3, 4, 3, 8, 8, 3, 2, 3


def dreamer_program(torch, nn, F):
    """A namespace of networks.py's ``RSSM``, ``GRUCell``, ``DenseHead`` and ``ActionHead`` (its 'onehot' head), tools.py's
    ``OneHotDist``, ``ContDist``, ``static_scan``, ``static_scan_for_lambda_return``, ``lambda_return``, ``Optimizer``
    and ``RequiresGrad``, and models.py's ``WorldModel`` and ``ImagBehavior``, as written (two-space indents made four;
    an MLP encoder of vector observations in place of the ConvEncoder, an 'obs' head in place of the ConvDecoder)."""
    torchd = torch.distributions

    # tools.py
    class RequiresGrad:
        def __init__(self, model):
            self._model = model

        def __enter__(self):
            self._model.requires_grad_(requires_grad=True)

        def __exit__(self, *args):
            self._model.requires_grad_(requires_grad=False)

    class OneHotDist(torchd.one_hot_categorical.OneHotCategorical):
        def __init__(self, logits=None, probs=None):
            super().__init__(logits=logits, probs=probs)

        def mode(self):
            _mode = F.one_hot(torch.argmax(super().logits, axis=-1), super().logits.shape[-1])
            return _mode.detach() + super().logits - super().logits.detach()

        def sample(self, sample_shape=(), seed=None):
            if seed is not None:
                raise ValueError('need to check')
            sample = super().sample(sample_shape)
            probs = super().probs
            while len(probs.shape) < len(sample.shape):
                probs = probs[None]
            sample += probs - probs.detach()
            return sample

    class ContDist:
        def __init__(self, dist=None):
            super().__init__()
            self._dist = dist
            self.mean = dist.mean

        def __getattr__(self, name):
            return getattr(self._dist, name)

        def entropy(self):
            return self._dist.entropy()

        def mode(self):
            return self._dist.mean

        def sample(self, sample_shape=()):
            return self._dist.rsample(sample_shape)

        def log_prob(self, x):
            return self._dist.log_prob(x)

    def static_scan(fn, inputs, start):
        last = start
        indices = range(inputs[0].shape[0])
        flag = True
        for index in indices:
            inp = lambda x: (_input[x] for _input in inputs)  # noqa: E731
            last = fn(last, *inp(index))
            if flag:
                if type(last) == type({}):  # noqa: E721
                    outputs = {key: value.clone().unsqueeze(0) for key, value in last.items()}
                else:
                    outputs = []
                    for _last in last:
                        if type(_last) == type({}):  # noqa: E721
                            outputs.append({key: value.clone().unsqueeze(0) for key, value in _last.items()})
                        else:
                            outputs.append(_last.clone().unsqueeze(0))
                flag = False
            else:
                if type(last) == type({}):  # noqa: E721
                    for key in last.keys():
                        outputs[key] = torch.cat([outputs[key], last[key].unsqueeze(0)], dim=0)
                else:
                    for j in range(len(outputs)):
                        if type(last[j]) == type({}):  # noqa: E721
                            for key in last[j].keys():
                                outputs[j][key] = torch.cat([outputs[j][key], last[j][key].unsqueeze(0)], dim=0)
                        else:
                            outputs[j] = torch.cat([outputs[j], last[j].unsqueeze(0)], dim=0)
        if type(last) == type({}):  # noqa: E721
            outputs = [outputs]
        return outputs

    def static_scan_for_lambda_return(fn, inputs, start):
        last = start
        indices = range(inputs[0].shape[0])
        indices = reversed(indices)
        flag = True
        for index in indices:
            inp = lambda x: (_input[x] for _input in inputs)  # noqa: E731
            last = fn(last, *inp(index))
            if flag:
                outputs = last
                flag = False
            else:
                outputs = torch.cat([outputs, last], dim=-1)
        outputs = torch.reshape(outputs, [outputs.shape[0], outputs.shape[1], 1])
        outputs = torch.unbind(outputs, dim=0)
        return outputs

    def lambda_return(reward, value, pcont, bootstrap, lambda_, axis):
        assert len(reward.shape) == len(value.shape), (reward.shape, value.shape)
        if isinstance(pcont, (int, float)):
            pcont = pcont * torch.ones_like(reward)
        dims = list(range(len(reward.shape)))
        dims = [axis] + dims[1:axis] + [0] + dims[axis + 1:]
        if axis != 0:
            reward = reward.permute(dims)
            value = value.permute(dims)
            pcont = pcont.permute(dims)
        if bootstrap is None:
            bootstrap = torch.zeros_like(value[-1])
        next_values = torch.cat([value[1:], bootstrap[None]], 0)
        inputs = reward + pcont * next_values * (1 - lambda_)
        returns = static_scan_for_lambda_return(
            lambda agg, cur0, cur1: cur0 + cur1 * lambda_ * agg,
            (inputs, pcont), bootstrap)
        if axis != 0:
            returns = returns.permute(dims)
        return returns

    class Optimizer():
        def __init__(self, name, parameters, lr, eps=1e-4, clip=None, wd=None, wd_pattern=r'.*', opt='adam',
                     use_amp=False):
            assert 0 <= wd < 1
            assert not clip or 1 <= clip
            self._name = name
            self._parameters = parameters
            self._clip = clip
            self._wd = wd
            self._wd_pattern = wd_pattern
            self._opt = {
                'adam': lambda: torch.optim.Adam(parameters, lr=lr, eps=eps),
                'sgd': lambda: torch.optim.SGD(parameters, lr=lr),
            }[opt]()
            self._scaler = torch.cuda.amp.GradScaler(enabled=use_amp)

        def __call__(self, loss, params, retain_graph=False):
            assert len(loss.shape) == 0, loss.shape
            metrics = {}
            metrics[f'{self._name}_loss'] = loss.detach().cpu().numpy()
            self._scaler.scale(loss).backward()
            self._scaler.unscale_(self._opt)
            norm = torch.nn.utils.clip_grad_norm_(params, self._clip)
            self._scaler.step(self._opt)
            self._scaler.update()
            self._opt.zero_grad()
            metrics[f'{self._name}_grad_norm'] = norm.item()
            return metrics

    # networks.py
    class GRUCell(nn.Module):
        def __init__(self, inp_size, size, norm=False, act=torch.tanh, update_bias=-1):
            super(GRUCell, self).__init__()
            self._inp_size = inp_size
            self._size = size
            self._act = act
            self._norm = norm
            self._update_bias = update_bias
            self._layer = nn.Linear(inp_size + size, 3 * size, bias=norm is not None)
            if norm:
                self._norm = nn.LayerNorm(3 * size)

        @property
        def state_size(self):
            return self._size

        def forward(self, inputs, state):
            state = state[0]  # Keras wraps the state in a list.
            parts = self._layer(torch.cat([inputs, state], -1))
            if self._norm:
                parts = self._norm(parts)
            reset, cand, update = torch.split(parts, [self._size] * 3, -1)
            reset = torch.sigmoid(reset)
            cand = self._act(reset * cand)
            update = torch.sigmoid(update + self._update_bias)
            output = update * cand + (1 - update) * state
            return output, [output]

    class RSSM(nn.Module):
        def __init__(self, stoch=30, deter=200, hidden=200, layers_input=1, layers_output=1, rec_depth=1,
                     shared=False, discrete=False, act=nn.ELU, mean_act='none', std_act='softplus', temp_post=True,
                     min_std=0.1, cell='gru', num_actions=None, embed=None, device=None):
            super(RSSM, self).__init__()
            self._stoch = stoch
            self._deter = deter
            self._hidden = hidden
            self._min_std = min_std
            self._layers_input = layers_input
            self._layers_output = layers_output
            self._rec_depth = rec_depth
            self._shared = shared
            self._discrete = discrete
            self._act = act
            self._mean_act = mean_act
            self._std_act = std_act
            self._temp_post = temp_post
            self._embed = embed
            self._device = device
            inp_layers = []
            if self._discrete:
                inp_dim = self._stoch * self._discrete + num_actions
            else:
                inp_dim = self._stoch + num_actions
            for i in range(self._layers_input):
                inp_layers.append(nn.Linear(inp_dim, self._hidden))
                inp_layers.append(self._act())
                if i == 0:
                    inp_dim = self._hidden
            self._inp_layers = nn.Sequential(*inp_layers)
            if cell == 'gru':
                self._cell = nn.GRUCell(self._hidden, self._deter)
            elif cell == 'gru_layer_norm':
                self._cell = GRUCell(self._hidden, self._deter, norm=True)
            else:
                raise NotImplementedError(cell)
            img_out_layers = []
            inp_dim = self._deter
            for i in range(self._layers_output):
                img_out_layers.append(nn.Linear(inp_dim, self._hidden))
                img_out_layers.append(self._act())
                if i == 0:
                    inp_dim = self._hidden
            self._img_out_layers = nn.Sequential(*img_out_layers)
            obs_out_layers = []
            inp_dim = self._deter + self._embed if self._temp_post else self._embed
            for i in range(self._layers_output):
                obs_out_layers.append(nn.Linear(inp_dim, self._hidden))
                obs_out_layers.append(self._act())
                if i == 0:
                    inp_dim = self._hidden
            self._obs_out_layers = nn.Sequential(*obs_out_layers)
            if self._discrete:
                self._ims_stat_layer = nn.Linear(self._hidden, self._stoch * self._discrete)
                self._obs_stat_layer = nn.Linear(self._hidden, self._stoch * self._discrete)
            else:
                self._ims_stat_layer = nn.Linear(self._hidden, 2 * self._stoch)
                self._obs_stat_layer = nn.Linear(self._hidden, 2 * self._stoch)

        def initial(self, batch_size):
            deter = torch.zeros(batch_size, self._deter).to(self._device)
            if self._discrete:
                state = dict(
                    logit=torch.zeros([batch_size, self._stoch, self._discrete]).to(self._device),
                    stoch=torch.zeros([batch_size, self._stoch, self._discrete]).to(self._device),
                    deter=deter)
            else:
                state = dict(
                    mean=torch.zeros([batch_size, self._stoch]).to(self._device),
                    std=torch.zeros([batch_size, self._stoch]).to(self._device),
                    stoch=torch.zeros([batch_size, self._stoch]).to(self._device),
                    deter=deter)
            return state

        def observe(self, embed, action, state=None):
            swap = lambda x: x.permute([1, 0] + list(range(2, len(x.shape))))  # noqa: E731
            if state is None:
                state = self.initial(action.shape[0])
            embed, action = swap(embed), swap(action)
            post, prior = static_scan(
                lambda prev_state, prev_act, embed: self.obs_step(prev_state[0], prev_act, embed),
                (action, embed), (state, state))
            post = {k: swap(v) for k, v in post.items()}
            prior = {k: swap(v) for k, v in prior.items()}
            return post, prior

        def imagine(self, action, state=None):
            swap = lambda x: x.permute([1, 0] + list(range(2, len(x.shape))))  # noqa: E731
            if state is None:
                state = self.initial(action.shape[0])
            assert isinstance(state, dict), state
            action = swap(action)
            prior = static_scan(self.img_step, [action], state)
            prior = prior[0]
            prior = {k: swap(v) for k, v in prior.items()}
            return prior

        def get_feat(self, state):
            stoch = state['stoch']
            if self._discrete:
                shape = list(stoch.shape[:-2]) + [self._stoch * self._discrete]
                stoch = stoch.reshape(shape)
            return torch.cat([stoch, state['deter']], -1)

        def get_dist(self, state, dtype=None):
            if self._discrete:
                logit = state['logit']
                dist = torchd.independent.Independent(OneHotDist(logit), 1)
            else:
                mean, std = state['mean'], state['std']
                dist = ContDist(torchd.independent.Independent(torchd.normal.Normal(mean, std), 1))
            return dist

        def obs_step(self, prev_state, prev_action, embed, sample=True):
            prior = self.img_step(prev_state, prev_action, None, sample)
            if self._temp_post:
                x = torch.cat([prior['deter'], embed], -1)
            else:
                x = embed
            x = self._obs_out_layers(x)
            stats = self._suff_stats_layer('obs', x)
            if sample:
                stoch = self.get_dist(stats).sample()
            else:
                stoch = self.get_dist(stats).mode()
            post = {'stoch': stoch, 'deter': prior['deter'], **stats}
            return post, prior

        def img_step(self, prev_state, prev_action, embed=None, sample=True):
            prev_stoch = prev_state['stoch']
            if self._discrete:
                shape = list(prev_stoch.shape[:-2]) + [self._stoch * self._discrete]
                prev_stoch = prev_stoch.reshape(shape)
            x = torch.cat([prev_stoch, prev_action], -1)
            x = self._inp_layers(x)
            for _ in range(self._rec_depth):  # rec depth is not correctly implemented
                deter = prev_state['deter']
                x, deter = self._cell(x, [deter])
                deter = deter[0]  # Keras wraps the state in a list.
            x = self._img_out_layers(x)
            stats = self._suff_stats_layer('ims', x)
            if sample:
                stoch = self.get_dist(stats).sample()
            else:
                stoch = self.get_dist(stats).mode()
            prior = {'stoch': stoch, 'deter': deter, **stats}
            return prior

        def _suff_stats_layer(self, name, x):
            if self._discrete:
                if name == 'ims':
                    x = self._ims_stat_layer(x)
                elif name == 'obs':
                    x = self._obs_stat_layer(x)
                else:
                    raise NotImplementedError
                logit = x.reshape(list(x.shape[:-1]) + [self._stoch, self._discrete])
                return {'logit': logit}
            else:
                if name == 'ims':
                    x = self._ims_stat_layer(x)
                elif name == 'obs':
                    x = self._obs_stat_layer(x)
                else:
                    raise NotImplementedError
                mean, std = torch.split(x, [self._stoch] * 2, -1)
                mean = {
                    'none': lambda: mean,
                    'tanh5': lambda: 5.0 * torch.tanh(mean / 5.0),
                }[self._mean_act]()
                std = {
                    'abs': lambda: torch.abs(std + 1),
                    'sigmoid': lambda: torch.sigmoid(std),
                    'sigmoid2': lambda: 2 * torch.sigmoid(std / 2),
                }[self._std_act]()
                std = std + self._min_std
                return {'mean': mean, 'std': std}

        def kl_loss(self, post, prior, forward, balance, free, scale):
            kld = torchd.kl.kl_divergence
            dist = lambda x: self.get_dist(x)  # noqa: E731
            sg = lambda x: {k: v.detach() for k, v in x.items()}  # noqa: E731
            lhs, rhs = (prior, post) if forward else (post, prior)
            mix = balance if forward else (1 - balance)
            if balance == 0.5:
                value = kld(dist(lhs) if self._discrete else dist(lhs)._dist,
                            dist(rhs) if self._discrete else dist(rhs)._dist)
                loss = torch.mean(torch.maximum(value, free))
            else:
                value_lhs = value = kld(dist(lhs) if self._discrete else dist(lhs)._dist,
                                        dist(sg(rhs)) if self._discrete else dist(sg(rhs))._dist)
                value_rhs = kld(dist(sg(lhs)) if self._discrete else dist(sg(lhs))._dist,
                                dist(rhs) if self._discrete else dist(rhs)._dist)
                loss_lhs = torch.maximum(torch.mean(value_lhs), torch.Tensor([free])[0])
                loss_rhs = torch.maximum(torch.mean(value_rhs), torch.Tensor([free])[0])
                loss = mix * loss_lhs + (1 - mix) * loss_rhs
            loss *= scale
            return loss, value

    class DenseHead(nn.Module):
        def __init__(self, inp_dim, shape, layers, units, act=nn.ELU, dist='normal', std=1.0):
            super(DenseHead, self).__init__()
            self._shape = (shape,) if isinstance(shape, int) else shape
            if len(self._shape) == 0:
                self._shape = (1,)
            self._layers = layers
            self._units = units
            self._act = act
            self._dist = dist
            self._std = std
            mean_layers = []
            for index in range(self._layers):
                mean_layers.append(nn.Linear(inp_dim, self._units))
                mean_layers.append(act())
                if index == 0:
                    inp_dim = self._units
            mean_layers.append(nn.Linear(inp_dim, np.prod(self._shape)))
            self._mean_layers = nn.Sequential(*mean_layers)

        def __call__(self, features, dtype=None):
            x = features
            mean = self._mean_layers(x)
            std = self._std
            if self._dist == 'normal':
                return ContDist(torchd.independent.Independent(torchd.normal.Normal(mean, std), len(self._shape)))
            raise NotImplementedError(self._dist)

    class ActionHead(nn.Module):
        def __init__(self, inp_dim, size, layers, units, act=nn.ELU, dist='trunc_normal', init_std=0.0, min_std=0.1,
                     action_disc=5, temp=0.1, outscale=0):
            super(ActionHead, self).__init__()
            self._size = size
            self._layers = layers
            self._units = units
            self._dist = dist
            self._act = act
            self._min_std = min_std
            self._init_std = init_std
            self._action_disc = action_disc
            self._temp = temp() if callable(temp) else temp
            self._outscale = outscale
            pre_layers = []
            for index in range(self._layers):
                pre_layers.append(nn.Linear(inp_dim, self._units))
                pre_layers.append(act())
                if index == 0:
                    inp_dim = self._units
            self._pre_layers = nn.Sequential(*pre_layers)
            if self._dist in ['normal_1', 'onehot', 'onehot_gumbel']:
                self._dist_layer = nn.Linear(self._units, self._size)

        def __call__(self, features, dtype=None):
            x = features
            x = self._pre_layers(x)
            if self._dist == 'onehot':
                x = self._dist_layer(x)
                dist = OneHotDist(x)
            else:
                raise NotImplementedError(self._dist)
            return dist

    # models.py
    class WorldModel(nn.Module):
        def __init__(self, step, config):
            super(WorldModel, self).__init__()
            self._step = step
            self._use_amp = True if config.precision == 16 else False
            self._config = config
            self.encoder = nn.Sequential(nn.Linear(OBS, EMBED), config.act())  # vector observations
            embed_size = EMBED
            self.dynamics = RSSM(
                config.dyn_stoch, config.dyn_deter, config.dyn_hidden, config.dyn_input_layers,
                config.dyn_output_layers, config.dyn_rec_depth, config.dyn_shared, config.dyn_discrete, config.act,
                config.dyn_mean_act, config.dyn_std_act, config.dyn_temp_post, config.dyn_min_std, config.dyn_cell,
                config.num_actions, embed_size, config.device)
            self.heads = nn.ModuleDict()
            if config.dyn_discrete:
                feat_size = config.dyn_stoch * config.dyn_discrete + config.dyn_deter
            else:
                feat_size = config.dyn_stoch + config.dyn_deter
            self.heads['obs'] = DenseHead(feat_size, (OBS,), config.reward_layers, config.units, config.act)
            self.heads['reward'] = DenseHead(feat_size, [], config.reward_layers, config.units, config.act)
            for name in config.grad_heads:
                assert name in self.heads, name
            self._model_opt = Optimizer(
                'model', self.parameters(), config.model_lr, config.opt_eps, config.grad_clip, config.weight_decay,
                opt=config.opt, use_amp=self._use_amp)
            self._scales = dict(reward=config.reward_scale, discount=config.discount_scale)

        def _losses(self, data):
            """The start of the reference's ``_train`` (under ``RequiresGrad``), to the model loss."""
            embed = self.encoder(data['obs'])
            post, prior = self.dynamics.observe(embed, data['action'])
            kl_loss, kl_value = self.dynamics.kl_loss(
                post, prior, self._config.kl_forward, self._config.kl_balance, self._config.kl_free,
                self._config.kl_scale)
            losses = {}
            likes = {}
            for name, head in self.heads.items():
                grad_head = (name in self._config.grad_heads)
                feat = self.dynamics.get_feat(post)
                feat = feat if grad_head else feat.detach()
                pred = head(feat)
                like = pred.log_prob(data[name])
                likes[name] = like
                losses[name] = -torch.mean(like) * self._scales.get(name, 1.0)
            model_loss = sum(losses.values()) + kl_loss
            return model_loss, post, prior, kl_value, losses

        def _train(self, data):
            data = self.preprocess(data)
            with RequiresGrad(self):
                with torch.cuda.amp.autocast(self._use_amp):
                    model_loss, post, prior, kl_value, losses = self._losses(data)
                metrics = self._model_opt(model_loss, self.parameters())
            metrics.update({f'{name}_loss': loss.detach().cpu().numpy() for name, loss in losses.items()})
            metrics['kl'] = torch.mean(kl_value).detach().cpu().numpy()
            metrics['prior_ent'] = torch.mean(self.dynamics.get_dist(prior).entropy()).detach().cpu().numpy()
            metrics['post_ent'] = torch.mean(self.dynamics.get_dist(post).entropy()).detach().cpu().numpy()
            post = {k: v.detach() for k, v in post.items()}
            return post, metrics

        def preprocess(self, obs):
            obs = obs.copy()
            obs['reward'] = torch.Tensor(obs['reward']).unsqueeze(-1)  # clip_rewards 'identity'
            obs = {k: torch.Tensor(v).to(self._config.device) for k, v in obs.items()}
            return obs

    class ImagBehavior(nn.Module):
        def __init__(self, config, world_model, stop_grad_actor=True, reward=None):
            super(ImagBehavior, self).__init__()
            self._use_amp = True if config.precision == 16 else False
            self._config = config
            self._world_model = world_model
            self._stop_grad_actor = stop_grad_actor
            self._reward = reward
            if config.dyn_discrete:
                feat_size = config.dyn_stoch * config.dyn_discrete + config.dyn_deter
            else:
                feat_size = config.dyn_stoch + config.dyn_deter
            self.actor = ActionHead(
                feat_size, config.num_actions, config.actor_layers, config.units, config.act, config.actor_dist,
                config.actor_init_std, config.actor_min_std, config.actor_dist, config.actor_temp,
                config.actor_outscale)
            self.value = DenseHead(feat_size, [], config.value_layers, config.units, config.act, config.value_head)
            if config.slow_value_target or config.slow_actor_target:
                self._slow_value = DenseHead(feat_size, [], config.value_layers, config.units, config.act)
                self._updates = 0
            kw = dict(wd=config.weight_decay, opt=config.opt, use_amp=self._use_amp)
            self._actor_opt = Optimizer(
                'actor', self.actor.parameters(), config.actor_lr, config.opt_eps, config.actor_grad_clip, **kw)
            self._value_opt = Optimizer(
                'value', self.value.parameters(), config.value_lr, config.opt_eps, config.value_grad_clip, **kw)

        def _train(self, start, objective=None, action=None, reward=None, imagine=None, tape=None, repeats=None):
            config = self._config
            objective = objective or self._reward
            self._update_slow_target()
            metrics = {}
            with RequiresGrad(self.actor):
                with torch.cuda.amp.autocast(self._use_amp):
                    imag_feat, imag_state, imag_action = self._imagine(
                        start, self.actor, self._config.imag_horizon, repeats)
                    reward = objective(imag_feat, imag_state, imag_action)
                    actor_ent = self.actor(imag_feat).entropy()
                    state_ent = self._world_model.dynamics.get_dist(imag_state).entropy()
                    target, weights = self._compute_target(
                        imag_feat, imag_state, imag_action, reward, actor_ent, state_ent,
                        self._config.slow_actor_target)
                    actor_loss, mets = self._compute_actor_loss(
                        imag_feat, imag_state, imag_action, target, actor_ent, state_ent, weights)
                    metrics.update(mets)
                    value_input = imag_feat
                if config.step_while_unfrozen:
                    metrics.update(self._actor_opt(actor_loss, self.actor.parameters()))
            with RequiresGrad(self.value):
                with torch.cuda.amp.autocast(self._use_amp):
                    value = self.value(value_input[:-1].detach())
                    target = torch.stack(target, dim=1)
                    value_loss = -value.log_prob(target.detach())
                    value_loss = torch.mean(weights[:-1] * value_loss[:, :, None])
                if config.step_while_unfrozen:
                    metrics.update(self._value_opt(value_loss, self.value.parameters()))
            metrics['reward_mean'] = torch.mean(reward).detach().cpu().numpy()
            metrics['reward_std'] = torch.std(reward).detach().cpu().numpy()
            metrics['actor_ent'] = torch.mean(actor_ent).detach().cpu().numpy()
            metrics['target'] = target.detach().cpu().numpy()
            if not config.step_while_unfrozen:  # as written: the actor and value are frozen again by now
                metrics.update(self._actor_opt(actor_loss, self.actor.parameters()))
                metrics.update(self._value_opt(value_loss, self.value.parameters()))
            return imag_feat, imag_state, imag_action, weights, metrics

        def _imagine(self, start, policy, horizon, repeats=None):
            dynamics = self._world_model.dynamics
            flatten = lambda x: x.reshape([-1] + list(x.shape[2:]))  # noqa: E731
            start = {k: flatten(v) for k, v in start.items()}

            def step(prev, _):
                state, _, _ = prev
                feat = dynamics.get_feat(state)
                inp = feat.detach() if self._stop_grad_actor else feat
                action = policy(inp).sample()
                succ = dynamics.img_step(state, action, sample=self._config.imag_sample)
                return succ, feat, action

            feat = 0 * dynamics.get_feat(start)
            action = policy(feat).mode()
            succ, feats, actions = static_scan(step, [torch.arange(horizon)], (start, feat, action))
            states = {k: torch.cat([start[k][None], v[:-1]], 0) for k, v in succ.items()}
            return feats, states, actions

        def _compute_target(self, imag_feat, imag_state, imag_action, reward, actor_ent, state_ent, slow):
            discount = self._config.discount * torch.ones_like(reward)
            if slow:
                value = self._slow_value(imag_feat).mode()
            else:
                value = self.value(imag_feat).mode()
            target = lambda_return(
                reward[:-1], value[:-1], discount[:-1], bootstrap=value[-1], lambda_=self._config.discount_lambda,
                axis=0)
            weights = torch.cumprod(torch.cat([torch.ones_like(discount[:1]), discount[:-1]], 0), 0).detach()
            return target, weights

        def _compute_actor_loss(self, imag_feat, imag_state, imag_action, target, actor_ent, state_ent, weights):
            metrics = {}
            inp = imag_feat.detach() if self._stop_grad_actor else imag_feat
            policy = self.actor(inp)
            actor_ent = policy.entropy()
            target = torch.stack(target, dim=1)
            if self._config.imag_gradient == 'dynamics':
                actor_target = target
            elif self._config.imag_gradient == 'both':
                actor_target = policy.log_prob(imag_action)[:-1][:, :, None] * (
                    target - self.value(imag_feat[:-1]).mode()).detach()
                mix = self._config.imag_gradient_mix()
                actor_target = mix * target + (1 - mix) * actor_target
                metrics['imag_gradient_mix'] = mix
            else:
                raise NotImplementedError(self._config.imag_gradient)
            if self._config.actor_entropy() > 0:
                actor_target += self._config.actor_entropy() * actor_ent[:-1][:, :, None]
            actor_loss = -torch.mean(weights[:-1] * actor_target)
            return actor_loss, metrics

        def _update_slow_target(self):
            if self._config.slow_value_target or self._config.slow_actor_target:
                if self._updates % self._config.slow_target_update == 0:
                    mix = self._config.slow_target_fraction
                    for s, d in zip(self.value.parameters(), self._slow_value.parameters()):
                        d.data = mix * s.data + (1 - mix) * d.data
                self._updates += 1

    return dict(WorldModel=WorldModel, ImagBehavior=ImagBehavior, RequiresGrad=RequiresGrad)


def dreamer_config(nn, discrete, cell, step_while_unfrozen=False):
    """configs.yaml's dreamerv2 entries that the probe reads, tiny (schedules as their constant values)."""
    return SimpleNamespace(
        precision=32, device="cpu", act=nn.ELU, dyn_stoch=STOCH, dyn_deter=DETER, dyn_hidden=UNITS,
        dyn_input_layers=1, dyn_output_layers=1, dyn_rec_depth=1, dyn_shared=False,
        dyn_discrete=DISCRETE if discrete else 0, dyn_mean_act="none", dyn_std_act="sigmoid2", dyn_temp_post=True,
        dyn_min_std=0.1, dyn_cell=cell, num_actions=ACTIONS, units=UNITS, reward_layers=1, grad_heads=("obs", "reward"),
        model_lr=3e-3, opt_eps=1e-5, grad_clip=100, weight_decay=0.0, opt="adam", reward_scale=1.0,
        discount_scale=1.0, kl_forward=False, kl_balance=0.8, kl_free=0.02, kl_scale=1.0, actor_layers=1,
        actor_dist="onehot", actor_init_std=1.0, actor_min_std=0.1, actor_temp=0.1, actor_outscale=0.0,
        value_layers=1, value_head="normal", slow_value_target=True, slow_actor_target=True, slow_target_update=1,
        slow_target_fraction=0.5, actor_lr=3e-3, value_lr=3e-3, actor_grad_clip=100, value_grad_clip=100,
        imag_horizon=HORIZON, imag_sample=True, discount=0.99, discount_lambda=0.95, imag_gradient="both",
        imag_gradient_mix=lambda: 0.5, actor_entropy=lambda: 3e-3, step_while_unfrozen=step_while_unfrozen)


def dreamer_agent(discrete=True, cell="gru_layer_norm", step_while_unfrozen=False):
    """A ``run_in_lockstep`` build: ``ImagBehavior`` over a ``WorldModel`` (its ``_world_model`` submodule)."""

    def build(torch, nn, F):
        program = dreamer_program(torch, nn, F)
        config = dreamer_config(nn, discrete, cell, step_while_unfrozen)
        world_model = program["WorldModel"](0, config)
        behavior = program["ImagBehavior"](config, world_model)
        behavior.program = program
        return behavior

    return build


def dreamer_tapes(monkeypatch, torch):
    """``tapes[lib]``: both libraries' ``OneHotCategorical.sample`` (Gumbel-max-like: ``argmax(logits + noise)``) and
    ``Normal``'s standard-normal draw read their noise from the tape set there; the one-hot conversion, the
    straight-through estimator and ``rsample``'s arithmetic are each library's."""
    from kiln.frontend.distributions import Distribution

    tapes = {}

    def one_hot_sample(lib):
        def sample(self, sample_shape=()):
            logits = self.logits.detach()
            drawn = (logits + tapes[lib].draw(logits.shape)).argmax(-1)
            return lib.nn.functional.one_hot(drawn, logits.shape[-1]).to(logits.dtype)

        return sample

    monkeypatch.setattr(torch.distributions.OneHotCategorical, "sample", one_hot_sample(torch))
    monkeypatch.setattr(kiln.distributions.OneHotCategorical, "sample", one_hot_sample(kiln))
    monkeypatch.setattr(torch.distributions.normal, "_standard_normal",
                        lambda shape, dtype=None, device=None: tapes[torch].draw(shape))
    monkeypatch.setattr(Distribution, "_standard_normal", lambda self, shape: tapes[kiln].draw(shape))
    return tapes


def dreamer_data(steps, dtype=np.float64):
    rng = np.random.default_rng(2)
    return [dict(obs=rng.standard_normal((B_SEQ, T_SEQ, OBS)).astype(dtype),
                 action=np.eye(ACTIONS, dtype=dtype)[rng.integers(0, ACTIONS, (B_SEQ, T_SEQ))],
                 reward=rng.standard_normal((B_SEQ, T_SEQ)).astype(dtype)) for _ in range(steps)]


def dreamer_noise_slots(discrete):
    flat = B_SEQ * T_SEQ
    if discrete:
        return {(B_SEQ, STOCH, DISCRETE): 2 * T_SEQ, (flat, STOCH, DISCRETE): HORIZON, (flat, ACTIONS): HORIZON}
    return {(B_SEQ, STOCH): 2 * T_SEQ, (flat, STOCH): HORIZON, (flat, ACTIONS): HORIZON}


def train_dreamer(tapes, discrete, steps=2):
    """dreamer.py's ``_train``: ``post, context, mets = self._wm._train(data)``, then the behavior trained in
    imagination from the posteriors (``reward = lambda f, s, a: self._wm.heads['reward'](f).mode()``)."""

    def train(torch, nn, F, behavior):
        world_model = behavior._world_model
        tape = tapes[torch] = NoiseTape(torch, dreamer_noise_slots(discrete), B_SEQ)
        record = {"metrics": {}}
        for step, data in enumerate(dreamer_data(steps)):
            tape.refill()
            post, metrics = world_model._train(data)
            reward = lambda f, s, a: world_model.heads['reward'](f).mode()  # noqa: E731
            tape.refill()
            imag_feat, imag_state, imag_action, weights, behavior_metrics = behavior._train(post, reward)
            metrics.update(behavior_metrics)
            record["metrics"][f"step {step}"] = metrics
            record.setdefault("post", {k: array(v) for k, v in post.items()})
            record.setdefault("imagined", {"feat": array(imag_feat), "action": array(imag_action),
                                           "weights": array(weights)})
            record.setdefault("slow value grads", gradients(behavior._slow_value))
        record["state"] = snapshot(behavior)
        record["requires_grad"] = [p.requires_grad for p in behavior.parameters()]
        return record

    return train


@pytest.mark.parametrize("discrete, cell, step_while_unfrozen", [
    (True, "gru_layer_norm", False), (True, "gru_layer_norm", True)],
    ids=["as written", "behavior stepped while unfrozen"])  # Gaussian latents: test_dreamerv3_free_nats_kl_...
def test_dreamer_world_model_and_imagined_behavior_train_as_torch(monkeypatch, discrete, cell, step_while_unfrozen,
                                                                  float64_default):
    """As written, ``ImagBehavior._train`` calls its optimizers after ``RequiresGrad`` froze the actor and the value
    again: torch's backward then accumulates nothing into them (grad norms 0, they never train), and so does kiln's;
    ``step_while_unfrozen`` moves each optimizer call into its ``with`` block, and they train."""
    tapes = dreamer_tapes(monkeypatch, float64_default)
    agent = dreamer_agent(discrete, cell, step_while_unfrozen)
    ours, theirs = run_in_lockstep(agent, train_dreamer(tapes, discrete))
    assert_same_records(ours, theirs)
    assert ours["requires_grad"] == theirs["requires_grad"]
    assert theirs["imagined"]["feat"].shape == (HORIZON, B_SEQ * T_SEQ, STOCH * (DISCRETE if discrete else 1) + DETER)
    assert theirs["metrics"]["step 1"]["kl"] > 0 and theirs["slow value grads"]
    assert theirs["metrics"]["step 1"]["model_grad_norm"] > 0
    assert (theirs["metrics"]["step 1"]["actor_grad_norm"] > 0) == step_while_unfrozen


def train_world_model_compiled(tapes, discrete, steps=2):
    """The world model's step (``WorldModel._train`` without its NumPy metrics: under ``RequiresGrad``, the model loss,
    ``zero_grad``, ``backward``, ``clip_grad_norm_``, Adam) one ``kiln.compile(fullgraph=True, dynamic=False)`` graph in
    kiln, torch's eager loop in torch."""

    def train(torch, nn, F, behavior):
        world_model, RequiresGrad = behavior._world_model, behavior.program["RequiresGrad"]
        optimizer, clip = world_model._model_opt._opt, world_model._config.grad_clip
        tape = tapes[torch] = NoiseTape(torch, dreamer_noise_slots(discrete), B_SEQ)

        def step(obs, action, reward):
            with RequiresGrad(world_model):
                model_loss, post, prior, kl_value, losses = world_model._losses(
                    dict(obs=obs, action=action, reward=reward))
                optimizer.zero_grad()
                model_loss.backward()
                torch.nn.utils.clip_grad_norm_(world_model.parameters(), clip)
                optimizer.step()
            return model_loss, torch.mean(kl_value), post['stoch']

        step = tape.rewinding(step)
        run = kiln.compile(step, fullgraph=True, dynamic=False) if torch is kiln else step
        record = {"losses": [], "kl": [], "stoch": []}
        for data in dreamer_data(steps):
            tape.refill()
            batch = world_model.preprocess(data)
            loss, kl, stoch = run(batch["obs"], batch["action"], batch["reward"])
            record["losses"].append(loss.item())
            record["kl"].append(kl.item())
            record["stoch"].append(array(stoch))
        record["state"] = snapshot(world_model)
        return record

    return train


def test_dreamer_world_model_compiled_step_as_torch(monkeypatch, float64_default):
    """Discrete latents (the straight-through ``OneHotDist`` samples and the balanced KL of ``OneHotCategorical``s in
    the graph)."""
    tapes = dreamer_tapes(monkeypatch, float64_default)
    ours, theirs = run_in_lockstep(dreamer_agent(True), train_world_model_compiled(tapes, True))
    assert_same_records(ours, theirs)
    assert len(set(theirs["losses"])) == 2


def test_dreamer_rssm_with_cell_gru_is_refused_in_both():
    """``cell='gru'`` gives ``nn.GRUCell``, which ``img_step`` calls Keras-style, ``self._cell(x, [deter])``: torch fails
    (AttributeError: a list has no ``dim``), kiln says what (``hx must be one tensor``); the port works only with its
    own ``GRUCell`` ('gru_layer_norm', DreamerV2's default)."""
    errors = []
    for name in ("kiln", "torch"):
        torch, nn, F = libraries(name)
        rssm = dreamer_agent(False, "gru")(torch, nn, F)._world_model.dynamics
        with pytest.raises((AttributeError, RuntimeError)) as raised:
            rssm.img_step(rssm.initial(B_SEQ), torch.zeros(B_SEQ, ACTIONS), sample=False)
        errors.append(str(raised.value))
    assert "hx must be one tensor" in errors[0] and "dim" in errors[1], errors


# --- Decision Transformer: kzl/decision-transformer's decision_transformer.py, trajectory_gpt2.py, seq_trainer.py ---

DT_STATE, DT_ACT, DT_HIDDEN, DT_HEADS, DT_K, DT_EP_LEN, DT_BATCH, DT_WARMUP = 3, 2, 8, 2, 4, 20, 3, 3


def decision_transformer(torch, nn, F, dtype=None):
    """``DecisionTransformer`` as decision_transformer.py writes it, over trajectory_gpt2.py's GPT-2 written out (no
    positional embeddings, as there; HF's ``Conv1D``, the ``tril`` ``bias`` buffer with ``masked_bias``, the
    ``(1.0 - attention_mask) * -10000.0`` extended mask, ``gelu_new``, HF's ``_init_weights``). ``dtype`` None is
    ``get_action``'s ``torch.float32`` casts as written."""
    dtype = dtype or torch.float32

    class Conv1D(nn.Module):
        def __init__(self, nf, nx):
            super().__init__()
            self.nf = nf
            w = torch.empty(nx, nf)
            nn.init.normal_(w, std=0.02)
            self.weight = nn.Parameter(w)
            self.bias = nn.Parameter(torch.zeros(nf))

        def forward(self, x):
            size_out = x.size()[:-1] + (self.nf,)
            x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
            x = x.view(*size_out)
            return x

    def gelu_new(x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))

    class Attention(nn.Module):
        def __init__(self, nx, n_ctx, config, scale=False):
            super().__init__()
            n_state = nx
            assert n_state % config.n_head == 0
            self.register_buffer(
                "bias", torch.tril(torch.ones((n_ctx, n_ctx), dtype=torch.uint8)).view(1, 1, n_ctx, n_ctx))
            self.register_buffer("masked_bias", torch.tensor(-1e4))
            self.n_head = config.n_head
            self.split_size = n_state
            self.scale = scale
            self.c_attn = Conv1D(3 * n_state, nx)
            self.c_proj = Conv1D(n_state, nx)
            self.attn_dropout = nn.Dropout(config.attn_pdrop)
            self.resid_dropout = nn.Dropout(config.resid_pdrop)

        def _attn(self, q, k, v, attention_mask=None):
            w = torch.matmul(q, k)
            if self.scale:
                w = w / (float(v.size(-1)) ** 0.5)
            nd, ns = w.size(-2), w.size(-1)
            mask = self.bias[:, :, ns - nd: ns, :ns]
            w = torch.where(mask.bool(), w, self.masked_bias.to(w.dtype))
            if attention_mask is not None:
                w = w + attention_mask
            w = nn.Softmax(dim=-1)(w)
            w = self.attn_dropout(w)
            return torch.matmul(w, v)

        def merge_heads(self, x):
            x = x.permute(0, 2, 1, 3).contiguous()
            new_x_shape = x.size()[:-2] + (x.size(-2) * x.size(-1),)
            return x.view(*new_x_shape)

        def split_heads(self, x, k=False):
            new_x_shape = x.size()[:-1] + (self.n_head, x.size(-1) // self.n_head)
            x = x.view(*new_x_shape)
            if k:
                return x.permute(0, 2, 3, 1)  # (batch, head, head_features, seq_length)
            else:
                return x.permute(0, 2, 1, 3)  # (batch, head, seq_length, head_features)

        def forward(self, hidden_states, attention_mask=None):
            query, key, value = self.c_attn(hidden_states).split(self.split_size, dim=2)
            query = self.split_heads(query)
            key = self.split_heads(key, k=True)
            value = self.split_heads(value)
            a = self._attn(query, key, value, attention_mask)
            a = self.merge_heads(a)
            a = self.c_proj(a)
            a = self.resid_dropout(a)
            return a

    class MLP(nn.Module):
        def __init__(self, n_state, config):  # in MLP: n_state=3072 (4 * n_embd)
            super().__init__()
            nx = config.n_embd
            self.c_fc = Conv1D(n_state, nx)
            self.c_proj = Conv1D(nx, n_state)
            self.act = gelu_new
            self.dropout = nn.Dropout(config.resid_pdrop)

        def forward(self, x):
            h = self.act(self.c_fc(x))
            h2 = self.c_proj(h)
            return self.dropout(h2)

    class Block(nn.Module):
        def __init__(self, n_ctx, config, scale=False):
            super().__init__()
            hidden_size = config.n_embd
            inner_dim = config.n_inner if config.n_inner is not None else 4 * hidden_size
            self.ln_1 = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
            self.attn = Attention(hidden_size, n_ctx, config, scale)
            self.ln_2 = nn.LayerNorm(hidden_size, eps=config.layer_norm_epsilon)
            self.mlp = MLP(inner_dim, config)

        def forward(self, hidden_states, attention_mask=None):
            attn_output = self.attn(self.ln_1(hidden_states), attention_mask=attention_mask)
            hidden_states = attn_output + hidden_states
            feed_forward_hidden_states = self.mlp(self.ln_2(hidden_states))
            hidden_states = hidden_states + feed_forward_hidden_states
            return hidden_states

    class GPT2Model(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.drop = nn.Dropout(config.embd_pdrop)
            self.h = nn.ModuleList([Block(config.n_ctx, config, scale=True) for _ in range(config.n_layer)])
            self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
            self.apply(self._init_weights)
            for name, p in self.named_parameters():
                if "c_proj" in name and "weight" in name:
                    p.data.normal_(mean=0.0, std=(config.initializer_range / math.sqrt(2 * config.n_layer)))

        def _init_weights(self, module):
            if isinstance(module, (nn.Linear, nn.Embedding, Conv1D)):
                module.weight.data.normal_(mean=0.0, std=self.config.initializer_range)
                if isinstance(module, (nn.Linear, Conv1D)) and module.bias is not None:
                    module.bias.data.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.bias.data.zero_()
                module.weight.data.fill_(1.0)

        def forward(self, inputs_embeds=None, attention_mask=None):
            input_shape = inputs_embeds.size()[:-1]
            batch_size = inputs_embeds.shape[0]
            if attention_mask is not None:
                attention_mask = attention_mask.view(batch_size, -1)
                attention_mask = attention_mask[:, None, None, :]
                attention_mask = attention_mask.to(dtype=next(self.parameters()).dtype)  # fp16 compatibility
                attention_mask = (1.0 - attention_mask) * -10000.0
            hidden_states = inputs_embeds  # no position embeddings (trajectory_gpt2.py)
            hidden_states = self.drop(hidden_states)
            output_shape = input_shape + (hidden_states.size(-1),)
            for block in self.h:
                hidden_states = block(hidden_states, attention_mask=attention_mask)
            hidden_states = self.ln_f(hidden_states)
            hidden_states = hidden_states.view(*output_shape)
            return {'last_hidden_state': hidden_states}

    class TrajectoryModel(nn.Module):
        def __init__(self, state_dim, act_dim, max_length=None):
            super().__init__()
            self.state_dim = state_dim
            self.act_dim = act_dim
            self.max_length = max_length

    class DecisionTransformer(TrajectoryModel):
        def __init__(self, state_dim, act_dim, hidden_size, max_length=None, max_ep_len=4096, action_tanh=True,
                     **kwargs):
            super().__init__(state_dim, act_dim, max_length=max_length)
            self.hidden_size = hidden_size
            config = SimpleNamespace(vocab_size=1, n_embd=hidden_size, n_ctx=3 * max_length, n_inner=4 * hidden_size,
                                     layer_norm_epsilon=1e-5, initializer_range=0.02, **kwargs)
            self.transformer = GPT2Model(config)
            self.embed_timestep = nn.Embedding(max_ep_len, hidden_size)
            self.embed_return = torch.nn.Linear(1, hidden_size)
            self.embed_state = torch.nn.Linear(self.state_dim, hidden_size)
            self.embed_action = torch.nn.Linear(self.act_dim, hidden_size)
            self.embed_ln = nn.LayerNorm(hidden_size)
            self.predict_state = torch.nn.Linear(hidden_size, self.state_dim)
            self.predict_action = nn.Sequential(
                *([nn.Linear(hidden_size, self.act_dim)] + ([nn.Tanh()] if action_tanh else []))
            )
            self.predict_return = torch.nn.Linear(hidden_size, 1)

        def forward(self, states, actions, rewards, returns_to_go, timesteps, attention_mask=None):
            batch_size, seq_length = states.shape[0], states.shape[1]
            if attention_mask is None:
                attention_mask = torch.ones((batch_size, seq_length), dtype=torch.long)
            state_embeddings = self.embed_state(states)
            action_embeddings = self.embed_action(actions)
            returns_embeddings = self.embed_return(returns_to_go)
            time_embeddings = self.embed_timestep(timesteps)
            state_embeddings = state_embeddings + time_embeddings
            action_embeddings = action_embeddings + time_embeddings
            returns_embeddings = returns_embeddings + time_embeddings
            stacked_inputs = torch.stack(
                (returns_embeddings, state_embeddings, action_embeddings), dim=1
            ).permute(0, 2, 1, 3).reshape(batch_size, 3 * seq_length, self.hidden_size)
            stacked_inputs = self.embed_ln(stacked_inputs)
            stacked_attention_mask = torch.stack(
                (attention_mask, attention_mask, attention_mask), dim=1
            ).permute(0, 2, 1).reshape(batch_size, 3 * seq_length)
            transformer_outputs = self.transformer(
                inputs_embeds=stacked_inputs,
                attention_mask=stacked_attention_mask,
            )
            x = transformer_outputs['last_hidden_state']
            x = x.reshape(batch_size, seq_length, 3, self.hidden_size).permute(0, 2, 1, 3)
            return_preds = self.predict_return(x[:, 2])
            state_preds = self.predict_state(x[:, 2])
            action_preds = self.predict_action(x[:, 1])
            return state_preds, action_preds, return_preds

        def get_action(self, states, actions, rewards, returns_to_go, timesteps, **kwargs):
            states = states.reshape(1, -1, self.state_dim)
            actions = actions.reshape(1, -1, self.act_dim)
            returns_to_go = returns_to_go.reshape(1, -1, 1)
            timesteps = timesteps.reshape(1, -1)
            if self.max_length is not None:
                states = states[:, -self.max_length:]
                actions = actions[:, -self.max_length:]
                returns_to_go = returns_to_go[:, -self.max_length:]
                timesteps = timesteps[:, -self.max_length:]
                attention_mask = torch.cat([torch.zeros(self.max_length - states.shape[1]), torch.ones(states.shape[1])])
                attention_mask = attention_mask.to(dtype=torch.long, device=states.device).reshape(1, -1)
                states = torch.cat(
                    [torch.zeros((states.shape[0], self.max_length - states.shape[1], self.state_dim),
                                 device=states.device), states],
                    dim=1).to(dtype=dtype)
                actions = torch.cat(
                    [torch.zeros((actions.shape[0], self.max_length - actions.shape[1], self.act_dim),
                                 device=actions.device), actions],
                    dim=1).to(dtype=dtype)
                returns_to_go = torch.cat(
                    [torch.zeros((returns_to_go.shape[0], self.max_length - returns_to_go.shape[1], 1),
                                 device=returns_to_go.device), returns_to_go],
                    dim=1).to(dtype=dtype)
                timesteps = torch.cat(
                    [torch.zeros((timesteps.shape[0], self.max_length - timesteps.shape[1]), device=timesteps.device),
                     timesteps],
                    dim=1
                ).to(dtype=torch.long)
            else:
                attention_mask = None
            _, action_preds, return_preds = self.forward(
                states, actions, None, returns_to_go, timesteps, attention_mask=attention_mask, **kwargs)
            return action_preds[0, -1]

    return DecisionTransformer(
        state_dim=DT_STATE, act_dim=DT_ACT, max_length=DT_K, max_ep_len=DT_EP_LEN, hidden_size=DT_HIDDEN, n_layer=1,
        n_head=DT_HEADS, activation_function='relu', n_positions=1024, resid_pdrop=0.0, attn_pdrop=0.0,
        embd_pdrop=0.0)


def discount_cumsum(x, gamma):
    discount_cumsum = np.zeros_like(x)
    discount_cumsum[-1] = x[-1]
    for t in reversed(range(x.shape[0] - 1)):
        discount_cumsum[t] = x[t] + gamma * discount_cumsum[t + 1]
    return discount_cumsum


def dt_trajectories():
    rng = np.random.default_rng(6)
    lengths = (6, 3, 9, 2)  # some shorter than K: left padding in get_batch
    return [dict(observations=rng.standard_normal((n, DT_STATE)), actions=np.tanh(rng.standard_normal((n, DT_ACT))),
                 rewards=rng.standard_normal(n), dones=np.eye(n)[-1]) for n in lengths]


def get_batch(torch, trajectories, rng, batch_size, max_len=DT_K, scale=10., dtype=None):
    """experiment.py's ``get_batch``: NumPy slices of random trajectories, left-padded to ``max_len`` (states with 0,
    actions with -10, the mask with 0), ``torch.from_numpy(np.concatenate(s, axis=0)).to(dtype=torch.float32)``."""
    dtype = dtype or torch.float32
    states = np.concatenate([t['observations'] for t in trajectories], axis=0)
    state_mean, state_std = np.mean(states, axis=0), np.std(states, axis=0) + 1e-6
    batch_inds = rng.choice(np.arange(len(trajectories)), size=batch_size, replace=True)
    s, a, r, d, rtg, timesteps, mask = [], [], [], [], [], [], []
    for i in range(batch_size):
        traj = trajectories[int(batch_inds[i])]
        si = rng.integers(0, traj['rewards'].shape[0] - 1) if traj['rewards'].shape[0] > 1 else 0
        s.append(traj['observations'][si:si + max_len].reshape(1, -1, DT_STATE))
        a.append(traj['actions'][si:si + max_len].reshape(1, -1, DT_ACT))
        r.append(traj['rewards'][si:si + max_len].reshape(1, -1, 1))
        d.append(traj['dones'][si:si + max_len].reshape(1, -1))
        timesteps.append(np.arange(si, si + s[-1].shape[1]).reshape(1, -1))
        timesteps[-1][timesteps[-1] >= DT_EP_LEN] = DT_EP_LEN - 1  # padding cutoff
        rtg.append(discount_cumsum(traj['rewards'][si:], gamma=1.)[:s[-1].shape[1] + 1].reshape(1, -1, 1))
        if rtg[-1].shape[1] <= s[-1].shape[1]:
            rtg[-1] = np.concatenate([rtg[-1], np.zeros((1, 1, 1))], axis=1)
        tlen = s[-1].shape[1]
        s[-1] = np.concatenate([np.zeros((1, max_len - tlen, DT_STATE)), s[-1]], axis=1)
        s[-1] = (s[-1] - state_mean) / state_std
        a[-1] = np.concatenate([np.ones((1, max_len - tlen, DT_ACT)) * -10., a[-1]], axis=1)
        r[-1] = np.concatenate([np.zeros((1, max_len - tlen, 1)), r[-1]], axis=1)
        d[-1] = np.concatenate([np.ones((1, max_len - tlen)) * 2, d[-1]], axis=1)
        rtg[-1] = np.concatenate([np.zeros((1, max_len - tlen, 1)), rtg[-1]], axis=1) / scale
        timesteps[-1] = np.concatenate([np.zeros((1, max_len - tlen)), timesteps[-1]], axis=1)
        mask.append(np.concatenate([np.zeros((1, max_len - tlen)), np.ones((1, tlen))], axis=1))
    s = torch.from_numpy(np.concatenate(s, axis=0)).to(dtype=dtype)
    a = torch.from_numpy(np.concatenate(a, axis=0)).to(dtype=dtype)
    r = torch.from_numpy(np.concatenate(r, axis=0)).to(dtype=dtype)
    d = torch.from_numpy(np.concatenate(d, axis=0)).to(dtype=torch.long)
    rtg = torch.from_numpy(np.concatenate(rtg, axis=0)).to(dtype=dtype)
    timesteps = torch.from_numpy(np.concatenate(timesteps, axis=0)).to(dtype=torch.long)
    mask = torch.from_numpy(np.concatenate(mask, axis=0))
    return s, a, r, d, rtg, timesteps, mask


def train_decision_transformer(compiled_step=None, steps=3, dtype_name=None):
    """seq_trainer.py's ``train_step`` (AdamW, ``LambdaLR`` warmup ``min((steps+1)/warmup_steps, 1)``,
    ``clip_grad_norm_(..., .25)``, the MSE on ``action_preds.reshape(-1, act_dim)[attention_mask.reshape(-1) > 0]``),
    then evaluate_episodes.py's ``evaluate_episode_rtg`` rolling ``get_action`` out on a NumPy environment (the context
    grown by ``torch.cat``, ``actions[-1] = action``, the return-to-go decremented). ``compiled_step``: kiln's
    ``train_step`` is ``kiln.compile(train_step, **compiled_step)``."""

    def train(torch, nn, F, model):
        dtype = getattr(torch, dtype_name) if dtype_name else None
        trajectories, rng = dt_trajectories(), np.random.default_rng(8)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda steps: min((steps + 1) / DT_WARMUP, 1))
        loss_fn = lambda s_hat, a_hat, r_hat, s, a, r: torch.mean((a_hat - a) ** 2)  # noqa: E731

        def train_step(states, actions, rewards, rtg, timesteps, attention_mask):
            action_target = torch.clone(actions)
            state_preds, action_preds, reward_preds = model.forward(
                states, actions, rewards, rtg[:, :-1], timesteps, attention_mask=attention_mask,
            )
            act_dim = action_preds.shape[2]
            action_preds = action_preds.reshape(-1, act_dim)[attention_mask.reshape(-1) > 0]
            action_target = action_target.reshape(-1, act_dim)[attention_mask.reshape(-1) > 0]
            loss = loss_fn(None, action_preds, None, None, action_target, None)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), .25)
            optimizer.step()
            with torch.no_grad():
                action_error = torch.mean((action_preds - action_target) ** 2).detach()
            return loss.detach(), action_error

        run = kiln.compile(train_step, **compiled_step) if compiled_step is not None and torch is kiln else train_step
        record = {"losses": [], "errors": [], "lrs": []}
        model.train()
        for _ in range(steps):
            states, actions, rewards, dones, rtg, timesteps, attention_mask = get_batch(
                torch, trajectories, rng, DT_BATCH, dtype=dtype)
            loss, action_error = run(states, actions, rewards, rtg, timesteps, attention_mask)
            record["losses"].append(loss.cpu().item())
            record["errors"].append(action_error.cpu().item())
            scheduler.step()
            record["lrs"].append(scheduler.get_last_lr()[0])
        record["state"] = snapshot(model)
        model.eval()
        record["rollout"] = evaluate_episode_rtg(torch, model, dtype or torch.float32)
        return record

    return train


def evaluate_episode_rtg(torch, model, dtype, max_ep_len=5, scale=10., target_return=3.6):
    """evaluate_episodes.py's loop (state_mean 0 and std 1), on a deterministic NumPy environment."""
    rng = np.random.default_rng(9)
    A, B = rng.standard_normal((DT_STATE, DT_STATE)) * 0.5, rng.standard_normal((DT_ACT, DT_STATE))
    state, state_mean, state_std = rng.standard_normal(DT_STATE), torch.zeros(DT_STATE), torch.ones(DT_STATE)
    states = torch.from_numpy(state).reshape(1, DT_STATE).to(dtype=torch.float32)
    actions = torch.zeros((0, DT_ACT), dtype=torch.float32)
    rewards = torch.zeros(0, dtype=torch.float32)
    ep_return = target_return
    target_return = torch.tensor(ep_return, dtype=torch.float32).reshape(1, 1)
    timesteps = torch.tensor(0, dtype=torch.long).reshape(1, 1)
    taken = []
    for t in range(max_ep_len):
        actions = torch.cat([actions, torch.zeros((1, DT_ACT))], dim=0)
        rewards = torch.cat([rewards, torch.zeros(1)])
        action = model.get_action(
            (states.to(dtype=dtype) - state_mean) / state_std,
            actions.to(dtype=dtype),
            rewards.to(dtype=dtype),
            target_return.to(dtype=dtype),
            timesteps.to(dtype=torch.long),
        )
        actions[-1] = action
        action = action.detach().cpu().numpy()
        taken.append(np.array(action, np.float64))
        state = np.tanh(state @ A + action @ B)
        reward = float(1.0 - np.abs(state).sum())
        cur_state = torch.from_numpy(state).reshape(1, DT_STATE)
        states = torch.cat([states, cur_state], dim=0)
        rewards[-1] = reward
        pred_return = target_return[0, -1] - (reward / scale)
        target_return = torch.cat([target_return, pred_return.reshape(1, 1)], dim=1)
        timesteps = torch.cat([timesteps, torch.ones((1, 1), dtype=torch.long) * (t + 1)], dim=1)
    return {"actions": np.stack(taken), "returns_to_go": array(target_return)}


def _dt_float64(torch, nn, F):
    return decision_transformer(torch, nn, F, dtype=torch.float64)


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled model"])
def test_decision_transformer_trains_and_acts_as_torch(compiled, float64_default):
    """Eagerly, and with ``model = kiln.compile(model, fullgraph=True)`` (the trainer's ``self.model.forward(...)`` then
    compiled, as ``torch.compile``'s ``OptimizedModule.forward``; ``get_action`` calls the module's own). The heads
    the action loss does not reach (``predict_state``, ``predict_return``) get no ``.grad`` eagerly, so AdamW skips
    them; through a compiled forward they get zeros, as through ``torch.compile``'s AOTAutograd (checked by hand with
    ``backend="aot_eager"``: 5 s, too slow here), so AdamW's weight decay moves them by ``lr * weight_decay`` a step:
    compared at that level."""
    train = train_decision_transformer(dtype_name="float64")
    ours, theirs = run_in_lockstep(_dt_float64, compiled_module_training(train) if compiled else train)
    decayed_only = dict(rtol=1e-5, atol=1e-12) if compiled else dict(rtol=1e-10, atol=1e-12)
    assert_same_records(ours, theirs, looser={"predict_state": decayed_only, "predict_return": decayed_only})
    assert theirs["lrs"] == pytest.approx([1e-2 * 2 / 3, 1e-2, 1e-2])  # the warmup, then lr
    assert theirs["rollout"]["actions"].shape == (5, DT_ACT)


def test_decision_transformer_float32_as_written_trains_as_torch():
    ours, theirs = run_in_lockstep(decision_transformer, train_decision_transformer())
    assert ours["state"]["embed_state.weight"].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-4, atol=2e-5)


def test_decision_transformer_train_step_with_its_boolean_mask_compiles_as_torch_compile_does(float64_default):
    """The masked loss ``action_preds.reshape(-1, act_dim)[attention_mask.reshape(-1) > 0]`` has a data-dependent
    shape; its mask is made from the step's input, so ``kiln.compile(train_step, fullgraph=True)`` specializes and
    guards its values (a variant per mask, as torch.compile(fullgraph=True) traces it with an unbacked size) and trains
    as torch. kiln refused it before ("x[mask] has a data-dependent shape") and ran the step eagerly without
    ``fullgraph``."""
    ours, theirs = run_in_lockstep(_dt_float64, train_decision_transformer(dict(fullgraph=True), steps=2,
                                                                          dtype_name="float64"))
    assert_same_records(ours, theirs)


def test_decision_transformer_exported_to_onnx_acts_as_torch(tmp_path):
    """The model's action head (``forward(states, actions, None, returns_to_go, timesteps, attention_mask)[1]``, the
    left-padded context as ``get_action`` builds it) exported by ``kiln.onnx.export`` runs in onnxruntime as torch's
    model from the same weights."""
    onnxruntime = require("onnxruntime")
    rng = np.random.default_rng(10)
    feeds = dict(states=rng.standard_normal((2, DT_K, DT_STATE)).astype(np.float32),
                 actions=rng.standard_normal((2, DT_K, DT_ACT)).astype(np.float32),
                 returns_to_go=rng.standard_normal((2, DT_K, 1)).astype(np.float32),
                 timesteps=np.array([[0, 0, 1, 2], [3, 4, 5, 6]]), attention_mask=np.array([[0, 1, 1, 1], [1, 1, 1, 1]]))

    def act(torch, nn, F, model):
        model.eval()
        tensors = [torch.tensor(value) for value in feeds.values()]

        class ActionHead(nn.Module):
            def __init__(self, dt):
                super().__init__()
                self.dt = dt

            def forward(self, states, actions, returns_to_go, timesteps, attention_mask):
                return self.dt(states, actions, None, returns_to_go, timesteps, attention_mask=attention_mask)[1]

        if torch is kiln:
            kiln.onnx.export(ActionHead(model), tuple(tensors), str(tmp_path / "dt.onnx"), input_names=list(feeds))
            return {"actions": onnxruntime.InferenceSession(str(tmp_path / "dt.onnx")).run(None, feeds)[0]}
        with torch.no_grad():
            return {"actions": array(ActionHead(model)(*tensors))}

    ours, theirs = run_in_lockstep(decision_transformer, act)
    assert_same_records(ours, theirs, rtol=1e-5, atol=1e-6)


def dreamerv3_kl_loss(torch, rssm, post, prior, free=1.0, dyn_scale=0.5, rep_scale=0.1):
    """NM512/dreamerv3-torch's ``RSSM.kl_loss``: the representation and dynamics KLs of detached sides, free nats by
    ``torch.clip(loss, min=free)``."""
    kld = torch.distributions.kl.kl_divergence
    dist = lambda x: rssm.get_dist(x)  # noqa: E731
    sg = lambda x: {k: v.detach() for k, v in x.items()}  # noqa: E731
    rep_loss = value = kld(
        dist(post) if rssm._discrete else dist(post)._dist,
        dist(sg(prior)) if rssm._discrete else dist(sg(prior))._dist,
    )
    dyn_loss = kld(
        dist(sg(post)) if rssm._discrete else dist(sg(post))._dist,
        dist(prior) if rssm._discrete else dist(prior)._dist,
    )
    rep_loss = torch.clip(rep_loss, min=free)
    dyn_loss = torch.clip(dyn_loss, min=free)
    loss = dyn_scale * dyn_loss + rep_scale * rep_loss
    return loss, value, dyn_loss, rep_loss


@pytest.mark.parametrize("discrete, free", [(True, 0.1), (False, 0.07)], ids=["discrete latents", "Gaussian latents"])
def test_dreamerv3_free_nats_kl_values_and_gradients_as_torch(monkeypatch, discrete, free, float64_default):
    """The posterior and prior of one ``observe`` scored by DreamerV3's clipped KLs (``free`` between their values,
    so some are clipped): the values and every parameter's gradient of their mean; then ``RSSM.imagine`` (``static_scan``
    of ``img_step``) from the last posterior, as ``video_pred``'s open loop."""
    tapes = dreamer_tapes(monkeypatch, float64_default)

    def score(torch, nn, F, behavior):
        world_model = behavior._world_model
        tapes[torch] = tape = NoiseTape(torch, dreamer_noise_slots(discrete), B_SEQ)
        tape.refill()
        data = world_model.preprocess(dreamer_data(1)[0])
        post, prior = world_model.dynamics.observe(world_model.encoder(data['obs']), data['action'])
        loss, value, dyn_loss, rep_loss = dreamerv3_kl_loss(torch, world_model.dynamics, post, prior, free=free)
        torch.mean(loss).backward()
        init = {k: v[:, -1] for k, v in post.items()}  # WorldModel.video_pred's open loop from the last posterior
        with torch.no_grad():
            imagined = world_model.dynamics.imagine(data['action'], init)
        return {"value": array(value), "clipped": array(dyn_loss), "grads": gradients(world_model),
                "imagined": array(world_model.dynamics.get_feat(imagined))}

    ours, theirs = run_in_lockstep(dreamer_agent(discrete), score)
    assert_same_records(ours, theirs)
    clipped = theirs["clipped"] == free
    assert clipped.any() and not clipped.all()
