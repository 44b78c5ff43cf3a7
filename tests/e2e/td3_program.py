"""TD3 as sfujim/TD3 writes it (TD3.py's actor, twin critics and update, utils.py's ``ReplayBuffer``), small, written
once for ``torch`` being torch or kiln: the program of ``test_porting_probes_td3_dreamer_dt.py``, whose docstring says
what it covers."""

from __future__ import annotations

import copy

import numpy as np


HIDDEN, BATCH = 16, 6


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
