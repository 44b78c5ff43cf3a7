"""Porting probes: three RL families written once as their reference code writes them (``torch`` is torch or kiln; the
programs are in ``rainbow_program.py``, ``a2c_gae_program.py`` and ``torchbeast_program.py``), run in both libraries
from kiln's initial weights, tiny, on deterministic NumPy environments; kiln's random draws (``torch.randn`` noise,
``dist.sample()``, ``torch.multinomial``) replayed to torch.

- Rainbow (Kaixhin/Rainbow): ``NoisyLinear`` (factorised Gaussian noise ``x.sign().mul_(x.abs().sqrt_())``, buffers
  written by ``self.weight_epsilon.copy_(epsilon_out.ger(epsilon_in))``, ``reset_noise``, noisy weights in training and
  ``weight_mu`` in eval, init by ``.data.uniform_`` / ``.data.fill_``), the dueling C51 head (``v.view(-1, 1, atoms) + a -
  a.mean(1, keepdim=True)``, ``log_softmax(q, dim=2)``), ``learn``'s double-Q categorical projection (``log_ps[range(B),
  actions]``, ``clamp``, ``floor``/``ceil().to(torch.int64)``, the in-place boolean fixes ``l[(u > 0) * (l == u)] -= 1``,
  ``states.new_zeros``, ``linspace(...).expand(...).to(actions)``, ``m.view(-1).index_add_``), the importance-weighted
  loss with weights from the NumPy segment tree (float32 weights, float32 ``torch.matmul`` n-step returns),
  ``clip_grad_norm_``, Adam, ``update_target_net`` by ``load_state_dict``, ``requires_grad = False`` targets, ``act``'s
  ``argmax(1).item()``, priorities from ``loss.detach().cpu().numpy()``; the compiled update also with
  ``self.target_net.reset_noise()`` inside (``torch.randn`` drawn anew by the graph at each call, ``copy_`` into the
  buffers; torch given the noise kiln drew).
- A2C with GAE (ikostrikov/pytorch-a2c-ppo-acktr-gail): ``RolloutStorage`` written by ``self.obs[self.step +
  1].copy_(obs)``, ``compute_returns`` (the reversed GAE loop with ``bad_masks``), ``after_update``; ``FixedCategorical``
  (``super().log_prob(...).view(...).sum(-1).unsqueeze(-1)``, ``probs.argmax(dim=-1, keepdim=True)``) and ``FixedNormal``
  subclassing ``torch.distributions``; ``DiagGaussian`` with ``AddBias`` (``nn.Parameter(bias.unsqueeze(1))``,
  ``self._bias.t().view(1, -1)``); ``init_`` by ``nn.init.orthogonal_`` on ``.data`` with ``calculate_gain('relu')``;
  masks by ``torch.FloatTensor``; RMSprop(eps, alpha); the value/action/entropy weights; ``clip_grad_norm_``; the
  returns without GAE; the recurrent policy's ``_forward_gru`` (``nn.GRU`` init by ``named_parameters``, the steps
  split where a mask is zero by ``.nonzero().squeeze().cpu()`` and ``.numpy().tolist()``), compiled too; PPO
  (``algo/ppo.py``: ``feed_forward_generator`` with ``from torch.utils.data.sampler import BatchSampler,
  SubsetRandomSampler`` and list indexing, the clipped surrogate and value losses, Adam) with
  ``update_linear_schedule`` writing ``param_group['lr']`` between compiled minibatch steps; GAIL (``algo/gail.py``:
  the discriminator's gradient penalty by ``autograd.grad(create_graph=True)`` of a mixup made a leaf by
  ``requires_grad = True``, ``binary_cross_entropy_with_logits``, ``predict_reward`` with NumPy running statistics),
  eagerly and with each discriminator minibatch compiled.
- IMPALA (torchbeast): ``vtrace.from_logits`` / ``from_importance_weights`` under ``@torch.no_grad()`` (the reversed
  ``acc`` loop, ``torch.stack``), ``action_log_probs`` by ``-F.nll_loss(..., reduction="none").view_as(actions)``, the
  three losses, ``AtariNet`` with the LSTM core reset by ``notdone`` (``tuple(nd * s for s in core_state)``),
  ``F.one_hot(...).float()``, ``torch.cat`` of float32 and default-dtype parts, actors filling shared buffers
  (``buffers[key][index][t + 1, ...] = agent_output[key]``), ``get_batch``'s ``stack``/``cat``, ``(~done).float() *
  discounting``, RMSprop(momentum, eps, alpha) with ``LambdaLR``, ``actor_model.load_state_dict(model.state_dict())``.

Checked against torch 2.13 in float64 to 1e-10 (losses, first gradients, rollouts, returns, V-trace targets,
parameters after the updates), eagerly and with each learner update (zero_grad, forward, loss, backward, clip, step)
one ``kiln.compile(fullgraph=True)`` graph against torch's eager loop; the acting policies' inference through
``kiln.compile``, and through ``kiln.onnx.export`` in onnxruntime (Rainbow's eval net, the recurrent A2C base,
IMPALA's ``AtariNet`` with its dict of inputs and LSTM state); float32 at float32's level.

What broke: the compiled Rainbow update refused the projection's ``l[(u > 0) * (l == u)] -= 1`` ("x[mask] has a
data-dependent shape"): arithmetic on pending masked rows now stays pending and is written back as one ``where``
(``frontend/pending_masked_rows.py``, ``tests/frontend/test_pending_masked_rows_arithmetic_vs_torch.py``). The compiled
IMPALA learner step refused its ``total_loss.backward()``: the batch requires grad (the actor's first forward, outside
``no_grad``, was written into the buffers), so kiln traced the step as a forward to differentiate later; a whole step
given such tensors is now traced as a step (``frontend/whole_step_inputs.py``,
``tests/runtime/test_compiled_step_given_grad_arguments_vs_torch.py``). ``from torch.utils.data.sampler import ...``
raised ("'kiln.utils.data' is not a package"): ``kiln.utils.data`` is now a package with ``sampler``, ``dataset`` and
``dataloader`` (``tests/data/test_torch_data_submodules_vs_torch.py``). Feeding the GAIL mixup's draw to a compiled
discriminator step through an attribute (``draws.fed``) showed a compiled function reading a plain object's tensor
attribute kept the tensor it traced, so later calls silently reused the first draw; it now follows the attribute
(``runtime/compiled_function.py``, ``tests/runtime/test_compiled_plain_object_tensor_rebound_vs_torch.py``), also
for an object reached only through a method the compiled one calls (``compute_grad_pen``'s closure: the bound
object's methods its code names). Everything else agreed as first written.

Not covered: monobeast's ``t.share_memory_()`` of the buffers, which kiln refuses by design (one process; its message
says to run the actors in turn, as here). The reference's float32 n-step returns (a float32 ``torch.matmul``) differ in
the last bit between the libraries (torch rounds the dot product once), so the float64 runs build them in float64.
"""

from __future__ import annotations

import io

import numpy as np
import pytest

import kiln
from e2e import a2c_gae_program, rainbow_program, torchbeast_program
from e2e.probe_lockstep import array, assert_same_records, gradients, run_in_lockstep, snapshot
from oracles import libraries, require

# --- Rainbow -------------------------------------------------------------------------------------------------------

ACTIONS = 3


def rainbow_build(draws):
    def build(torch, nn, F):
        DQN = rainbow_program.rainbow_model(torch, nn, F, draws)
        args = rainbow_program.RainbowArgs
        return nn.ModuleDict({"online": DQN(args, ACTIONS), "target": DQN(args, ACTIONS)})

    return build


def rainbow_training(draws, compiled=False, learn_steps=3, float_dtype=None):
    """main.py's learning part: ``reset_noise`` every step, ``learn(mem)``, the target updated after the second;
    ``act`` on states in training and eval mode."""
    args = rainbow_program.RainbowArgs
    transitions = rainbow_program.rainbow_transitions(args, ACTIONS)

    def train(torch, nn, F, nets):
        Agent = rainbow_program.rainbow_agent(torch, nn, F, None, args, ACTIONS)
        dqn = Agent(nets["online"], nets["target"])
        mem = rainbow_program.ReplayMemory(torch, args, transitions, float_dtype=float_dtype or torch.get_default_dtype())
        step = kiln.compile(dqn.step, fullgraph=True) if compiled and torch is kiln else None
        record = {"losses": [], "priorities": []}
        for T in range(learn_steps):
            dqn.reset_noise()
            record["losses"].append(array(dqn.learn(mem, step)))
            record["priorities"].append(mem.transitions.sum_tree.copy())
            if T == 0 and not compiled:
                record["grads"] = gradients(dqn.online_net)
            if T == 1:
                dqn.update_target_net()
        record["state"] = snapshot(nets)
        states = torch.tensor(transitions["state"][:3], dtype=float_dtype or torch.get_default_dtype()).div_(255)
        record["act"] = [dqn.act(state) for state in states]
        dqn.online_net.eval()
        record["act_eval"] = [dqn.act(state) for state in states]
        return record

    return train


def test_rainbow_learns_as_torch(float64_default):
    draws = rainbow_program.KilnDrawsTorchReplays()
    ours, theirs = run_in_lockstep(rainbow_build(draws), rainbow_training(draws))
    assert draws.replayed == len(draws.recorded)
    assert_same_records(ours, theirs)


def test_rainbow_compiled_learn_step_as_torch(float64_default):
    """``Agent.learn``'s update (loss, projection, backward, clip, Adam) as one compiled graph; the noise buffers
    ``reset_noise`` writes eagerly between calls are read by the next call."""
    draws = rainbow_program.KilnDrawsTorchReplays()
    ours, theirs = run_in_lockstep(rainbow_build(draws), rainbow_training(draws, compiled=True))
    assert_same_records(ours, theirs)


class DrawsAsWritten:
    """``torch.randn`` as written (no recording): the draws inside a compiled graph exist only when it runs."""

    def draw(self, lib, make):
        return make()


def test_rainbow_compiled_learn_resamples_target_noise_inside_as_torch(float64_default):
    """``learn`` with ``self.target_net.reset_noise()`` inside the compiled step, as agent.py calls it: the graph's
    ``torch.randn`` draws anew at each call and ``copy_`` writes the noise buffers. torch's eager step is given the noise
    kiln's call left in the target's buffers: the losses and the online net after the steps agree."""
    torch, args = float64_default, rainbow_program.RainbowArgs
    transitions = rainbow_program.rainbow_transitions(args, ACTIONS)
    kiln.manual_seed(0)
    agents, memories, noise = [], [], []
    for lib, nn, F in (libraries("kiln"), libraries("torch")):
        nets = rainbow_build(DrawsAsWritten())(lib, nn, F)
        if agents:
            nets.load_state_dict({key: lib.tensor(value) for key, value in snapshot(agents[0].nets).items()})
        Agent = rainbow_program.rainbow_agent(lib, nn, F, None, args, ACTIONS)
        agents.append(Agent(nets["online"], nets["target"]))
        agents[-1].nets = nets
        memories.append(rainbow_program.ReplayMemory(lib, args, transitions, float_dtype=lib.float64))

    def learn_step(*batch):
        agents[0].target_net.reset_noise()
        return agents[0].step(*batch)

    compiled, losses = kiln.compile(learn_step, fullgraph=True), []
    for _ in range(3):
        idxs, *batch = memories[0].sample(args.batch_size)
        ours = compiled(*batch)
        noise.append(snapshot(agents[0].target_net)["fc_z_v.weight_epsilon"])
        agents[1].target_net.load_state_dict({key: torch.tensor(value) for key, value in
                                              snapshot(agents[0].target_net).items()})
        their_idxs, *their_batch = memories[1].sample(args.batch_size)
        theirs = agents[1].step(*their_batch)
        for memory, indices, loss in ((memories[0], idxs, ours), (memories[1], their_idxs, theirs)):
            memory.update_priorities(indices, loss.detach().cpu().numpy())
        losses.append((array(ours), array(theirs)))
    for ours, theirs in losses:
        np.testing.assert_allclose(ours, theirs, rtol=1e-10)
    assert_same_records(snapshot(agents[0].online_net), snapshot(agents[1].online_net))
    assert not np.allclose(noise[0], noise[1]) and not np.allclose(noise[1], noise[2])  # drawn anew at each call
    bias_noise = snapshot(agents[0].target_net)["fc_z_v.bias_epsilon"]
    np.testing.assert_allclose(noise[2], np.outer(bias_noise, noise[2][0] / bias_noise[0]), rtol=1e-12)  # factorised


def test_rainbow_float32_as_torch():
    draws = rainbow_program.KilnDrawsTorchReplays()
    ours, theirs = run_in_lockstep(rainbow_build(draws), rainbow_training(draws, compiled=True))
    assert ours["losses"][0].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6)


def test_rainbow_eval_net_compiled_and_onnx_as_torch():
    """The acting net in eval mode (``weight_mu``) through ``kiln.compile`` and ``kiln.onnx.export`` (onnxruntime)."""
    onnxruntime = require("onnxruntime")
    draws = rainbow_program.KilnDrawsTorchReplays()
    states = rainbow_program.rainbow_transitions(rainbow_program.RainbowArgs, ACTIONS)["state"][:3] / np.float32(255)

    def infer(torch, nn, F, nets):
        net = nets["online"].eval()
        with torch.no_grad():
            record = {"eager": array(net(torch.tensor(states), log=True))}
        if torch is kiln:
            record["compiled"] = array(kiln.compile(net, fullgraph=True)(kiln.tensor(states)))
            buffer = io.BytesIO()
            kiln.onnx.export(net, (kiln.tensor(states),), buffer, input_names=["x"], output_names=["q"])
            record["onnx"] = onnxruntime.InferenceSession(buffer.getvalue()).run(None, {"x": states})[0]
        else:
            record["compiled"] = record["onnx"] = array(net(torch.tensor(states)))
        return record

    ours, theirs = run_in_lockstep(rainbow_build(draws), infer)
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6)


# --- A2C with GAE --------------------------------------------------------------------------------------------------

A2C_SPACES = {"discrete": a2c_gae_program.Discrete(3), "continuous": a2c_gae_program.Box((2,))}


def a2c_build(draws, space, args=a2c_gae_program.A2CArgs):
    def build(torch, nn, F):
        a2c = a2c_gae_program.a2c_program(torch, nn, F, draws)
        return a2c.Policy((4,), A2C_SPACES[space], base_kwargs={'recurrent': args.recurrent_policy,
                                                               'hidden_size': args.hidden_size})

    return build


class A2CArgsWithoutGae(a2c_gae_program.A2CArgs):
    use_gae = False


class A2CArgsRecurrent(a2c_gae_program.A2CArgs):
    recurrent_policy = True


class PPOArgs(a2c_gae_program.A2CArgs):
    algo, use_linear_lr_decay, lr = 'ppo', True, 3e-3


class GailArgs(PPOArgs):
    gail = True


def gail_build(draws):
    def build(torch, nn, F):
        policy = a2c_build(draws, "continuous", GailArgs)(torch, nn, F)
        float_tensor = lambda array: torch.tensor(array, dtype=torch.get_default_dtype())  # noqa: E731  (FloatTensor)
        Discriminator = a2c_gae_program.gail_discriminator(torch, nn, F, draws, float_tensor)
        return nn.ModuleDict({"policy": policy, "discr": Discriminator(4 + 2, 8, "cpu")})

    return build


class KilnFeedsTorchReplays(rainbow_program.KilnDrawsTorchReplays):
    """For a compiled step: kiln's draw inside it is ``fed`` (drawn eagerly before each call and recorded), torch's
    run replays the same values; other draws as ``KilnDrawsTorchReplays``'s."""

    fed = None

    def compiled_feeding(self, step, make):
        """``step`` compiled, each call given a fresh ``make()`` as its draw."""
        compiled = kiln.compile(step, fullgraph=True)

        def call(*batch):
            self.fed = make(*batch)
            self.recorded.append(array(self.fed))
            try:
                return compiled(*batch)
            finally:
                self.fed = None

        return call

    def draw(self, lib, make):
        return self.fed if lib is kiln and self.fed is not None else super().draw(lib, make)


def gail_training(draws, compiled=False):
    """main.py with ``--gail``: PPO on the discriminator's rewards, the expert pairs from a ``DataLoader`` over a
    ``TensorDataset`` (gail.py's ``ExpertDataset`` reads recorded trajectories; in order here)."""
    rng = np.random.default_rng(1)
    expert_states, expert_actions = rng.uniform(-0.5, 0.5, (10, 4)), rng.standard_normal((10, 2)) * 0.3

    def train(torch, nn, F, nets):
        args = GailArgs
        a2c = a2c_gae_program.a2c_program(torch, nn, F, draws)
        envs = a2c_gae_program.SyntheticVecEnv(torch, A2C_SPACES["continuous"], args.num_processes,
                                               float_dtype=torch.get_default_dtype())
        dataset = torch.utils.data.TensorDataset(torch.tensor(expert_states), torch.tensor(expert_actions))
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.gail_batch_size, shuffle=False, drop_last=True)
        discr_step = draws.compiled_feeding(nets["discr"].update_minibatch, lambda *batch: kiln.rand(len(batch[0]), 1)) \
            if compiled and torch is kiln else None
        record = a2c_gae_program.a2c_main(torch, a2c, nets["policy"], envs, args, 2, discr=nets["discr"],
                                          gail_train_loader=loader, discr_step=discr_step)
        record["state"] = snapshot(nets)
        return record

    return train


def test_gail_with_ppo_trains_as_torch(float64_default):
    """gail.py's discriminator: the gradient penalty by ``autograd.grad(..., create_graph=True)`` of a mixup made a
    leaf by ``mixup_data.requires_grad = True``, ``binary_cross_entropy_with_logits``, Adam, ``predict_reward`` with the
    NumPy running return statistics."""
    draws = rainbow_program.KilnDrawsTorchReplays()
    ours, theirs = run_in_lockstep(gail_build(draws), gail_training(draws))
    assert draws.replayed == len(draws.recorded)
    assert_same_records(ours, theirs)


def test_gail_compiled_discriminator_step_as_torch(float64_default):
    """Each discriminator minibatch (the two BCE losses, the gradient penalty's double backward, Adam) one
    ``kiln.compile(fullgraph=True)`` graph; the mixup's ``torch.rand`` is fed to it from a draw made before the call
    (read from the draws object at each call) and replayed to torch."""
    draws = KilnFeedsTorchReplays()
    ours, theirs = run_in_lockstep(gail_build(draws), gail_training(draws, compiled=True))
    assert draws.replayed == len(draws.recorded)
    assert_same_records(ours, theirs)


def a2c_training(draws, space, compiled=False, num_updates=3, float_dtype=None, args=a2c_gae_program.A2CArgs):
    """main.py's loop for a few updates; with ``compiled`` kiln's update (evaluate_actions, losses, backward, clip,
    RMSprop step) is one ``kiln.compile(fullgraph=True)`` graph taking the ``RolloutStorage``."""

    def train(torch, nn, F, actor_critic):
        a2c = a2c_gae_program.a2c_program(torch, nn, F, draws)
        envs = a2c_gae_program.SyntheticVecEnv(torch, A2C_SPACES[space], args.num_processes,
                                               float_dtype=float_dtype or torch.get_default_dtype())
        update_step = (lambda agent: kiln.compile(agent.update_minibatch if args.algo == 'ppo' else agent.update_step,
                                                  fullgraph=True)) if compiled and torch is kiln else None
        record = a2c_gae_program.a2c_main(torch, a2c, actor_critic, envs, args, num_updates, update_step)
        record["state"] = snapshot(actor_critic)
        act = kiln.compile(actor_critic.act, fullgraph=True) if compiled and torch is kiln else actor_critic.act
        obs = torch.tensor(record["obs0"])
        with torch.no_grad():
            hidden = torch.zeros(len(obs), actor_critic.recurrent_hidden_state_size)
            value, action, action_log_prob, _ = act(obs, hidden, torch.ones(len(obs), 1),
                                                    deterministic=True)
        record["deterministic act"] = {"value": array(value), "action": array(action), "log_prob": array(action_log_prob)}
        return record

    return train


@pytest.mark.parametrize("space, args", [("discrete", a2c_gae_program.A2CArgs), ("continuous", a2c_gae_program.A2CArgs),
                                         ("discrete", A2CArgsWithoutGae), ("discrete", A2CArgsRecurrent),
                                         ("continuous", PPOArgs)],
                         ids=["discrete", "continuous", "without-gae", "recurrent-gru", "ppo-linear-lr-decay"])
def test_a2c_gae_trains_as_torch(float64_default, space, args):
    draws = rainbow_program.KilnDrawsTorchReplays()
    ours, theirs = run_in_lockstep(a2c_build(draws, space, args), a2c_training(draws, space, args=args))
    assert draws.replayed == len(draws.recorded)
    assert_same_records(ours, theirs)


@pytest.mark.parametrize("space, args", [("discrete", a2c_gae_program.A2CArgs), ("continuous", a2c_gae_program.A2CArgs),
                                         ("discrete", A2CArgsRecurrent), ("continuous", PPOArgs)],
                         ids=["discrete", "continuous", "recurrent-gru", "ppo-linear-lr-decay"])
def test_a2c_gae_compiled_update_as_torch(float64_default, space, args):
    draws = rainbow_program.KilnDrawsTorchReplays()
    ours, theirs = run_in_lockstep(a2c_build(draws, space, args), a2c_training(draws, space, compiled=True, args=args))
    assert_same_records(ours, theirs)


def test_a2c_gae_float32_as_torch():
    draws = rainbow_program.KilnDrawsTorchReplays()
    ours, theirs = run_in_lockstep(a2c_build(draws, "discrete"), a2c_training(draws, "discrete", compiled=True))
    assert ours["returns"][0].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6)


# --- IMPALA V-trace --------------------------------------------------------------------------------------------------

FLAGS = torchbeast_program.BeastFlags
OBSERVATION_SHAPE = (1, FLAGS.frame, FLAGS.frame)


def beast_build(draws):
    def build(torch, nn, F):
        AtariNet = torchbeast_program.atari_net(torch, nn, F, draws, float_dtype=torch.get_default_dtype())
        return nn.ModuleDict({"learner": AtariNet(OBSERVATION_SHAPE, FLAGS.num_actions, use_lstm=True),
                              "actor": AtariNet(OBSERVATION_SHAPE, FLAGS.num_actions, use_lstm=True)})

    return build


def beast_training(draws, compiled=False, updates=3):
    """monobeast's ``train``: two actors (one env each) fill their buffers with ``act``'s loop, the learner ``learn``s
    on the stacked batch, ``scheduler.step()``, the actor model takes the learner's weights; with ``compiled`` kiln's
    learner step (forward, V-trace, losses, backward, clip, RMSprop) is one ``kiln.compile(fullgraph=True)`` graph.
    After: the actor model's eval (argmax) inference, through ``kiln.compile`` when ``compiled``."""

    def train(torch, nn, F, nets):
        model, actor_model = nets["learner"], nets["actor"]
        actor_model.draws = draws
        T, B = FLAGS.unroll_length, FLAGS.num_actors
        optimizer = torch.optim.RMSprop(model.parameters(), lr=FLAGS.learning_rate, momentum=FLAGS.momentum,
                                        eps=FLAGS.epsilon, alpha=FLAGS.alpha)

        def lr_lambda(epoch):
            return 1 - min(epoch * T * B, FLAGS.total_steps) / FLAGS.total_steps

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        vtrace = torchbeast_program.vtrace_program(torch, nn, F)
        learn = torchbeast_program.monobeast_learn_step(torch, nn, vtrace, FLAGS, model, optimizer)
        learn = kiln.compile(learn, fullgraph=True) if compiled and torch is kiln else learn
        buffers = torchbeast_program.create_buffers(torch, FLAGS, OBSERVATION_SHAPE, FLAGS.num_actions, B)
        initial_agent_state_buffers = []
        for _ in range(B):
            state = actor_model.initial_state(batch_size=1)  # monobeast shares it: t.share_memory_() (see the docstring)
            initial_agent_state_buffers.append(state)
        envs = [torchbeast_program.SyntheticAtari(torch, FLAGS, seed) for seed in range(B)]
        actor_states = []
        for env in envs:
            env_output, agent_state = env.initial(), actor_model.initial_state(batch_size=1)
            agent_output, unused_state = actor_model(env_output, agent_state)
            actor_states.append((env_output, agent_output, agent_state))
        record = {"stats": {}, "vs": []}
        for _ in range(updates):
            for index, env in enumerate(envs):
                actor_states[index] = torchbeast_program.act_unroll(torch, FLAGS, actor_model, env, buffers,
                                                                    initial_agent_state_buffers, index,
                                                                    actor_states[index])
            batch, initial_agent_state = torchbeast_program.get_batch(torch, buffers, initial_agent_state_buffers,
                                                                      list(range(B)))
            stats = learn(batch, initial_agent_state)
            record["vs"].append(array(stats.pop("vs")))
            for key, value in stats.items():
                record["stats"].setdefault(key, []).append(value.item())
            record.setdefault("grads", gradients(model))
            record.setdefault("batch actions", array(batch["action"]))
            scheduler.step()
            actor_model.load_state_dict(model.state_dict())
        record["state"] = snapshot(nets)
        actor_model.eval()
        policy = kiln.compile(actor_model, fullgraph=True) if compiled and torch is kiln else actor_model
        with torch.no_grad():
            outputs, core_state = policy(batch, initial_agent_state)
        record["eval"] = {**{key: array(value) for key, value in outputs.items()}, "core": [array(s) for s in core_state]}
        return record

    return train


def test_impala_vtrace_learns_as_torch(float64_default):
    draws = rainbow_program.KilnDrawsTorchReplays()
    ours, theirs = run_in_lockstep(beast_build(draws), beast_training(draws))
    assert draws.replayed == len(draws.recorded) == 2 * (1 + 3 * FLAGS.unroll_length)
    assert_same_records(ours, theirs)


def test_impala_vtrace_compiled_learner_step_as_torch(float64_default):
    draws = rainbow_program.KilnDrawsTorchReplays()
    ours, theirs = run_in_lockstep(beast_build(draws), beast_training(draws, compiled=True))
    assert_same_records(ours, theirs)


def test_impala_vtrace_float32_as_torch():
    draws = rainbow_program.KilnDrawsTorchReplays()
    ours, theirs = run_in_lockstep(beast_build(draws), beast_training(draws, compiled=True))
    assert ours["vs"][0].dtype == np.float32
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6)


def test_acting_policies_through_onnx_as_torch():
    """The acting policies exported by ``kiln.onnx.export`` and run by onnxruntime (float32), against torch's eager
    outputs: ikostrikov's recurrent ``MLPBase`` (one GRU step with the mask) and torchbeast's ``AtariNet`` in eval
    (the dict of env outputs and the LSTM state in, the dict of logits, baseline, argmax action and the state out)."""
    onnxruntime = require("onnxruntime")
    rng = np.random.default_rng(2)
    obs, hxs = rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((2, 8)).astype(np.float32)
    masks = np.array([[1.0], [0.0]], np.float32)
    env_outputs = {"frame": rng.integers(0, 256, (1, 2) + OBSERVATION_SHAPE, dtype=np.uint8),
                   "reward": np.array([[0.5, -2.0]], np.float32), "done": np.array([[False, True]]),
                   "last_action": np.array([[1, 2]])}
    core_state = [rng.standard_normal((2, 2, 16)).astype(np.float32) for _ in range(2)]

    def build(torch, nn, F):
        a2c = a2c_gae_program.a2c_program(torch, nn, F, None)
        AtariNet = torchbeast_program.atari_net(torch, nn, F, None)
        return nn.ModuleDict({"a2c": a2c.Policy((4,), a2c_gae_program.Discrete(3),
                                                base_kwargs={"recurrent": True, "hidden_size": 8}).base,
                              "beast": AtariNet(OBSERVATION_SHAPE, FLAGS.num_actions, use_lstm=True).eval()})

    def infer(torch, nn, F, nets):
        a2c_inputs = (torch.tensor(obs), torch.tensor(hxs), torch.tensor(masks))
        beast_inputs = ({key: torch.tensor(value) for key, value in env_outputs.items()},
                        tuple(torch.tensor(s) for s in core_state))
        if torch is not kiln:
            with torch.no_grad():
                beast_out, beast_state = nets["beast"](*beast_inputs)
                return {"a2c": dict(enumerate(map(array, nets["a2c"](*a2c_inputs)))),
                        "beast": dict(enumerate(map(array, (*beast_out.values(), *beast_state))))}
        record = {}
        for name, inputs in (("a2c", a2c_inputs), ("beast", beast_inputs)):
            buffer = io.BytesIO()
            kiln.onnx.export(nets[name], inputs, buffer)
            session = onnxruntime.InferenceSession(buffer.getvalue())
            leaves = [*a2c_inputs] if name == "a2c" else [*beast_inputs[0].values(), *beast_inputs[1]]
            feeds = {given.name: array(leaf) for given, leaf in zip(session.get_inputs(), leaves, strict=True)}
            record[name] = dict(enumerate(session.run(None, feeds)))
        return record

    ours, theirs = run_in_lockstep(build, infer)
    assert_same_records(ours, theirs, rtol=2e-5, atol=2e-6)
