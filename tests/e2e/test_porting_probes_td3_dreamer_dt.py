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

from types import SimpleNamespace

import numpy as np
import pytest

import kiln
import kiln.onnx
from e2e.decision_transformer_program import (DT_ACT, DT_BATCH, DT_EP_LEN, DT_K, DT_STATE, DT_WARMUP,
                                              decision_transformer)
from e2e.dreamer_program import ACTIONS, B_SEQ, DETER, DISCRETE, HORIZON, OBS, STOCH, T_SEQ, UNITS, dreamer_program
from e2e.probe_lockstep import (array, assert_same_records, compiled_module_training, gradients, run_in_lockstep,
                                snapshot)
from e2e.sac_program import ACT_DIM, HIGH, OBS_DIM, NoiseTape, SyntheticContinuousEnv
from e2e.td3_program import BATCH, td3_program
from oracles import libraries, require, require_torch


@pytest.fixture
def noise_tapes(monkeypatch):
    """``tapes[lib]``: each library's ``randn_like`` (TD3's target policy smoothing) reads the tape set there."""
    torch = require_torch()
    tapes = {}
    for lib in (kiln, torch):
        monkeypatch.setattr(lib, "randn_like", lambda input, lib=lib, **options: tapes[lib].draw(input.shape))
    return tapes


# --- sfujim/TD3: TD3.py and utils.py ---------------------------------------------------------------------------------

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
