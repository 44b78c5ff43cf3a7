"""The onnxruntime backend keeps parameters and optimizer state in onnxruntime between steps."""

from __future__ import annotations

import numpy as np

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.runtime.executable import RESIDENT
from oracles import require


def make(backend, lr=0.1):
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.Adam(model.parameters(), lr=lr), backend=backend)
    return model, step


def batch(seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((6, 8)).astype(np.float32), rng.integers(0, 3, 6)


def test_no_host_copies_between_steps_and_values_appear_when_read():
    require("onnxruntime")
    model, step = make("numpy")
    ort_model, ort_step = make("onnxruntime")
    host_arrays = {name: p._data for name, p in ort_model.named_parameters()}
    initial = {name: a.copy() for name, a in host_arrays.items()}
    for seed in range(5):
        step(*batch(seed))
        ort_step(*batch(seed))
    executable = next(iter(ort_step.compiled.values())).executable
    fed = []
    original = executable._run
    executable._run = lambda *arrays: fed.append(arrays) or original(*arrays)
    ort_step(*batch(5))
    step(*batch(5))
    donated = set(executable.donations)
    assert donated and all(fed[0][i] is RESIDENT for i in donated)  # parameters and Adam state stayed in onnxruntime
    for name, array in host_arrays.items():
        np.testing.assert_array_equal(array, initial[name])  # not copied back after any step
    for name, value in model.state_dict().items():  # reading .data brings the newest value back
        np.testing.assert_allclose(ort_model.state_dict()[name], value, rtol=1e-5, atol=1e-6)
    assert host_arrays["0.weight"] is ort_model.state_dict()["0.weight"]  # into the same arrays


def test_writes_between_steps_reach_the_device():
    require("onnxruntime")
    model, step = make("numpy", lr=0.0)
    ort_model, ort_step = make("onnxruntime", lr=0.0)
    ort_step(*batch(0))
    step(*batch(0))
    for m in (model, ort_model):
        m.load_state_dict({name: np.full_like(value, 0.01) for name, value in m.state_dict().items()})
    np.testing.assert_allclose(ort_step(*batch(1)), step(*batch(1)), rtol=1e-6)
    with kiln.no_grad():  # as PyTorch's: an in-place write to a parameter needs gradients off
        ort_model[0].weight.copy_(np.zeros((16, 8), np.float32))
        model[0].weight.copy_(np.zeros((16, 8), np.float32))
    np.testing.assert_allclose(ort_step(*batch(2)), step(*batch(2)), rtol=1e-6)


def test_optimizer_state_comes_back_with_state_dict():
    require("onnxruntime")
    model, step = make("numpy")
    ort_model, ort_step = make("onnxruntime")
    for seed in range(3):
        step(*batch(seed))
        ort_step(*batch(seed))
    ours, theirs = ort_step.state_dict()["optimizer"]["state"], step.state_dict()["optimizer"]["state"]
    for name, entries in theirs.items():
        for key, value in entries.items():
            np.testing.assert_allclose(ours[name][key], value, rtol=1e-5, atol=1e-7, err_msg=f"{name}.{key}")


def _batch_norm_run(backend, write_at=None):
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    step = kiln.compile_train_step(model, F.cross_entropy, kiln.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), backend=backend)
    rng = np.random.default_rng(0)
    losses = []
    for k in range(4):
        losses.append(float(step(rng.random((16, 1, 8, 8), dtype=np.float32), rng.integers(0, 10, 16))))
        if k == write_at:
            model[1].running_mean.data[...] = 5.0  # a host write between steps reaches the next step
    return losses, {name: value.copy() for name, value in model.state_dict().items()}, step


def test_batch_norm_buffers_stay_in_onnxruntime_and_match_numpy():
    """Running statistics and the 0-d update counter are donated like parameters: they stay in onnxruntime between
    steps, appear when read, and a host write is uploaded. (0-d inputs are bound as 0-d: ``np.ascontiguousarray``
    made the counter 1-d, which onnxruntime then returned.)"""
    require("onnxruntime")
    for write_at in (None, 1):
        (losses, state, _), (ort_losses, ort_state, ort_step) = _batch_norm_run("numpy", write_at), _batch_norm_run("onnxruntime", write_at)
        np.testing.assert_allclose(ort_losses, losses, rtol=1e-5)
        for name, value in state.items():
            np.testing.assert_allclose(ort_state[name], value, rtol=1e-4, atol=1e-6, err_msg=f"{name} (host write after step {write_at})")
        assert ort_state["1.num_batches_tracked"].shape == () and int(ort_state["1.num_batches_tracked"]) == 4
    executable = next(iter(ort_step.compiled.values())).executable
    buffers = {i for i, value in enumerate(executable.graph.inputs) if "running" in (value.name_hint or "") or "num_batches" in (value.name_hint or "")}
    assert buffers and buffers <= set(executable.donations), "BatchNorm's buffers are donated"
