"""Models shared by end-to-end tests: the demo MLP and its PyTorch twin."""

from __future__ import annotations

import numpy as np

import kiln.nn as nn
import kiln.nn.functional as F


class MLP(nn.Module):
    def __init__(self, sizes=(64, 128, 64, 10)):
        super().__init__()
        self.fc1 = nn.Linear(sizes[0], sizes[1])
        self.fc2 = nn.Linear(sizes[1], sizes[2])
        self.fc3 = nn.Linear(sizes[2], sizes[3])

    def forward(self, x):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def torch_mlp(torch, sizes=(64, 128, 64, 10)):
    class TorchMLP(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(sizes[0], sizes[1])
            self.fc2 = torch.nn.Linear(sizes[1], sizes[2])
            self.fc3 = torch.nn.Linear(sizes[2], sizes[3])

        def forward(self, x):
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))

    return TorchMLP()


def copy_into_torch(torch, kiln_model, torch_model) -> None:
    torch_model.load_state_dict({k: torch.tensor(np.array(v)) for k, v in kiln_model.state_dict().items()})


def digit_batches(count: int, batch_size: int = 32, seed: int = 0):
    """Batches of the bundled digits, the demo's data."""
    from kiln.runtime.data import load_digits

    x, y = load_digits()
    rng = np.random.default_rng(seed)
    return [(x[idx], y[idx]) for idx in (rng.choice(len(x), batch_size, replace=False) for _ in range(count))]
