"""The model, data and optimizers the distributed tests and their MPI workers share (same init on every process)."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F

SIZES = (20, 32, 32, 24, 5)
"""A 4-layer MLP: in, three hidden widths, classes."""
BATCH = 32
STEPS = 20


class MLP4(nn.Module):
    def __init__(self, dtype: str = "float32") -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(SIZES[0], SIZES[1], dtype=dtype), nn.Linear(SIZES[1], SIZES[2], dtype=dtype)
        self.fc3, self.fc4 = nn.Linear(SIZES[2], SIZES[3], dtype=dtype), nn.Linear(SIZES[3], SIZES[4], dtype=dtype)

    def forward(self, x):
        return self.fc4(F.relu(self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))))


def make_model(seed: int = 0, dtype: str = "float32") -> MLP4:
    kiln.manual_seed(seed)
    return MLP4(dtype)


def make_optimizer(name: str, model: MLP4):
    if name == "sgd":
        return kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return kiln.optim.Adam(model.parameters(), lr=1e-2)


def dataset(steps: int = STEPS, batch: int = BATCH, dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((steps * batch, SIZES[0])).astype(dtype)
    y = rng.integers(0, SIZES[-1], steps * batch).astype(np.int64)
    return x, y


SEQUENCE = 2
"""Steps per sequence of the sequence-first ``(L, N, F)`` variant: ``dataset``'s rows regrouped."""


def sequence_first(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``x`` ``(L, N, F)`` and ``y`` ``(L, N)`` from ``dataset``'s rows, the batch at dim 1 (``N = rows / L``)."""
    return x.reshape(SEQUENCE, -1, x.shape[1]), y.reshape(SEQUENCE, -1)


def sequence_first_loss(logits, labels):
    """Cross-entropy over every ``(step, sequence)`` of sequence-first logits ``(L, N, C)`` and labels ``(L, N)``."""
    return F.cross_entropy(logits.reshape(-1, SIZES[-1]), labels.reshape(-1))


def train_sequence_first(accumulate: int = 4) -> dict[str, np.ndarray]:
    """The reference of the sequence-first pipeline: one process, ``batch_dim=1``, SGD, a batch of ``BATCH`` sequences
    per step until the data runs out."""
    model = make_model(0)
    step = kiln.compile_train_step(model, sequence_first_loss, make_optimizer("sgd", model), accumulate=accumulate, batch_dim=1)
    xs, ys = sequence_first(*dataset())
    losses = [step(xs[:, k : k + BATCH], ys[:, k : k + BATCH]) for k in range(0, xs.shape[1], BATCH)]
    return {"losses": np.array(losses), **{key: value.copy() for key, value in model.state_dict().items()}}


def train_single(name: str, dtype: str = "float32", accumulate: int = 1, steps: int = STEPS) -> dict[str, np.ndarray]:
    """The reference: one process, full batches, ``steps`` steps; returns the final parameters and the losses."""
    model = make_model(0, dtype)
    step = kiln.compile_train_step(model, F.cross_entropy, make_optimizer(name, model), accumulate=accumulate)
    x, y = dataset(dtype=dtype)
    losses = [step(x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH]) for k in range(steps)]
    return {"losses": np.array(losses), **{key: value.copy() for key, value in model.state_dict().items()}}


class MLP2(nn.Module):
    """The unsplit twin of the tensor-parallel worker's model."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(SIZES[0], SIZES[1]), nn.Linear(SIZES[1], SIZES[-1])

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def train_two_layers(steps: int) -> dict[str, np.ndarray]:
    kiln.manual_seed(0)
    model = MLP2()
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    x, y = dataset()
    losses = [step(x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH]) for k in range(steps)]
    return {"losses": np.array(losses), **{key: value.copy() for key, value in model.state_dict().items()}}


class ConvBN(nn.Module):
    """Two conv + BatchNorm2d blocks and a classifier: BatchNorm's batch statistics under data parallelism."""

    def __init__(self, dtype: str = "float64") -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1, dtype=dtype), nn.BatchNorm2d(4, dtype=dtype)
        self.conv2, self.bn2 = nn.Conv2d(4, 6, 3, padding=1, dtype=dtype), nn.BatchNorm2d(6, dtype=dtype)
        self.fc = nn.Linear(6 * 4 * 4, SIZES[-1], dtype=dtype)

    def forward(self, x):
        h = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(h.reshape(-1, 6 * 4 * 4))


def make_conv_bn(seed: int = 0) -> ConvBN:
    kiln.manual_seed(seed)
    return ConvBN()


def image_dataset(steps: int = STEPS, batch: int = BATCH) -> tuple[np.ndarray, np.ndarray]:
    """4x4 one-channel float64 images with an offset and scale, so the batch statistics are far from (0, 1)."""
    rng = np.random.default_rng(1)
    x = 3.0 + 2.0 * rng.standard_normal((steps * batch, 1, 4, 4))
    y = rng.integers(0, SIZES[-1], steps * batch).astype(np.int64)
    return x, y


def sgd(model: nn.Module):
    return kiln.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def train_conv_bn_single(steps: int) -> dict[str, np.ndarray]:
    """The BatchNorm reference: one process, full batches; final parameters, running statistics and losses."""
    model = make_conv_bn(0)
    step = kiln.compile_train_step(model, F.cross_entropy, sgd(model))
    x, y = image_dataset()
    losses = [step(x[k * BATCH : (k + 1) * BATCH], y[k * BATCH : (k + 1) * BATCH]) for k in range(steps)]
    return {"losses": np.array(losses), **{key: value.copy() for key, value in model.state_dict().items()}}
