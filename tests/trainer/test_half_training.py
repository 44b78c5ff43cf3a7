"""Training float16 and bfloat16 models in kiln and in PyTorch 2.13 (CPU, same half dtype) side by side.

An MLP, a small CNN and a tiny GPT (weight-tied, LayerNorm, attention) from the same weights take 20 steps of SGD
(momentum), Adam, AdamW and RMSprop on the same batches, compiled (``kiln.compile_train_step``) and eagerly
(``loss.backward(); optimizer.step()``). The optimizer updates agree with PyTorch's bit for bit given the same
gradients (tests/optim/test_half_optim.py); the gradients do not, by a few half ulps: kiln rounds some of PyTorch's
single kernels once per primitive (a Linear's matmul and bias add, cross-entropy's log-softmax), so about half the
logits of the first forward are one ulp apart. Hence the tolerances, in units of the dtype's epsilon ``eps``: losses
within 8 ulps of the loss; each parameter tensor within 5% (float16) or 10% (bfloat16) of PyTorch's in Frobenius norm, plus, for the adaptive
optimizers, ``steps * lr`` per element (a weight whose gradient is near zero can move by ``lr`` or more a step when its
rounding differs: float16 Adam's second moment underflows below 6e-8, and its step is then ``lr * g / eps``). These
are loose on purpose: they catch a wrong update rule, state dtype or hyper-parameter, not an ulp; the ulp-level
checks of the updates are in tests/optim/test_half_optim.py. Measured worst case (20 steps): losses 4 ulps.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from e2e.test_pytorch_source_compat import gpt
from half_lockstep import NUMPY_DTYPES, half_lockstep
from oracles import require_torch

STEPS = 20
RELATIVE = {"float16": 0.05, "bfloat16": 0.1}
"""Parameter tolerance relative to the tensor's norm; bfloat16's epsilon is 8 times float16's."""
OPTIMIZERS = {
    "SGD": dict(lr=0.1, momentum=0.9),
    "Adam": dict(lr=1e-3, eps=1e-4),
    "AdamW": dict(lr=1e-3, eps=1e-4, weight_decay=0.1),
    "RMSprop": dict(lr=1e-3, eps=1e-4),
}
"""eps 1e-4: PyTorch's default 1e-8 is 0 in float16, and its float16 Adam then divides by zero (kiln's too)."""


def mlp(lib, nn, F):
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def cnn(lib, nn, F):
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10))


def batches(model: str) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    if model == "mlp":
        return [(rng.random((16, 64), dtype=np.float32), rng.integers(0, 10, 16)) for _ in range(STEPS)]
    if model == "cnn":
        return [(rng.random((8, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 8)) for _ in range(STEPS)]
    return [(rng.integers(0, 17, (4, 8)), rng.integers(0, 17, 32)) for _ in range(STEPS)]


MODELS = {"mlp": mlp, "cnn": cnn, "gpt": gpt}


@pytest.fixture(scope="module")
def torch():
    """PyTorch, the oracle, on one thread."""
    torch = require_torch()
    torch.set_num_threads(1)
    return torch


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
@pytest.mark.parametrize("model", MODELS)
def test_half_training_follows_torch_step_by_step(torch, model, dtype, optimizer, compiled):
    eps = float(ml_dtypes.finfo(NUMPY_DTYPES[dtype]).eps)
    options = OPTIMIZERS[optimizer]
    drift = 0.0 if optimizer == "SGD" else STEPS * options["lr"]
    step_options = {"batch_dim": None} if model == "gpt" else {}
    runs = half_lockstep(torch, MODELS[model], dtype, optimizer, options, batches(model), compiled, **step_options)
    for index, (loss, expected, ours, theirs) in enumerate(runs):
        assert abs(loss - expected) <= 8 * eps * abs(expected), f"loss at step {index}: {loss} vs {expected}"
        for name, value in theirs.items():
            distance, size = float(np.linalg.norm(ours[name] - value)), float(np.linalg.norm(value))
            assert distance <= RELATIVE[dtype] * size + drift * value.size ** 0.5, f"{name} after step {index}: {distance} from PyTorch's (norm {size})"
    assert index == STEPS - 1


def test_a_bfloat16_mlp_learns_the_digits_compiled():
    from kiln.runtime.data import load_digits

    x, y = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[: len(x) * 4 // 5], order[len(x) * 4 // 5 :]
    kiln.manual_seed(0)
    model = kiln.nn.Sequential(kiln.nn.Linear(64, 64), kiln.nn.ReLU(), kiln.nn.Linear(64, 10)).bfloat16()
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.Adam(model.parameters(), lr=1e-2))
    inputs = x.astype(ml_dtypes.bfloat16)
    losses = []
    for epoch in range(8):
        for batch in np.array_split(rng.permutation(train), len(train) // 32):
            losses.append(float(step(inputs[batch], y[batch])))
    assert all(p.data.dtype == ml_dtypes.bfloat16 for p in model.parameters())
    logits = np.asarray(kiln.compile(model)(inputs[test]), np.float32)
    accuracy = float(np.mean(np.argmax(logits, axis=1) == y[test]))
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) / 4, (losses[:10], losses[-10:])
    assert accuracy > 0.9, accuracy
