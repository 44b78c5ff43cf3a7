"""REINFORCE on cart-pole: a policy network whose actions are sampled by a compiled function and whose update is one
compiled training step.

    python examples/reinforce_cartpole.py      # ~10 s; prints the mean episode length as the policy learns to balance

The environment is the classic cart-pole (Barto, Sutton and Anderson, 1983; Gym's constants), simulated in NumPy:
push the cart left or right, +1 reward per step while the pole stays within 12 degrees and the cart on the track,
at most ``MAX_STEPS`` steps. ``kiln.compile(act, seed=0)`` samples ``Categorical(logits=policy(obs)).sample()``
anew on every call; each episode's returns-to-go, normalized, weight ``-log pi(a | s)`` in the loss.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

import kiln
import kiln.nn as nn
from kiln.distributions import Categorical

MAX_STEPS = 200
GRAVITY, CART_MASS, POLE_MASS, HALF_POLE, FORCE, DT = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02


class CartPole:
    """Gym's CartPole-v1 dynamics (Euler steps), with its termination rules."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng

    def reset(self) -> np.ndarray:
        self.state = self.rng.uniform(-0.05, 0.05, 4)
        return self.state.astype(np.float32)

    def step(self, action: int) -> tuple[np.ndarray, bool]:
        x, x_dot, theta, theta_dot = self.state
        force = FORCE if action == 1 else -FORCE
        cos, sin = math.cos(theta), math.sin(theta)
        total = CART_MASS + POLE_MASS
        temp = (force + POLE_MASS * HALF_POLE * theta_dot**2 * sin) / total
        theta_acc = (GRAVITY * sin - cos * temp) / (HALF_POLE * (4.0 / 3.0 - POLE_MASS * cos**2 / total))
        x_acc = temp - POLE_MASS * HALF_POLE * theta_acc * cos / total
        self.state = np.array([x + DT * x_dot, x_dot + DT * x_acc, theta + DT * theta_dot, theta_dot + DT * theta_acc])
        done = abs(self.state[0]) > 2.4 or abs(self.state[2]) > 12 * math.pi / 180
        return self.state.astype(np.float32), bool(done)


def policy_network(hidden: int = 32) -> nn.Module:
    return nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 2))


def reinforce_loss(logits, target):
    """``target`` packs each step's action and normalized return-to-go: ``-(log pi(a | s) * G)``, averaged."""
    actions, returns = target[:, 0].long(), target[:, 1]
    return -(Categorical(logits=logits).log_prob(actions) * returns).mean()


def returns_to_go(length: int, gamma: float) -> np.ndarray:
    """``sum_k gamma^k r_{t+k}`` with reward 1 per step."""
    return (1 - gamma ** np.arange(length, 0, -1)) / (1 - gamma)


def run_episode(env: CartPole, act) -> tuple[np.ndarray, np.ndarray]:
    observations, actions = [], []
    observation, done = env.reset(), False
    while not done and len(actions) < MAX_STEPS:
        action = int(act(observation[None])[0])
        observations.append(observation)
        actions.append(action)
        observation, done = env.step(action)
    return np.array(observations), np.array(actions)


def train(episodes: int = 300, batch: int = 10, lr: float = 1e-2, gamma: float = 0.99, seed: int = 0, verbose: bool = True) -> list[int]:
    """Train with Adam on batches of ``batch`` episodes; returns every episode's length."""
    kiln.manual_seed(seed)
    policy = policy_network()
    act = kiln.compile(lambda obs: Categorical(logits=policy(obs)).sample(), seed=seed)
    step = kiln.compile_train_step(policy, reinforce_loss, kiln.optim.Adam(policy.parameters(), lr=lr))
    env, lengths = CartPole(np.random.default_rng(seed)), []
    for start in range(0, episodes, batch):
        runs = [run_episode(env, act) for _ in range(batch)]
        lengths += [len(actions) for _, actions in runs]
        returns = np.concatenate([returns_to_go(len(actions), gamma) for _, actions in runs])
        returns = (returns - returns.mean()) / (returns.std() + 1e-8)
        observations = np.concatenate([obs for obs, _ in runs])
        actions = np.concatenate([actions for _, actions in runs])
        step(observations, np.stack([actions, returns], axis=1).astype(np.float32))
        if verbose and (start // batch) % 5 == 4:
            print(f"episodes {start + batch:4d}  mean length of the last {batch}: {np.mean(lengths[-batch:]):6.1f}")
    return lengths


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=300)
    train(episodes=parser.parse_args().episodes)
