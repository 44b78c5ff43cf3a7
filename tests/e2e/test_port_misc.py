"""Programs of pytorch/examples ported to kiln by changing their imports: ``time_sequence_prediction`` (two
``LSTMCell``s over ``input.chunk``, hand-built ``double`` states, future predictions, L-BFGS with a closure),
``reinforcement_learning/actor_critic.py`` and ``reinforce.py`` (``Categorical`` policies, ``SavedAction`` lists,
normalised returns, ``smooth_l1_loss``, ``torch.stack(...).sum()``, ``del model.rewards[:]``) and
``vision_transformer`` (``unfold`` patches, a class token and positional embedding as ``nn.Parameter``s,
``MultiheadAttention``, ``LayerNorm``, ``GELU``, AdamW and a scheduler, batches from ``utils.data.DataLoader``) on the
bundled digits.

Each program is written once against ``lib`` (``torch`` or ``kiln``, with their ``nn``, ``F`` and ``optim``), with the
idioms the originals use, and run by both from the same initial weights on the same data in float64: losses and
parameters agree to about 1e-10, eagerly (PyTorch's own loop) and compiled (``kiln.compile_train_step``,
``kiln.compile``, ``kiln.optim.loss_and_grad`` for L-BFGS); exported to ONNX, the models give torch's outputs in
onnxruntime. The environment of the reinforcement-learning programs is
the NumPy cart-pole of ``examples/reinforce_cartpole.py`` behind Gym's ``reset``/``step`` API; torch's run replays the
actions kiln's ``Categorical`` drew, so both follow the same trajectories.
"""

from __future__ import annotations

import os
import sys
from collections import namedtuple
from types import SimpleNamespace

import numpy as np
import pytest

import kiln
from oracles import require

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "examples"))
import reinforce_cartpole  # noqa: E402


def _libraries(name: str) -> SimpleNamespace:
    if name == "kiln":
        import kiln.nn as nn
        import kiln.nn.functional as F
        import kiln.optim as optim

        return SimpleNamespace(lib=kiln, nn=nn, F=F, optim=optim, Categorical=kiln.distributions.Categorical)
    torch = require("torch")
    import torch.utils.data  # noqa: F401  (lib.utils.data in the programs)

    return SimpleNamespace(lib=torch, nn=torch.nn, F=torch.nn.functional, optim=torch.optim,
                           Categorical=torch.distributions.Categorical)


def _twin(torch, ours, theirs):
    """``theirs`` (torch) starts from ``ours``'s weights."""
    theirs.load_state_dict({name: torch.tensor(np.array(value)) for name, value in ours.state_dict().items()})
    return theirs


def _assert_same_parameters(ours, theirs, rtol=1e-10, atol=1e-12):
    theirs = dict(theirs.named_parameters())
    for name, parameter in ours.named_parameters():
        np.testing.assert_allclose(parameter.data, theirs[name].detach().numpy(), rtol=rtol, atol=atol, err_msg=name)


# time_sequence_prediction: sine waves, two LSTMCells, L-BFGS ------------------------------------------------------

def sequence_model(x, hidden=51):
    lib, nn = x.lib, x.nn

    class Sequence(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm1 = nn.LSTMCell(1, hidden)
            self.lstm2 = nn.LSTMCell(hidden, hidden)
            self.linear = nn.Linear(hidden, 1)
            self.dummy_param = nn.Parameter(lib.empty(0))

        def forward(self, input, future=0):
            outputs = []
            device = self.dummy_param.device
            h_t = lib.zeros(input.size(0), hidden, dtype=lib.double).to(device)
            c_t = lib.zeros(input.size(0), hidden, dtype=lib.double).to(device)
            h_t2 = lib.zeros(input.size(0), hidden, dtype=lib.double).to(device)
            c_t2 = lib.zeros(input.size(0), hidden, dtype=lib.double).to(device)
            for input_t in input.chunk(input.size(1), dim=1):
                h_t, c_t = self.lstm1(input_t, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            for _ in range(future):  # predict the future from the model's own outputs
                h_t, c_t = self.lstm1(output, (h_t, c_t))
                h_t2, c_t2 = self.lstm2(h_t, (h_t2, c_t2))
                output = self.linear(h_t2)
                outputs += [output]
            return lib.stack(outputs, 1).squeeze(2)

    return Sequence().double()


def sine_waves(count=5, length=7, period=20):
    """generate_sine_wave.py's data, shrunk: ``sin((t + shift) / period)`` with a random integer shift per wave."""
    shifts = np.random.default_rng(0).integers(-4 * period, 4 * period, count).reshape(count, 1)
    return np.sin((np.arange(length) + shifts) / 1.0 / period).astype("float64")


def sequence_program(x, seq, waves, steps=1, future=4):
    """train.py's loop: L-BFGS over the whole training set with a closure, then predictions under no_grad."""
    lib, nn, optim = x.lib, x.nn, x.optim
    data = lib.from_numpy(waves)
    input, target = data[2:, :-1], data[2:, 1:]
    test_input, test_target = data[:2, :-1], data[:2, 1:]
    criterion = nn.MSELoss()
    optimizer = optim.LBFGS(seq.parameters(), lr=0.8)
    losses, test_losses = [], []
    for _ in range(steps):
        def closure():
            optimizer.zero_grad()
            out = seq(input)
            loss = criterion(out, target)
            losses.append(loss.item())
            loss.backward()
            return loss

        optimizer.step(closure)
        with lib.no_grad():
            pred = seq(test_input, future=future)
            loss = criterion(pred[:, :-future], test_target)
            test_losses.append(loss.item())
            y = pred.cpu().detach().numpy()
    return losses, test_losses, y


def test_time_sequence_prediction_trains_eagerly_in_lockstep_with_torch():
    torch = require("torch")
    ours, theirs = _libraries("kiln"), _libraries("torch")
    kiln.manual_seed(0)
    seq = sequence_model(ours)
    twin = _twin(torch, seq, sequence_model(theirs))
    losses, test_losses, y = sequence_program(ours, seq, sine_waves())
    expected_losses, expected_test_losses, expected_y = sequence_program(theirs, twin, sine_waves())
    assert len(losses) == len(expected_losses) > 5  # every closure call of the line-search-free L-BFGS
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-10)
    np.testing.assert_allclose(test_losses, expected_test_losses, rtol=1e-10)
    np.testing.assert_allclose(y, expected_y, rtol=1e-9, atol=1e-12)
    _assert_same_parameters(seq, twin, rtol=1e-9)


def test_time_sequence_prediction_compiled_matches_torch():
    """The same model with L-BFGS's closure compiled (``loss_and_grad``) and the predictions by ``kiln.compile``."""
    torch = require("torch")
    ours, theirs = _libraries("kiln"), _libraries("torch")
    kiln.manual_seed(1)
    seq = sequence_model(ours)
    twin = _twin(torch, seq, sequence_model(theirs))
    waves = sine_waves()
    _, expected_test_losses, expected_y = sequence_program(theirs, twin, waves)
    optimizer = kiln.optim.LBFGS(seq.parameters(), lr=0.8)
    evaluate = kiln.optim.loss_and_grad(seq, ours.nn.MSELoss(), optimizer)
    optimizer.step(lambda: evaluate(waves[2:, :-1], waves[2:, 1:]))
    y = kiln.compile(lambda input: seq(input, future=4))(waves[:2, :-1])
    np.testing.assert_allclose(y, expected_y, rtol=1e-9, atol=1e-12)
    assert float(((y[:, :-4] - waves[:2, 1:]) ** 2).mean()) == pytest.approx(expected_test_losses[0], rel=1e-10)
    _assert_same_parameters(seq, twin, rtol=1e-9)


# reinforcement_learning: actor_critic.py and reinforce.py on the NumPy cart-pole --------------------------------------

class CartPoleEnv:
    """Gym's ``reset()`` / ``step(action) -> (state, reward, done, info)`` over the example's NumPy cart-pole."""

    def __init__(self, seed, max_steps):
        self.pole, self.max_steps = reinforce_cartpole.CartPole(np.random.default_rng(seed)), max_steps

    def reset(self):
        self.steps = 0
        return self.pole.reset()

    def step(self, action):
        state, done = self.pole.step(action)
        self.steps += 1
        return state, 1.0, done or self.steps == self.max_steps, {}


SavedAction = namedtuple("SavedAction", ["log_prob", "value"])


def actor_critic_model(x):
    nn, F = x.nn, x.F

    class Policy(nn.Module):
        """Actor and critic in one model: two heads on a shared hidden layer."""

        def __init__(self):
            super().__init__()
            self.affine1 = nn.Linear(4, 128)
            self.action_head = nn.Linear(128, 2)
            self.value_head = nn.Linear(128, 1)
            self.saved_actions = []
            self.rewards = []

        def forward(self, x):
            x = F.relu(self.affine1(x))
            action_prob = F.softmax(self.action_head(x), dim=-1)
            state_values = self.value_head(x)
            return action_prob, state_values

    return Policy().double()


def actor_critic_program(x, model, episodes=3, gamma=0.99, max_steps=12):
    """actor_critic.py's main loop: an action sampled per step, one Adam update per episode."""
    lib, F, Categorical = x.lib, x.F, x.Categorical
    optimizer = x.optim.Adam(model.parameters(), lr=3e-2)
    eps = np.finfo(np.float32).eps.item()
    env, losses = CartPoleEnv(seed=543, max_steps=max_steps), []

    def select_action(state):
        state = lib.from_numpy(state).double()
        probs, state_value = model(state)
        m = Categorical(probs)
        action = m.sample()
        model.saved_actions.append(SavedAction(m.log_prob(action), state_value))
        return action.item()

    def finish_episode():
        R = 0
        saved_actions = model.saved_actions
        policy_losses, value_losses, returns = [], [], []
        for r in model.rewards[::-1]:
            R = r + gamma * R
            returns.insert(0, R)
        returns = lib.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + eps)
        for (log_prob, value), R in zip(saved_actions, returns):
            advantage = R - value.item()
            policy_losses.append(-log_prob * advantage)
            value_losses.append(F.smooth_l1_loss(value, lib.tensor([R])))
        optimizer.zero_grad()
        loss = lib.stack(policy_losses).sum() + lib.stack(value_losses).sum()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        del model.rewards[:]
        del model.saved_actions[:]

    for _ in range(episodes):
        state, ep_reward = env.reset(), 0
        for _ in range(1, 10000):
            action = select_action(state)
            state, reward, done, _ = env.step(action)
            model.rewards.append(reward)
            ep_reward += reward
            if done:
                break
        finish_episode()
    return losses


def _replaying(torch, actions):
    """torch's ``Categorical`` whose ``sample()`` gives the actions kiln's drew, in order."""
    queue = list(actions)

    class Replayed(torch.distributions.Categorical):
        def sample(self, sample_shape=torch.Size()):
            return torch.tensor(queue.pop(0))

    return Replayed


def _recording(actions):
    class Recorded(kiln.distributions.Categorical):
        def sample(self, sample_shape=()):
            action = super().sample(sample_shape)
            actions.append(action.item())
            return action

    return Recorded


def test_actor_critic_trains_eagerly_in_lockstep_with_torch(float64_default):
    torch = require("torch")
    ours, theirs, actions = _libraries("kiln"), _libraries("torch"), []
    kiln.manual_seed(2)
    model = actor_critic_model(ours)
    twin = _twin(torch, model, actor_critic_model(theirs))
    losses = actor_critic_program(SimpleNamespace(**{**vars(ours), "Categorical": _recording(actions)}), model)
    expected = actor_critic_program(SimpleNamespace(**{**vars(theirs), "Categorical": _replaying(torch, actions)}), twin)
    np.testing.assert_allclose(losses, expected, rtol=1e-10)
    _assert_same_parameters(model, twin)
    assert set(actions) == {0, 1} and model.rewards == [] and model.saved_actions == []


def test_actor_critic_as_written_mixes_a_double_model_with_float32_returns():
    """Without ``set_default_dtype``, ``tensor(returns)`` and ``tensor([R])`` are float32 while the model is float64:
    ``smooth_l1_loss`` promotes, as PyTorch's. The float32 normalisation of the returns rounds differently in the
    two libraries (torch accumulates its ``std`` in float64), so the agreement is float32's."""
    torch = require("torch")
    ours, theirs, actions = _libraries("kiln"), _libraries("torch"), []
    kiln.manual_seed(8)
    model = actor_critic_model(ours)
    twin = _twin(torch, model, actor_critic_model(theirs))
    losses = actor_critic_program(SimpleNamespace(**{**vars(ours), "Categorical": _recording(actions)}), model, episodes=2)
    expected = actor_critic_program(SimpleNamespace(**{**vars(theirs), "Categorical": _replaying(torch, actions)}), twin, episodes=2)
    np.testing.assert_allclose(losses, expected, rtol=1e-5)
    _assert_same_parameters(model, twin, rtol=1e-5, atol=1e-7)


def reinforce_model(x, dropout):
    nn, F = x.nn, x.F

    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            self.affine1 = nn.Linear(4, 128)
            self.dropout = nn.Dropout(p=dropout)
            self.affine2 = nn.Linear(128, 2)
            self.saved_log_probs = []
            self.rewards = []

        def forward(self, x):
            x = self.affine1(x)
            x = self.dropout(x)
            x = F.relu(x)
            action_scores = self.affine2(x)
            return F.softmax(action_scores, dim=1)

    return Policy().double()


def reinforce_program(x, policy, episodes=3, gamma=0.99, max_steps=12):
    """reinforce.py's loop: ``-log_prob * return`` summed over an episode, one Adam step per episode."""
    from collections import deque

    lib, Categorical = x.lib, x.Categorical
    optimizer = x.optim.Adam(policy.parameters(), lr=1e-2)
    eps = np.finfo(np.float32).eps.item()
    env, losses = CartPoleEnv(seed=1, max_steps=max_steps), []

    def select_action(state):
        state = lib.from_numpy(state).double().unsqueeze(0)
        probs = policy(state)
        m = Categorical(probs)
        action = m.sample()
        policy.saved_log_probs.append(m.log_prob(action))
        return action.item()

    def finish_episode():
        R = 0
        policy_loss = []
        returns = deque()
        for r in policy.rewards[::-1]:
            R = r + gamma * R
            returns.appendleft(R)
        returns = lib.tensor(returns)
        returns = (returns - returns.mean()) / (returns.std() + eps)
        for log_prob, R in zip(policy.saved_log_probs, returns):
            policy_loss.append(-log_prob * R)
        optimizer.zero_grad()
        policy_loss = lib.cat(policy_loss).sum()
        policy_loss.backward()
        optimizer.step()
        losses.append(policy_loss.item())
        del policy.rewards[:]
        del policy.saved_log_probs[:]

    for _ in range(episodes):
        state, ep_reward = env.reset(), 0
        for _ in range(1, 10000):
            action = select_action(state)
            state, reward, done, _ = env.step(action)
            policy.rewards.append(reward)
            ep_reward += reward
            if done:
                break
        finish_episode()
    return losses


def test_reinforce_trains_eagerly_in_lockstep_with_torch(float64_default):
    torch = require("torch")
    ours, theirs, actions = _libraries("kiln"), _libraries("torch"), []
    kiln.manual_seed(3)
    policy = reinforce_model(ours, dropout=0.0)  # the original's p=0.6 draws masks no two libraries share
    twin = _twin(torch, policy, reinforce_model(theirs, dropout=0.0))
    losses = reinforce_program(SimpleNamespace(**{**vars(ours), "Categorical": _recording(actions)}), policy)
    expected = reinforce_program(SimpleNamespace(**{**vars(theirs), "Categorical": _replaying(torch, actions)}), twin)
    np.testing.assert_allclose(losses, expected, rtol=1e-10, atol=1e-13)
    _assert_same_parameters(policy, twin)


# vision_transformer/main.py on the 8x8 digits ------------------------------------------------------------------------

def vit_model(x, args):
    lib, nn = x.lib, x.nn

    class PatchExtractor(nn.Module):
        def __init__(self, patch_size=16):
            super().__init__()
            self.patch_size = patch_size

        def forward(self, input_data):
            batch_size, channels, height, width = input_data.size()
            assert height % self.patch_size == 0 and width % self.patch_size == 0
            num_patches = (height // self.patch_size) * (width // self.patch_size)
            patches = input_data.unfold(2, self.patch_size, self.patch_size).unfold(3, self.patch_size, self.patch_size)
            return patches.permute(0, 2, 3, 1, 4, 5).contiguous().view(batch_size, num_patches, -1)

    class InputEmbedding(nn.Module):
        def __init__(self, args):
            super().__init__()
            self.patch_size, self.latent_size = args.patch_size, args.latent_size
            self.device = lib.device("cpu")
            self.input_size = self.patch_size * self.patch_size * args.n_channels
            self.LinearProjection = nn.Linear(self.input_size, self.latent_size)
            self.class_token = nn.Parameter(lib.randn(args.batch_size, 1, self.latent_size).to(self.device))
            self.pos_embedding = nn.Parameter(lib.randn(args.batch_size, 1, self.latent_size).to(self.device))

        def forward(self, input_data):
            input_data = input_data.to(self.device)
            patches = PatchExtractor(patch_size=self.patch_size)(input_data)
            linear_projection = self.LinearProjection(patches).to(self.device)
            b, n, _ = linear_projection.shape
            linear_projection = lib.cat((self.class_token, linear_projection), dim=1)
            pos_embed = self.pos_embedding[:, :n + 1, :]
            linear_projection += pos_embed
            return linear_projection

    class EncoderBlock(nn.Module):
        def __init__(self, args):
            super().__init__()
            self.norm = nn.LayerNorm(args.latent_size)
            self.attention = nn.MultiheadAttention(args.latent_size, args.num_heads, dropout=args.dropout)
            self.enc_MLP = nn.Sequential(
                nn.Linear(args.latent_size, args.latent_size * 4), nn.GELU(), nn.Dropout(args.dropout),
                nn.Linear(args.latent_size * 4, args.latent_size), nn.Dropout(args.dropout))

        def forward(self, emb_patches):
            first_norm = self.norm(emb_patches)
            attention_out = self.attention(first_norm, first_norm, first_norm)[0]
            first_added = attention_out + emb_patches
            second_norm = self.norm(first_added)
            return self.enc_MLP(second_norm) + first_added

    class ViT(nn.Module):
        def __init__(self, args):
            super().__init__()
            self.embedding = InputEmbedding(args)
            self.encoders = nn.ModuleList([EncoderBlock(args) for _ in range(args.num_encoders)])
            self.MLPHead = nn.Sequential(nn.LayerNorm(args.latent_size), nn.Linear(args.latent_size, args.latent_size),
                                         nn.Linear(args.latent_size, args.num_classes))

        def forward(self, test_input):
            enc_output = self.embedding(test_input)
            for enc_layer in self.encoders:
                enc_output = enc_layer(enc_output)
            return self.MLPHead(enc_output[:, 0])

    return ViT(args).double()


VIT_ARGS = SimpleNamespace(patch_size=4, latent_size=16, n_channels=1, num_heads=2, num_encoders=2, dropout=0.0,
                           num_classes=10, batch_size=8, lr=1e-2, weight_decay=3e-2, epochs=2)


def digit_images(batches, batch_size, seed):
    from e2e.models import digit_batches

    return [(x.reshape(-1, 1, 8, 8).astype(np.float64) / 16.0, y) for x, y in digit_batches(batches, batch_size, seed)]


def _loader(x, batches, batch_size):
    """``DataLoader(TensorDataset(images, labels))`` of ``lib.utils.data`` over these batches, in order (the original
    shuffles; two libraries' shuffles cannot agree)."""
    images, labels = (np.concatenate(parts) for parts in zip(*batches))
    data = x.lib.utils.data
    return data.DataLoader(data.TensorDataset(x.lib.tensor(images), x.lib.tensor(labels)), batch_size=batch_size, shuffle=False)


def vit_program(x, model, args, train, val, path):
    """main.py's TrainEval with AdamW and a cosine schedule: train() / eval() epochs, the best weights saved."""
    lib, nn, optim = x.lib, x.nn, x.optim
    device = lib.device("cpu")
    train_loader, val_loader = _loader(x, train, args.batch_size), _loader(x, val, args.batch_size)
    optimizer = optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * len(train_loader))
    criterion = nn.CrossEntropyLoss()
    history, best_valid_loss = [], np.inf
    for _ in range(args.epochs):
        model.train()
        total_loss = 0.0
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            logits = model(images)
            loss = criterion(logits, labels)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item()
        model.eval()
        val_loss, correct = 0.0, 0
        with lib.no_grad():
            for images, labels in val_loader:
                images, labels = images.to(device), labels.to(device)
                logits = model(images)
                val_loss += criterion(logits, labels).item()
                correct += logits.argmax(dim=1).eq(labels).sum().item()
        history.append((total_loss / len(train_loader), val_loss / len(val_loader), correct))
        if val_loss < best_valid_loss:
            lib.save(model.state_dict(), path)
            best_valid_loss = val_loss
    model.load_state_dict(lib.load(path))
    return history


def test_vision_transformer_trains_eagerly_in_lockstep_with_torch(tmp_path):
    torch = require("torch")
    ours, theirs = _libraries("kiln"), _libraries("torch")
    kiln.manual_seed(4)
    model = vit_model(ours, VIT_ARGS)
    twin = _twin(torch, model, vit_model(theirs, VIT_ARGS))
    train, val = digit_images(2, 8, seed=0), digit_images(1, 8, seed=1)
    history = vit_program(ours, model, VIT_ARGS, train, val, str(tmp_path / "best-weights.kiln"))
    expected = vit_program(theirs, twin, VIT_ARGS, train, val, str(tmp_path / "best-weights.pt"))
    np.testing.assert_allclose(history, expected, rtol=1e-10)
    _assert_same_parameters(model, twin, atol=1e-11)  # the key projection's bias: zero gradient, rounding noise only
    reloaded = vit_model(ours, VIT_ARGS)
    reloaded.load_state_dict(kiln.load(str(tmp_path / "best-weights.pt")))  # torch's file, read by kiln
    _assert_same_parameters(reloaded, twin, rtol=0, atol=0)


def test_vision_transformer_compiled_matches_torch(tmp_path):
    """The same program with its train loop as one compiled step (the schedule's lr a graph input) and evaluation by
    ``kiln.compile`` of the model in eval mode. The class token has the batch size in its shape, as main.py's, so the
    batch dim is static."""
    torch = require("torch")
    ours, theirs, args = _libraries("kiln"), _libraries("torch"), VIT_ARGS
    kiln.manual_seed(5)
    model = vit_model(ours, args)
    twin = _twin(torch, model, vit_model(theirs, args))
    train, val = digit_images(2, 8, seed=2), digit_images(1, 8, seed=3)
    expected = vit_program(theirs, twin, args, train, val, str(tmp_path / "best-weights.pt"))
    optimizer = kiln.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = kiln.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * len(train))
    criterion = ours.nn.CrossEntropyLoss()
    step = kiln.compile_train_step(model, criterion, optimizer, batch_dim=None)
    history = []
    for _ in range(args.epochs):
        model.train()
        total_loss = 0.0
        for images, labels in train:
            total_loss += float(step(images, labels))
            scheduler.step()
        model.eval()
        predict = kiln.compile(model, batch_dim=None)
        logits = [predict(images) for images, _ in val]
        val_loss = sum(criterion(kiln.tensor(l), kiln.tensor(y)).item() for l, (_, y) in zip(logits, val))
        correct = sum(int((l.argmax(1) == y).sum()) for l, (_, y) in zip(logits, val))
        history.append((total_loss / len(train), val_loss / len(val), correct))
    np.testing.assert_allclose(history[-1], expected[-1], rtol=1e-10)  # torch reloaded its best epoch's weights
    np.testing.assert_allclose(history[0], expected[0], rtol=1e-10)


def _episode(env, act, max_steps):
    states, actions, state = [], [], env.reset()
    for _ in range(max_steps):
        action = int(act(state[None].astype(np.float64)).reshape(-1)[0])
        states.append(state)
        actions.append(action)
        state, _, done, _ = env.step(action)
        if done:
            break
    return np.array(states, np.float64), np.array(actions)


def _normalised_returns(length, gamma):
    returns = reinforce_cartpole.returns_to_go(length, gamma)
    return (returns - returns.mean()) / (returns.std(ddof=1) + np.finfo(np.float32).eps.item())


def test_reinforce_compiled_matches_torch(float64_default):
    """reinforce.py with the actions sampled by ``kiln.compile(..., seed=)`` and each episode's update one compiled step
    (the same loss, ``-(log_prob * normalised return).sum()``), against the eager torch program on those actions."""
    torch = require("torch")
    ours, theirs = _libraries("kiln"), _libraries("torch")
    kiln.manual_seed(6)
    policy = reinforce_model(ours, dropout=0.0)
    twin = _twin(torch, policy, reinforce_model(theirs, dropout=0.0))
    Categorical = kiln.distributions.Categorical
    act = kiln.compile(lambda state: Categorical(policy(state)).sample(), seed=0)

    def loss_fn(probs, target):
        return -(Categorical(probs).log_prob(target[:, 0].long()) * target[:, 1]).sum()

    step = kiln.compile_train_step(policy, loss_fn, kiln.optim.Adam(policy.parameters(), lr=1e-2))
    env, losses, drawn = CartPoleEnv(seed=1, max_steps=12), [], []
    for _ in range(3):
        states, actions = _episode(env, act, 12)
        drawn += actions.tolist()
        losses.append(float(step(states, np.stack([actions, _normalised_returns(len(actions), 0.99)], 1))))
    expected = reinforce_program(SimpleNamespace(**{**vars(theirs), "Categorical": _replaying(torch, drawn)}), twin)
    np.testing.assert_allclose(losses, expected, rtol=1e-10, atol=1e-13)
    _assert_same_parameters(policy, twin)


def test_actor_critic_compiled_matches_torch(float64_default):
    """actor_critic.py's update as one compiled step on a tuple-returning model: the policy term weighs ``-log_prob``
    by the advantage ``R - value.detach()`` (the original's ``value.item()``), the critic term is ``smooth_l1_loss``."""
    torch = require("torch")
    ours, theirs = _libraries("kiln"), _libraries("torch")
    kiln.manual_seed(7)
    model = actor_critic_model(ours)
    twin = _twin(torch, model, actor_critic_model(theirs))
    Categorical, F = kiln.distributions.Categorical, ours.F
    act = kiln.compile(lambda state: Categorical(model(state)[0]).sample(), seed=1)

    def loss_fn(outputs, target):
        probs, values = outputs
        actions, returns = target[:, 0].long(), target[:, 1]
        advantage = returns - values.squeeze(1).detach()
        return -(Categorical(probs).log_prob(actions) * advantage).sum() + F.smooth_l1_loss(values.squeeze(1), returns, reduction="sum")

    step = kiln.compile_train_step(model, loss_fn, kiln.optim.Adam(model.parameters(), lr=3e-2))
    env, losses, drawn = CartPoleEnv(seed=543, max_steps=12), [], []
    for _ in range(3):
        states, actions = _episode(env, act, 12)
        drawn += actions.tolist()
        losses.append(float(step(states, np.stack([actions, _normalised_returns(len(actions), 0.99)], 1))))
    expected = actor_critic_program(SimpleNamespace(**{**vars(theirs), "Categorical": _replaying(torch, drawn)}), twin)
    np.testing.assert_allclose(losses, expected, rtol=1e-10, atol=1e-13)
    _assert_same_parameters(model, twin)


@pytest.mark.parametrize("name", ["time_sequence", "actor_critic", "vision_transformer"])
def test_the_ported_models_export_to_onnx_with_torchs_outputs(name, tmp_path):
    """Each model exported (``kiln.export_onnx``) in float64 and run by onnxruntime gives torch's outputs (the ViT's
    GELU is written out from arithmetic: onnxruntime's Erf is float32-only)."""
    torch, ort = require("torch"), require("onnxruntime")
    ours, theirs = _libraries("kiln"), _libraries("torch")
    kiln.manual_seed(9)
    rng = np.random.default_rng(9)
    build, x = {
        "time_sequence": (sequence_model, rng.normal(size=(2, 6))),
        "actor_critic": (actor_critic_model, rng.normal(size=(3, 4))),
        "vision_transformer": (lambda lib: vit_model(lib, VIT_ARGS), rng.normal(size=(8, 1, 8, 8))),
    }[name]
    model = build(ours)
    twin = _twin(torch, model, build(theirs)).eval()
    path = str(tmp_path / f"{name}.onnx")
    kiln.export_onnx(model, [kiln.TensorSpec(x.shape, str(x.dtype))], path)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: x})
    with torch.no_grad():
        expected = twin(torch.tensor(x))
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(outputs) == len(expected)
    for output, value in zip(outputs, expected):
        np.testing.assert_allclose(output, value.numpy(), rtol=1e-12, atol=1e-12)


def test_the_programs_run_with_their_dropout_on():
    """The originals' dropout (reinforce.py's p=0.6, main.py's 0.1), which no lockstep can share: reinforce.py runs
    eagerly with it (each forward a new mask, repeated by ``kiln.manual_seed``), and the ViT trains compiled with it
    (the step's seed draws the masks: its graph has dropout ops) and predicts deterministically in eval mode."""
    ours = _libraries("kiln")
    kiln.manual_seed(10)
    policy = reinforce_model(ours, dropout=0.6)
    state = kiln.from_numpy(np.full((1, 4), 0.5))
    kiln.manual_seed(11)
    first = policy(state).numpy()
    assert not np.array_equal(first, policy(state).numpy())
    kiln.manual_seed(11)
    np.testing.assert_array_equal(policy(state).numpy(), first)
    assert np.isfinite(reinforce_program(ours, policy, episodes=1)).all()
    args = SimpleNamespace(**{**vars(VIT_ARGS), "dropout": 0.1})
    model = vit_model(ours, args)
    step = kiln.compile_train_step(model, ours.nn.CrossEntropyLoss(), kiln.optim.AdamW(model.parameters(), lr=1e-2), batch_dim=None, seed=0)
    images, labels = digit_images(1, 8, seed=4)[0]
    losses = [float(step(images, labels)) for _ in range(3)]
    assert np.isfinite(losses).all() and losses[2] < losses[0]
    assert sum(op.name == "nn.dropout" for op in step.graph.ops) >= 2 * args.num_encoders
    model.eval()
    np.testing.assert_array_equal(kiln.compile(model, batch_dim=None)(images), kiln.compile(model, batch_dim=None)(images))
