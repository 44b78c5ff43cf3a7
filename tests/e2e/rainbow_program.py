"""Kaixhin/Rainbow as it writes it (``torch`` is torch or kiln): ``model.py``'s ``NoisyLinear`` and ``DQN``,
``agent.py``'s ``Agent`` and ``memory.py``'s segment tree and prioritized sampling, tiny, for
``test_porting_probes_rainbow_a2c_vtrace.py``. Where the two libraries' generators differ kiln's run draws and records
and torch's run replays (``KilnDrawsTorchReplays``); where the reference hard-codes float32 for the sampled states and
n-step rewards (a float32 ``torch.matmul``, whose last bit differs between libraries) the float64 runs give
``float_dtype``, what a float64 user changes; the nonterminal flags and importance weights stay float32."""

from __future__ import annotations

import math

import numpy as np

from e2e.probe_lockstep import array


class KilnDrawsTorchReplays:
    """``draw(lib, make)``: kiln's run calls ``make()`` and records the values; torch's run gets the recorded values
    in the same order (its generator draws other numbers for a seed)."""

    def __init__(self):
        self.recorded, self.replayed = [], 0

    def draw(self, lib, make):
        if lib.__name__ == "kiln":
            value = make()
            self.recorded.append(array(value))
            return value
        self.replayed += 1
        return lib.tensor(self.recorded[self.replayed - 1])


# --- Rainbow (Kaixhin/Rainbow) ---------------------------------------------------------------------------------------

class RainbowArgs:
    atoms, V_min, V_max, batch_size, multi_step, discount, norm_clip = 11, -2.0, 2.0, 4, 3, 0.9, 10.0
    history_length, hidden_size, noisy_std, learning_rate, adam_eps = 2, 8, 0.5, 1e-2, 1.5e-4
    priority_exponent, priority_weight, frame = 0.5, 0.4, 10


def rainbow_model(torch, nn, F, draws):
    """model.py's ``NoisyLinear`` and ``DQN`` (the data-efficient architecture, tiny); ``_scale_noise`` draws through
    ``draws``."""

    class NoisyLinear(nn.Module):
        def __init__(self, in_features, out_features, std_init=0.5):
            super(NoisyLinear, self).__init__()
            self.in_features = in_features
            self.out_features = out_features
            self.std_init = std_init
            self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
            self.weight_sigma = nn.Parameter(torch.empty(out_features, in_features))
            self.register_buffer('weight_epsilon', torch.empty(out_features, in_features))
            self.bias_mu = nn.Parameter(torch.empty(out_features))
            self.bias_sigma = nn.Parameter(torch.empty(out_features))
            self.register_buffer('bias_epsilon', torch.empty(out_features))
            self.reset_parameters()
            self.reset_noise()

        def reset_parameters(self):
            mu_range = 1 / math.sqrt(self.in_features)
            self.weight_mu.data.uniform_(-mu_range, mu_range)
            self.weight_sigma.data.fill_(self.std_init / math.sqrt(self.in_features))
            self.bias_mu.data.uniform_(-mu_range, mu_range)
            self.bias_sigma.data.fill_(self.std_init / math.sqrt(self.out_features))

        def _scale_noise(self, size):
            x = draws.draw(torch, lambda: torch.randn(size, device=self.weight_mu.device))
            return x.sign().mul_(x.abs().sqrt_())

        def reset_noise(self):
            epsilon_in = self._scale_noise(self.in_features)
            epsilon_out = self._scale_noise(self.out_features)
            self.weight_epsilon.copy_(epsilon_out.ger(epsilon_in))
            self.bias_epsilon.copy_(epsilon_out)

        def forward(self, input):
            if self.training:
                return F.linear(input, self.weight_mu + self.weight_sigma * self.weight_epsilon,
                                self.bias_mu + self.bias_sigma * self.bias_epsilon)
            else:
                return F.linear(input, self.weight_mu, self.bias_mu)

    class DQN(nn.Module):
        def __init__(self, args, action_space):
            super(DQN, self).__init__()
            self.atoms = args.atoms
            self.action_space = action_space
            self.convs = nn.Sequential(nn.Conv2d(args.history_length, 4, 5, stride=5, padding=0), nn.ReLU())
            self.conv_output_size = 16
            self.fc_h_v = NoisyLinear(self.conv_output_size, args.hidden_size, std_init=args.noisy_std)
            self.fc_h_a = NoisyLinear(self.conv_output_size, args.hidden_size, std_init=args.noisy_std)
            self.fc_z_v = NoisyLinear(args.hidden_size, self.atoms, std_init=args.noisy_std)
            self.fc_z_a = NoisyLinear(args.hidden_size, action_space * self.atoms, std_init=args.noisy_std)

        def forward(self, x, log=False):
            x = self.convs(x)
            x = x.view(-1, self.conv_output_size)
            v = self.fc_z_v(F.relu(self.fc_h_v(x)))  # Value stream
            a = self.fc_z_a(F.relu(self.fc_h_a(x)))  # Advantage stream
            v, a = v.view(-1, 1, self.atoms), a.view(-1, self.action_space, self.atoms)
            q = v + a - a.mean(1, keepdim=True)  # Combine streams
            if log:  # Use log softmax for numerical stability
                q = F.log_softmax(q, dim=2)  # Log probabilities with action over second dimension
            else:
                q = F.softmax(q, dim=2)  # Probabilities with action over second dimension
            return q

        def reset_noise(self):
            for name, module in self.named_children():
                if 'fc' in name:
                    module.reset_noise()

    return DQN


class SegmentTree():
    """memory.py's sum tree (NumPy), without the stored transitions: ``append``, ``update``, ``find``, ``total``."""

    def __init__(self, size):
        self.index = 0
        self.size = size
        self.full = False  # Used to track actual capacity
        self.tree_start = 2**(size - 1).bit_length() - 1  # Put all used node leaves on last tree level
        self.sum_tree = np.zeros((self.tree_start + self.size,), dtype=np.float32)
        self.max = 1  # Initial max value to return (1 = 1^ω)

    def _update_nodes(self, indices):
        children_indices = indices * 2 + np.expand_dims([1, 2], axis=1)
        self.sum_tree[indices] = np.sum(self.sum_tree[children_indices], axis=0)

    def _propagate(self, indices):
        parents = (indices - 1) // 2
        unique_parents = np.unique(parents)
        self._update_nodes(unique_parents)
        if parents[0] != 0:
            self._propagate(parents)

    def _propagate_index(self, index):
        parent = (index - 1) // 2
        left, right = 2 * parent + 1, 2 * parent + 2
        self.sum_tree[parent] = self.sum_tree[left] + self.sum_tree[right]
        if parent != 0:
            self._propagate_index(parent)

    def update(self, indices, values):
        self.sum_tree[indices] = values  # Set new values
        self._propagate(indices)  # Propagate values
        current_max_value = np.max(values)
        self.max = max(current_max_value, self.max)

    def _update_index(self, index, value):
        self.sum_tree[index] = value  # Set new value
        self._propagate_index(index)  # Propagate value
        self.max = max(value, self.max)

    def append(self, value):
        self._update_index(self.index + self.tree_start, value)  # Update tree
        self.index = (self.index + 1) % self.size  # Update index
        self.full = self.full or self.index == 0  # Save when capacity reached
        self.max = max(value, self.max)

    def _retrieve(self, indices, values):
        children_indices = (indices * 2 + np.expand_dims([1, 2], axis=1))  # Make matrix of children indices
        if children_indices[0, 0] >= self.sum_tree.shape[0]:
            return indices
        elif children_indices[0, 0] >= self.tree_start:
            children_indices = np.minimum(children_indices, self.sum_tree.shape[0] - 1)
        left_children_values = self.sum_tree[children_indices[0]]
        successor_choices = np.greater(values, left_children_values).astype(np.int32)
        successor_indices = children_indices[successor_choices, np.arange(indices.size)]
        successor_values = values - successor_choices * left_children_values
        return self._retrieve(successor_indices, successor_values)

    def find(self, values):
        indices = self._retrieve(np.zeros(values.shape, dtype=np.int32), values)
        data_index = indices - self.tree_start
        return (self.sum_tree[indices], data_index, indices)

    def total(self):
        return self.sum_tree[0]


class ReplayMemory():
    """memory.py's prioritized n-step memory, its frames stacked ahead of time (``states``, ``next_states`` uint8,
    ``rewards`` the n rewards, ``nonterminal``); sampling by segments from a seeded NumPy generator."""

    def __init__(self, torch, args, transitions, seed=0, float_dtype=None):
        self.torch, self.float_dtype = torch, float_dtype or torch.float32
        self.capacity, self.history, self.n = len(transitions["action"]), args.history_length, args.multi_step
        self.priority_weight, self.priority_exponent = args.priority_weight, args.priority_exponent
        self.n_step_scaling = torch.tensor([args.discount ** i for i in range(self.n)], dtype=self.float_dtype)
        self.data, self.transitions, self.rng = transitions, SegmentTree(self.capacity), np.random.default_rng(seed)
        for _ in range(self.capacity):
            self.transitions.append(self.transitions.max)

    def _get_samples_from_segments(self, batch_size, p_total):
        torch = self.torch
        segment_length = p_total / batch_size
        segment_starts = np.arange(batch_size) * segment_length
        samples = self.rng.uniform(0.0, segment_length, [batch_size]) + segment_starts
        probs, idxs, tree_idxs = self.transitions.find(samples)
        states = torch.tensor(self.data["state"][idxs], dtype=self.float_dtype).div_(255)
        next_states = torch.tensor(self.data["next_state"][idxs], dtype=self.float_dtype).div_(255)
        actions = torch.tensor(np.copy(self.data["action"][idxs]), dtype=torch.int64)
        rewards = torch.tensor(np.copy(self.data["rewards"][idxs]), dtype=self.float_dtype)
        R = torch.matmul(rewards, self.n_step_scaling)
        nonterminals = torch.tensor(np.expand_dims(self.data["nonterminal"][idxs], axis=1), dtype=torch.float32)
        return probs, idxs, tree_idxs, states, actions, R, next_states, nonterminals

    def sample(self, batch_size):
        p_total = self.transitions.total()
        probs, idxs, tree_idxs, states, actions, returns, next_states, nonterminals = \
            self._get_samples_from_segments(batch_size, p_total)
        probs = probs / p_total
        capacity = self.capacity if self.transitions.full else self.transitions.index
        weights = (capacity * probs) ** -self.priority_weight
        weights = self.torch.tensor(weights / weights.max(), dtype=self.torch.float32)
        return tree_idxs, states, actions, returns, next_states, nonterminals, weights

    def update_priorities(self, idxs, priorities):
        priorities = np.power(priorities, self.priority_exponent)
        self.transitions.update(idxs, priorities)


def rainbow_transitions(args, action_space, capacity=8, seed=0):
    """Stacked uint8 frames, n-step rewards chosen so Tz lands on the support (b integral: the ``l == u`` fixes) and
    past Vmax/Vmin (the clamp), terminal and not."""
    rng = np.random.default_rng(seed)
    shape = (capacity, args.history_length, args.frame, args.frame)
    rewards = rng.choice([0.0, 1.0, -1.0, 2.5, -3.0, 0.4], (capacity, args.multi_step))
    rewards[:2] = [[0.0, 0.0, 0.0], [3.0, 0.0, 0.0]]
    return {"state": rng.integers(0, 256, shape, dtype=np.uint8), "next_state": rng.integers(0, 256, shape, dtype=np.uint8),
            "action": rng.integers(0, action_space, capacity), "rewards": rewards,
            "nonterminal": np.array([0, 0, 1, 1, 0, 1, 1, 0], dtype=bool)[:capacity]}


def rainbow_agent(torch, nn, F, DQN, args, action_space):
    """agent.py's ``Agent`` (``learn`` split as ``loss_of`` and the step, so the update can be one compiled graph)."""
    optim = torch.optim
    clip_grad_norm_ = nn.utils.clip_grad_norm_

    class Agent():
        def __init__(self, online_net, target_net):
            self.action_space = action_space
            self.atoms = args.atoms
            self.Vmin = args.V_min
            self.Vmax = args.V_max
            self.support = torch.linspace(args.V_min, args.V_max, self.atoms)  # Support (range) of z
            self.delta_z = (args.V_max - args.V_min) / (self.atoms - 1)
            self.batch_size = args.batch_size
            self.n = args.multi_step
            self.discount = args.discount
            self.norm_clip = args.norm_clip
            self.online_net = online_net
            self.online_net.train()
            self.target_net = target_net
            self.update_target_net()
            self.target_net.train()
            for param in self.target_net.parameters():
                param.requires_grad = False
            self.optimiser = optim.Adam(self.online_net.parameters(), lr=args.learning_rate, eps=args.adam_eps)

        def reset_noise(self):
            self.online_net.reset_noise()

        def act(self, state):
            with torch.no_grad():
                return (self.online_net(state.unsqueeze(0)) * self.support).sum(2).argmax(1).item()

        def loss_of(self, states, actions, returns, next_states, nonterminals):
            log_ps = self.online_net(states, log=True)  # Log probabilities log p(s_t, ·; θonline)
            log_ps_a = log_ps[range(self.batch_size), actions]  # log p(s_t, a_t; θonline)

            with torch.no_grad():
                pns = self.online_net(next_states)  # Probabilities p(s_t+n, ·; θonline)
                dns = self.support.expand_as(pns) * pns  # Distribution d_t+n = (z, p(s_t+n, ·; θonline))
                argmax_indices_ns = dns.sum(2).argmax(1)  # argmax_a[(z, p(s_t+n, a; θonline))]
                pns = self.target_net(next_states)  # Probabilities p(s_t+n, ·; θtarget)
                pns_a = pns[range(self.batch_size), argmax_indices_ns]  # Double-Q probabilities

                # Compute Tz (Bellman operator T applied to z)
                Tz = returns.unsqueeze(1) + nonterminals * (self.discount ** self.n) * self.support.unsqueeze(0)
                Tz = Tz.clamp(min=self.Vmin, max=self.Vmax)  # Clamp between supported values
                # Compute L2 projection of Tz onto fixed support z
                b = (Tz - self.Vmin) / self.delta_z  # b = (Tz - Vmin) / Δz
                l, u = b.floor().to(torch.int64), b.ceil().to(torch.int64)
                # Fix disappearing probability mass when l = b = u (b is int)
                l[(u > 0) * (l == u)] -= 1
                u[(l < (self.atoms - 1)) * (l == u)] += 1

                # Distribute probability of Tz
                m = states.new_zeros(self.batch_size, self.atoms)
                offset = torch.linspace(0, ((self.batch_size - 1) * self.atoms), self.batch_size).unsqueeze(1).expand(
                    self.batch_size, self.atoms).to(actions)
                m.view(-1).index_add_(0, (l + offset).view(-1), (pns_a * (u.float() - b)).view(-1))
                m.view(-1).index_add_(0, (u + offset).view(-1), (pns_a * (b - l.float())).view(-1))

            loss = -torch.sum(m * log_ps_a, 1)  # Cross-entropy loss (minimises DKL(m||p(s_t, a_t)))
            return loss

        def step(self, states, actions, returns, next_states, nonterminals, weights):
            loss = self.loss_of(states, actions, returns, next_states, nonterminals)
            self.online_net.zero_grad()
            (weights * loss).mean().backward()  # Backpropagate importance-weighted minibatch loss
            clip_grad_norm_(self.online_net.parameters(), self.norm_clip)  # Clip gradients by L2 norm
            self.optimiser.step()
            return loss.detach()

        def learn(self, mem, step=None):
            idxs, states, actions, returns, next_states, nonterminals, weights = mem.sample(self.batch_size)
            self.target_net.reset_noise()  # Sample new target net noise (learn draws it before pns)
            loss = (step or self.step)(states, actions, returns, next_states, nonterminals, weights)
            mem.update_priorities(idxs, loss.detach().cpu().numpy())  # Update priorities of sampled transitions
            return loss

        def update_target_net(self):
            self.target_net.load_state_dict(self.online_net.state_dict())

    return Agent
