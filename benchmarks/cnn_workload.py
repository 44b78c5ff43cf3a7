"""W5 of ``train_step.py``: the CNN of ``examples/cnn_digits.py`` in kiln-numpy and in PyTorch.

Two 3x3 convolutions (1 -> 16 -> 32 channels, padding 1), each with ReLU and
2x2 max pooling (8x8 -> 4x4 -> 2x2), then a linear classifier; SGD with
momentum 0.9. PyTorch runs the same layers from the same weights (the
parameter names match ``torch.nn.Sequential``'s). Imported by
``train_step.py`` after it pins the thread pools.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from cnn_digits import cnn  # noqa: E402  (examples/ is not a package)
from torch_peer import torch_training_step  # noqa: E402

CHANNELS = (1, 16, 32)
SIDE, CLASSES, KERNEL = 8, 10, 3


@dataclass(frozen=True)
class CNNConfig:
    batch: int = 256
    lr: float = 0.05
    momentum: float = 0.9


def cnn_batch(config: CNNConfig) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((config.batch, 1, SIDE, SIDE), dtype=np.float32), rng.integers(0, CLASSES, config.batch)


def cnn_flops(config: CNNConfig) -> int:
    """Matmul FLOPs of one step: 3x the forward's, less the first convolution's input gradient (not computed)."""
    n, sides = config.batch, (SIDE, SIDE // 2)
    convolutions = [2 * n * side * side * c_out * c_in * KERNEL * KERNEL for side, c_in, c_out in zip(sides, CHANNELS, CHANNELS[1:])]
    head = 2 * n * CHANNELS[-1] * (SIDE // 4) ** 2 * CLASSES
    return 3 * (sum(convolutions) + head) - convolutions[0]


def kiln_cnn(config: CNNConfig) -> tuple[Any, Any]:
    """The model and its compiled (not yet traced) SGD-with-momentum training step."""
    import kiln
    import kiln.nn.functional as F

    kiln.manual_seed(0)
    model = cnn(CHANNELS[1:], CLASSES)
    return model, kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum))


def kiln_cnn_step(config: CNNConfig) -> tuple[Callable[[], object], Any, Any]:
    """The kiln step (compiled by its first call), the model and the step object."""
    model, step = kiln_cnn(config)
    x, y = cnn_batch(config)
    step(x, y)
    return (lambda: step(x, y)), model, step


def torch_cnn_step(model: Any, config: CNNConfig, threads: int, compiled: bool = False) -> Callable[[], object]:
    """The same network in PyTorch (weights copied from ``model``), SGD with momentum, one step per call."""
    import torch

    torch.set_num_threads(threads)
    nn = torch.nn
    (c0, c1, c2), classes = CHANNELS, CLASSES
    net = nn.Sequential(nn.Conv2d(c0, c1, KERNEL, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(c1, c2, KERNEL, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c2 * (SIDE // 4) ** 2, classes))
    net.load_state_dict({name: torch.from_numpy(np.array(value)) for name, value in model.state_dict().items()})
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum)
    x, y = (torch.from_numpy(a) for a in cnn_batch(config))
    loss_of = lambda inputs, targets: torch.nn.functional.cross_entropy(net(inputs), targets)  # noqa: E731
    return torch_training_step(optimizer, torch.compile(loss_of) if compiled else loss_of, x, y)
