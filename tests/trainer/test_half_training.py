"""Training float16 and bfloat16 models in kiln and in PyTorch 2.13 (CPU, same half dtype) side by side.

An MLP, a small CNN and a tiny GPT (weight-tied, LayerNorm, attention) from the same weights take 20 steps of SGD
(momentum), Adam, AdamW and RMSprop on the same batches, compiled (``kiln.compile_train_step``) and eagerly
(``loss.backward(); optimizer.step()``). The optimizer updates agree with PyTorch's bit for bit given the same
gradients (tests/optim/test_half_optim.py); the gradients do not, by a few half ulps: kiln rounds some of PyTorch's
single kernels once per primitive (a Linear's matmul and bias add, cross-entropy's log-softmax), so about half the
logits of the first forward are one ulp apart, and the two trajectories drift apart slowly. Hence the tolerances,
in units of the dtype's epsilon ``eps``, at step ``t`` (1-based): losses within 8 ulps of PyTorch's; each parameter
tensor ``p`` within ``4 eps t |p|`` of PyTorch's in Frobenius norm, plus ``0.5 lr t sqrt(numel)`` for the adaptive
optimizers (a weight whose gradient is near zero moves by up to ``lr`` a step, in either direction, when its rounding
differs). Measured: at most 0.72 of that bound (the GPT, float16 RMSprop), most runs under 0.4. Every other optimizer (Adagrad to Muon) trains the MLP 5 steps under the same bounds.

Also here: a bfloat16 MLP learns the digits compiled; half checkpoints keep their dtypes and resume bit for bit;
``model.half()`` after the optimizer is made; ``kiln.fit`` on a float16 model.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

import kiln
import kiln.nn.functional as F
from e2e.test_pytorch_source_compat import gpt
from exact_gradient import Scaled
from half_lockstep import NUMPY_DTYPES, half_lockstep
from oracles import require_torch

STEPS = 20
OPTIMIZERS = {
    "SGD": dict(lr=0.1, momentum=0.9),
    "Adam": dict(lr=1e-3, eps=1e-3),
    "AdamW": dict(lr=1e-3, eps=1e-3, weight_decay=0.1),
    "RMSprop": dict(lr=1e-3, eps=1e-4),
}
"""eps: PyTorch's default 1e-8 is 0 in float16, and its float16 Adam then divides by zero (kiln's too); Adam's 1e-3
keeps ``lr * m / eps`` near ``lr`` where float16's second moment underflows (below 6e-8), as mixed-precision
recipes raise it."""


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


def follows_torch(runs: Any, dtype: str, drift: float) -> int:
    """Check each step of a ``half_lockstep`` run against the bounds of the module docstring; returns the step count."""
    eps = float(ml_dtypes.finfo(NUMPY_DTYPES[dtype]).eps)
    t = 0
    for t, (loss, expected, ours, theirs) in enumerate(runs, start=1):
        assert abs(loss - expected) <= 8 * eps * abs(expected), f"loss at step {t}: {loss} vs {expected}"
        for name, value in theirs.items():
            distance, size = float(np.linalg.norm(ours[name] - value)), float(np.linalg.norm(value))
            bound = 4 * eps * t * size + drift * t * value.size ** 0.5
            assert distance <= bound, f"{name} after step {t}: {distance} from PyTorch's (bound {bound})"
    return t


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
@pytest.mark.parametrize("model", MODELS)
def test_half_training_follows_torch_step_by_step(torch, model, dtype, optimizer, compiled):
    options = OPTIMIZERS[optimizer]
    drift = 0.0 if optimizer == "SGD" else 0.5 * options["lr"]
    step_options = {"batch_dim": None} if model == "gpt" else {}
    runs = half_lockstep(torch, MODELS[model], dtype, optimizer, options, batches(model), compiled, **step_options)
    assert follows_torch(runs, dtype, drift) == STEPS


def test_a_bfloat16_keras_style_mlp_learns_the_digits_compiled():
    """Keras-style ``Dense`` layers, the second built lazily: ``.bfloat16()`` before ``build`` makes its weights bfloat16
    too (a lazy layer remembers the dtype), and ``build`` traces in the model's dtype."""
    from kiln.runtime.data import load_digits

    x, y = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    train, test = order[: len(x) * 4 // 5], order[len(x) * 4 // 5 :]
    kiln.manual_seed(0)
    model = kiln.nn.Sequential(kiln.nn.Dense(64, activation="relu", input_dim=64), kiln.nn.Dense(10)).bfloat16().build((64,))
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


def small_classifier(convert: str):
    kiln.manual_seed(0)
    model = getattr(kiln.nn.Sequential(kiln.nn.Linear(8, 4), kiln.nn.ReLU(), kiln.nn.Linear(4, 3)), convert)()
    optimizer = kiln.optim.Adam(model.parameters(), lr=1e-2, eps=1e-3)
    return model, optimizer, kiln.compile_train_step(model, F.cross_entropy, optimizer)


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_a_half_checkpoint_keeps_dtypes_and_resumes_exactly(tmp_path, dtype):
    """``step.save``/``step.load`` and ``kiln.save``/``kiln.load`` of a state_dict keep half parameters and state half,
    and training resumed from the checkpoint is the uninterrupted run, bit for bit."""
    convert = {"float16": "half", "bfloat16": "bfloat16"}[dtype]
    rng = np.random.default_rng(0)
    data = [(rng.random((6, 8)).astype(NUMPY_DTYPES[dtype]), rng.integers(0, 3, 6)) for _ in range(6)]
    model, optimizer, step = small_classifier(convert)
    for x, y in data[:3]:
        step(x, y)
    step.save(str(tmp_path / "step.kiln"))
    kiln.save(str(tmp_path / "state.pt"), {"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    loaded = kiln.load(str(tmp_path / "state.pt"))
    assert {np.asarray(v).dtype for v in loaded["model"].values()} == {np.dtype(NUMPY_DTYPES[dtype])}
    assert {np.asarray(a).dtype for state in loaded["optimizer"]["state"].values() for name, a in state.items() if name != "step"} == {np.dtype(NUMPY_DTYPES[dtype])}  # step: float32, as torch
    for x, y in data[3:]:
        step(x, y)
    resumed, resumed_optimizer, resumed_step = small_classifier(convert)
    resumed_step.load(str(tmp_path / "step.kiln"))
    for x, y in data[3:]:
        resumed_step(x, y)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert q.data.dtype == NUMPY_DTYPES[dtype]
        np.testing.assert_array_equal(np.asarray(q.data, np.float32), np.asarray(p.data, np.float32))


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
def test_model_half_after_the_optimizer_is_made_gets_half_state(torch, compiled):
    """``model.half()`` between ``Adam(model.parameters())`` and the first step: the state is made half (PyTorch's
    ``zeros_like(p)``) and the steps are PyTorch's bit for bit. After a float32 step, kiln casts the float32 state
    to half at the next step (PyTorch's Adam then raises: lerp of a float32 state toward a half gradient)."""
    rng = np.random.default_rng(0)
    value = rng.standard_normal(64).astype(np.float32)
    model, twin = Scaled(value.copy()), torch.nn.Parameter(torch.tensor(value))
    optimizer, reference = kiln.optim.Adam(model.parameters(), lr=1e-2, eps=1e-3), torch.optim.Adam([twin], lr=1e-2, eps=1e-3)
    model.half()
    twin.data = twin.data.half()
    step = kiln.compile_train_step(model, lambda out, target: out.sum(), optimizer)
    for index in range(4):
        x = rng.standard_normal((2, 64)).astype(np.float16)
        if compiled:
            step(x, np.zeros(2, np.float32))
        else:
            optimizer.zero_grad()
            model(kiln.tensor(x)).sum().backward()
            optimizer.step()
        twin.grad = torch.tensor(x).sum(0)
        reference.step()
        np.testing.assert_array_equal(np.asarray(model.w.data, np.float32), twin.detach().float().numpy(), err_msg=f"step {index}")
    assert {a.dtype for a in optimizer.state_of(model.w).values()} == {np.dtype(np.float16)}
    model.float()
    x = rng.standard_normal((2, 64)).astype(np.float32)
    step(x, np.zeros(2, np.float32)) if compiled else (model(kiln.tensor(x)).sum().backward(), optimizer.step())
    model.bfloat16()
    x = rng.standard_normal((2, 64)).astype(ml_dtypes.bfloat16)
    step(x, np.zeros(2, np.float32)) if compiled else (optimizer.zero_grad(), model(kiln.tensor(x)).sum().backward(), optimizer.step())
    assert model.w.data.dtype == ml_dtypes.bfloat16
    assert {a.dtype for a in optimizer.state_of(model.w).values()} == {np.dtype(ml_dtypes.bfloat16)}
    assert np.all(np.isfinite(np.asarray(model.w.data, np.float32)))


def test_fit_trains_a_float16_model_with_checkpoints_and_metrics(tmp_path):
    """``kiln.fit`` over a DataLoader of float16 digits: evaluation metrics, checkpoints and a resumed run keep the
    model and its AdamW state float16, and it learns."""
    from kiln.runtime.data import ArrayDataset, DataLoader, load_digits

    x, y = load_digits()
    x = x.astype(np.float16)

    def run(epochs: int, resume: bool, folder: str):
        kiln.manual_seed(0)
        model = kiln.nn.Sequential(kiln.nn.Linear(64, 64), kiln.nn.ReLU(), kiln.nn.Linear(64, 10)).half()
        optimizer = kiln.optim.AdamW(model.parameters(), lr=1e-2, eps=1e-3)
        step = kiln.compile_train_step(model, F.cross_entropy, optimizer)
        history = kiln.fit(step, DataLoader(ArrayDataset(x[:1400], y[:1400]), batch_size=32, shuffle=True, seed=0), epochs=epochs,
                           eval_loader=DataLoader(ArrayDataset(x[1400:], y[1400:]), batch_size=256), metrics=["accuracy"],
                           checkpoint_dir=str(tmp_path / folder), resume=resume, progress=False)
        return model, optimizer, history

    run(2, resume=False, folder="interrupted")
    model, optimizer, history = run(4, resume=True, folder="interrupted")
    uninterrupted, _, _ = run(4, resume=False, folder="uninterrupted")
    assert [record["epoch"] for record in history.epochs] == [0, 1, 2, 3]
    assert history.epochs[-1]["val_accuracy"] > 0.85, history.epochs
    assert {p.data.dtype for p in model.parameters()} == {np.dtype(np.float16)}
    assert {a.dtype for p in model.parameters() for a in optimizer.state_of(p).values()} == {np.dtype(np.float16)}
    for p, q in zip(model.parameters(), uninterrupted.parameters()):
        np.testing.assert_array_equal(np.asarray(p.data, np.float32), np.asarray(q.data, np.float32))


SWEEP = {
    "SGD": dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "Adagrad": dict(lr=1e-2, eps=1e-3),
    "Adadelta": dict(lr=1.0, eps=1e-3),
    "Adamax": dict(lr=2e-3, eps=1e-3),
    "NAdam": dict(lr=2e-3, eps=1e-3),
    "RAdam": dict(lr=1e-3, eps=1e-3),
    "ASGD": dict(lr=1e-2),
    "Rprop": dict(lr=1e-3),
    "Adafactor": dict(lr=1e-2),
    "Muon": dict(lr=2e-2),
}
"""The other optimizers, a few steps each; eps raised where PyTorch's default is 0 in float16 (Adagrad's 1e-10)."""


@pytest.mark.parametrize("compiled", [True, False], ids=["compiled", "eager"])
@pytest.mark.parametrize("optimizer", SWEEP)
@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_every_optimizer_trains_a_half_mlp_as_torch_does(torch, dtype, optimizer, compiled):
    """5 steps of the MLP (bias-free for Muon, which trains matrices only) with the same bounds as above."""
    options = SWEEP[optimizer]
    drift = 0.0 if optimizer in ("SGD", "ASGD") else 0.5 * options["lr"]
    make = mlp if optimizer != "Muon" else (lambda lib, nn, F: nn.Sequential(nn.Linear(64, 32, bias=False), nn.ReLU(), nn.Linear(32, 10, bias=False)))
    assert follows_torch(half_lockstep(torch, make, dtype, optimizer, options, batches("mlp")[:5], compiled), dtype, drift) == 5
