"""Layers, optimizers and step options on the CuPy backend's runtime (the NumPy stand-in for CuPy, fake_cupy.py):
three steps equal the NumPy backend's, and no step reads device data on the host.

``test_cupy_runtime_fake.py`` trains the benchmark models; this covers what they do not use: pooling, sigmoid,
LayerNorm, dropout, attention and a Transformer encoder layer, recurrent layers, upsampling and edge pads, gradient
accumulation and clipping, loss scaling, label smoothing, and every optimizer.
"""

from __future__ import annotations

import numpy as np
import pytest

import fake_cupy
import kiln
import kiln.nn as nn
import kiln.nn.functional as F


def images(rng):
    return rng.random((8, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 8)


def vectors(rng):
    return rng.standard_normal((8, 12)).astype(np.float32), rng.integers(0, 5, 8)


def sequences(rng):
    return rng.standard_normal((4, 6, 16)).astype(np.float32), rng.integers(0, 5, 4)


class PooledSequence(nn.Module):
    """A sequence layer, the mean over positions, a classifier."""

    def __init__(self, layer):
        super().__init__()
        self.layer, self.head = layer, nn.Linear(16, 5)

    def forward(self, x):
        out = self.layer(x, x, x)[0] if isinstance(self.layer, nn.MultiheadAttention) else self.layer(x)
        return self.head(out.mean(1))


class LastStep(nn.Module):
    """A recurrent layer over ``(N, L, 16)``, its last step's output, a classifier."""

    def __init__(self, layer, features):
        super().__init__()
        self.layer, self.head = layer, nn.Linear(features, 5)

    def forward(self, x):
        return self.head(self.layer(x)[0][:, -1])


def spatial():
    """Upsampling, an edge pad, a pixel shuffle and channel dropout (gathers and scatter-adds on inner axes)."""
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"), nn.ReflectionPad2d(1), nn.Conv2d(1, 4, 3), nn.Dropout2d(0.25),
                         nn.PixelShuffle(2), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(64, 10))


def mlp():
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 5))


MODELS = {
    "max_pool": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 10)), images),
    "avg_pool_strided_conv": (lambda: nn.Sequential(nn.Conv2d(1, 4, 3, stride=2), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4, 10)), images),
    "layer_norm_gelu_sigmoid": (lambda: nn.Sequential(nn.Linear(12, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 16), nn.Sigmoid(), nn.Linear(16, 5)), vectors),
    "dropout": (lambda: nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 5)), vectors),
    "attention": (lambda: PooledSequence(nn.MultiheadAttention(16, 2, batch_first=True)), sequences),
    "encoder_layer": (lambda: PooledSequence(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.0, batch_first=True)), sequences),
    "attention_dropout": (lambda: PooledSequence(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.2, batch_first=True)), sequences),
    "lstm": (lambda: LastStep(nn.LSTM(16, 8, num_layers=2, batch_first=True), 8), sequences),
    "gru_bidirectional": (lambda: LastStep(nn.GRU(16, 8, batch_first=True, bidirectional=True), 16), sequences),
    "spatial": (spatial, images),
}
OPTIONS = {"accumulate": {"accumulate": 2}, "clip_grad_norm": {"clip_grad_norm": 0.1}, "clip_grad_value": {"clip_grad_value": 0.01},
           "loss_scale": {"loss_scale": 128.0}}
OPTIMIZERS = {
    "sgd_nesterov_decay": lambda p: kiln.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "gd": lambda p: kiln.optim.GD(p, lr=0.1), "adamw": lambda p: kiln.optim.AdamW(p, lr=1e-2),
    "adam_amsgrad": lambda p: kiln.optim.Adam(p, lr=1e-2, amsgrad=True), "rmsprop": lambda p: kiln.optim.RMSprop(p, lr=1e-2),
    "adagrad": lambda p: kiln.optim.Adagrad(p, lr=1e-1),
}
CASES = [(m, "sgd_nesterov_decay", {}, F.cross_entropy) for m in MODELS]
CASES += [("mlp", "sgd_nesterov_decay", options, F.cross_entropy) for options in OPTIONS.values()]
CASES += [("mlp", optimizer, {}, F.cross_entropy) for optimizer in OPTIMIZERS if optimizer != "sgd_nesterov_decay"]
CASES += [("mlp", "adamw", {}, lambda logits, y: F.cross_entropy(logits, y, label_smoothing=0.1))]
NAMES = [f"{m}-{o}-{'-'.join(opts) or 'plain'}" for m, o, opts, _ in CASES[:-1]] + ["mlp-adamw-label_smoothing"]


def train(backend, model_name, optimizer, options, loss, syncs=None):
    make, batch = MODELS.get(model_name, (mlp, vectors))
    kiln.manual_seed(0)
    model = make()
    step = kiln.compile_train_step(model, loss, OPTIMIZERS[optimizer](model.parameters()), backend=backend, **options)
    rng = np.random.default_rng(1)
    losses = []
    for k in range(3):
        fake_cupy.SYNCS.clear()
        loss_value = step(*batch(rng))
        if k == 2 and syncs is not None:
            syncs.extend(fake_cupy.SYNCS)  # the last step, compiled and resident
        losses.append(float(loss_value))
    return losses, {name: value.copy() for name, value in model.state_dict().items()}


@pytest.mark.parametrize(("model_name", "optimizer", "options", "loss"), CASES, ids=NAMES)
def test_three_steps_equal_numpys_and_never_wait_for_the_device(fake, model_name, optimizer, options, loss):
    syncs: list[str] = []
    (losses, state), (cupy_losses, cupy_state) = train("numpy", model_name, optimizer, options, loss), \
        train("cupy", model_name, optimizer, options, loss, syncs)
    np.testing.assert_allclose(cupy_losses, losses, rtol=1e-4)
    for name, value in state.items():
        np.testing.assert_allclose(cupy_state[name], value, rtol=1e-3, atol=1e-5, err_msg=name)
    assert syncs == [], f"the step read device data on the host: {syncs}"


def test_fit_with_checkpoints_log_and_validation_on_cupy_matches_numpy(fake, tmp_path):
    """The step's losses stay on the device: fit's history, log, progress bar and checkpoints read them when they
    need them (a checkpoint's JSON and the log could not hold a device scalar before)."""
    import json

    from kiln.runtime.data import ArrayDataset, DataLoader

    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 12)).astype(np.float32), rng.integers(0, 5, 64)

    def fit(backend):
        kiln.manual_seed(0)
        model = mlp()
        step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.Adam(model.parameters(), lr=1e-2), backend=backend)
        history = kiln.fit(step, DataLoader(ArrayDataset(x, y), batch_size=16, prefetch=0), epochs=2, metrics=["accuracy"],
                           eval_loader=DataLoader(ArrayDataset(x, y), batch_size=16, prefetch=0), checkpoint_dir=str(tmp_path / backend),
                           checkpoint_every=3, log_path=str(tmp_path / f"{backend}.jsonl"), progress=backend == "cupy")
        return history, {name: value.copy() for name, value in model.state_dict().items()}

    (history, state), (cupy_history, cupy_state) = fit("numpy"), fit("cupy")
    np.testing.assert_allclose(cupy_history.losses, history.losses, rtol=1e-5)
    for numpy_epoch, cupy_epoch in zip(history.epochs, cupy_history.epochs):
        assert numpy_epoch.keys() == cupy_epoch.keys()
        np.testing.assert_allclose([cupy_epoch[k] for k in numpy_epoch], [numpy_epoch[k] for k in numpy_epoch], rtol=1e-5)
    for name, value in state.items():
        np.testing.assert_allclose(cupy_state[name], value, rtol=1e-4, atol=1e-6, err_msg=name)
    logged = [json.loads(line) for line in (tmp_path / "cupy.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in logged if r["kind"] == "step"] == pytest.approx(cupy_history.losses)
    assert sorted(p.name for p in (tmp_path / "cupy").iterdir())[-1] == "checkpoint-00000008.npz"


def test_a_fit_stopped_by_an_error_still_logs_every_finished_step(fake, tmp_path):
    """The log holds a device loss's record back one step; an error ending the run must not lose it."""
    import json

    from kiln.runtime.callbacks import Callback
    from kiln.runtime.data import ArrayDataset, DataLoader

    class FailAtStep3(Callback):
        def on_step_end(self, run, record):
            if record["step"] == 3:
                raise RuntimeError("stop here")

    rng = np.random.default_rng(0)
    kiln.manual_seed(0)
    model = mlp()
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.1), backend="cupy")
    loader = DataLoader(ArrayDataset(rng.standard_normal((64, 12)).astype(np.float32), rng.integers(0, 5, 64)), batch_size=16, prefetch=0)
    with pytest.raises(RuntimeError, match="stop here"):
        kiln.fit(step, loader, epochs=1, callbacks=[FailAtStep3()], log_path=str(tmp_path / "log.jsonl"), progress=False)
    logged = [json.loads(line)["step"] for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert logged == [1, 2]  # step 3's callbacks raised before the log saw it
