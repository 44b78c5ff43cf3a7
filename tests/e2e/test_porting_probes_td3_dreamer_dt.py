"""Porting probes: three RL / sequence-decision families, each written once as its reference writes it (``torch`` is
``torch`` or ``kiln``) and run in both from kiln's initial weights, in float64 to 1e-10 (float32 at its level).

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

What broke: ``kiln.compile(policy.update)`` of ``class TD3(object)`` counted ``self.total_it += 1`` once per trace,
not per call, and ran the first trace's branch of ``self.total_it % self.policy_freq`` at every call, silently: a
plain object has no ``__setattr__`` hook that records the write. Now the attributes the trace changes on a compiled
bound method's own object are guarded and replayed per call as a Module's (``runtime/attribute_writes.py``
``watching_plain_owner``; ``tests/runtime/test_compiled_plain_object_attribute_writes.py``).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import kiln
import kiln.onnx
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from e2e.sac_program import ACT_DIM, HIGH, OBS_DIM, NoiseTape, SyntheticContinuousEnv
from oracles import require, require_torch

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


def train_td3(tapes, compiled=False, max_timesteps=12, start_timesteps=5, expl_noise=0.1):
    """main.py's loop: random actions for ``start_timesteps``, then ``select_action`` plus
    ``np.random.normal(0, max_action * expl_noise)`` clipped, ``policy.train`` at every later step (``np.random.seed``
    fixes the exploration noise and the buffer's indices alike in both runs)."""

    def train(torch, nn, F, nets):
        policy, env = nets.policy, SyntheticContinuousEnv(seed=4)
        replay_buffer = nets.buffer(OBS_DIM, ACT_DIM, max_size=64)
        tape = tapes[torch] = NoiseTape(torch, {(BATCH, ACT_DIM): 1}, BATCH)
        if compiled and torch is kiln:  # one noise slot: each trace and each call draws it, no rewinding needed
            policy.update = kiln.compile(policy.update, fullgraph=True)
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
    assert ours["total_it"] == theirs["total_it"] == 7
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
