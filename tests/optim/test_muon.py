"""Muon against ``torch.optim.Muon``.

PyTorch runs Muon's Newton-Schulz iteration in bfloat16; kiln in the parameter's dtype. The float64 oracle is
PyTorch's own Muon with ``Tensor.bfloat16`` made a copy in the same dtype (``torch_muon_in_float64``), so every other
line of its update is PyTorch's; the stock bfloat16 Muon is compared in direction only.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import numpy as np
import pytest

import kiln
import kiln.nn as nn
import kiln.nn.functional as F
from kiln.optim import Muon
from oracles import require

SIZES = (10, 16, 16, 4)
"""Weights (16, 10), (16, 16) and (4, 16): tall (iterated transposed), square and wide."""


@contextlib.contextmanager
def torch_muon_in_float64(torch: Any) -> Iterator[None]:
    """``Tensor.bfloat16`` as a copy (not the tensor itself: PyTorch's iteration divides it in place)."""
    original = torch.Tensor.bfloat16
    torch.Tensor.bfloat16 = lambda self, *args, **kwargs: self.clone()
    try:
        yield
    finally:
        torch.Tensor.bfloat16 = original


def bias_free_mlp(torch: Any, dtype: str) -> tuple[Any, Any]:
    """The same three-layer tanh MLP without biases in kiln and in PyTorch."""
    kiln.manual_seed(3)
    model = nn.Sequential(nn.Linear(SIZES[0], SIZES[1], bias=False, dtype=dtype), nn.Tanh(),
                          nn.Linear(SIZES[1], SIZES[2], bias=False, dtype=dtype), nn.Tanh(),
                          nn.Linear(SIZES[2], SIZES[3], bias=False, dtype=dtype))
    twin = torch.nn.Sequential(torch.nn.Linear(SIZES[0], SIZES[1], bias=False), torch.nn.Tanh(),
                               torch.nn.Linear(SIZES[1], SIZES[2], bias=False), torch.nn.Tanh(),
                               torch.nn.Linear(SIZES[2], SIZES[3], bias=False)).to(getattr(torch, dtype))
    twin.load_state_dict({k: torch.tensor(np.array(v)) for k, v in model.state_dict().items()})
    return model, twin


def batches(count: int, dtype: str, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((24, SIZES[0])).astype(dtype), rng.integers(0, SIZES[-1], 24)) for _ in range(count)]


def torch_step(torch: Any, twin: Any, optimizer: Any, x: np.ndarray, y: np.ndarray) -> float:
    optimizer.zero_grad()
    loss = torch.nn.functional.cross_entropy(twin(torch.tensor(x)), torch.tensor(y))
    loss.backward()
    optimizer.step()
    return loss.item()


OPTIONS = [
    dict(lr=0.02),
    dict(lr=0.05, nesterov=False, weight_decay=0.0),
    dict(lr=0.01, momentum=0.9, adjust_lr_fn="match_rms_adamw"),
    dict(lr=0.03, momentum=0.0, ns_steps=3, ns_coefficients=(3.0, -3.2, 1.2), eps=1e-3, adjust_lr_fn="original"),
]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_float64_matches_torch_muon_for_15_steps(torch, options):
    model, twin = bias_free_mlp(torch, "float64")
    step = kiln.compile_train_step(model, F.cross_entropy, Muon(model.parameters(), **options))
    theirs = torch.optim.Muon(twin.parameters(), **options)
    with torch_muon_in_float64(torch):
        for x, y in batches(15, "float64"):
            np.testing.assert_allclose(step(x, y), torch_step(torch, twin, theirs, x, y), rtol=1e-10)
    for name, value in twin.state_dict().items():
        np.testing.assert_allclose(model.state_dict()[name], value.numpy(), rtol=1e-9, atol=1e-12, err_msg=name)
    buffers = [theirs.state[p]["momentum_buffer"].numpy() for p in twin.parameters()]
    for param, buffer in zip(model.parameters(), buffers):
        np.testing.assert_allclose(step.optimizer.state_of(param)["momentum_buffer"], buffer, rtol=1e-9, atol=1e-12)


def test_float32_update_points_where_torchs_bfloat16_update_does(torch):
    """Stock PyTorch orthogonalizes in bfloat16: one step's parameter change agrees in direction and size, not in
    digits (cosines 0.9998, 0.987 and 0.954 for the tall, square and wide weights; sizes within 5%)."""
    model, twin = bias_free_mlp(torch, "float32")
    before = [p.data.copy() for p in model.parameters()]
    step = kiln.compile_train_step(model, F.cross_entropy, Muon(model.parameters(), lr=0.02))
    (x, y), = batches(1, "float32")
    step(x, y)
    torch_step(torch, twin, torch.optim.Muon(twin.parameters(), lr=0.02), x, y)
    for old, ours, theirs in zip(before, model.parameters(), twin.parameters()):
        a, b = (ours.data - old).ravel(), (theirs.detach().numpy() - old).ravel()
        assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.94
        assert 0.93 < np.linalg.norm(a) / np.linalg.norm(b) < 1.07


def test_the_update_is_orthogonal_and_written_in_graph_ops():
    """Without decay or momentum, one step moves a square weight by lr times a near-orthogonal matrix (singular values
    in PyTorch's documented band around 1), and the step graph holds matmuls, not one opaque update op."""
    kiln.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 12, bias=False, dtype="float64"))
    before = model[0].weight.data.copy()
    step = kiln.compile_train_step(model, lambda out, y: ((out - y) ** 2).mean(), Muon(model.parameters(), lr=1.0, momentum=0.0, weight_decay=0.0))
    rng = np.random.default_rng(1)
    step(rng.standard_normal((40, 12)), rng.standard_normal((40, 12)))
    singular = np.linalg.svd(before - model[0].weight.data, compute_uv=False)
    assert 0.5 < singular.min() and singular.max() < 1.5
    text = str(step.graph)
    assert text.count('"tensor.matmul"') >= 3 * 5 and '"optim.' not in text


def test_onnxruntime_runs_the_muon_step_as_numpy_does(torch):
    """The update is plain ops, so the step exported to ONNX and run by onnxruntime trains as the NumPy step does."""
    require("onnxruntime")
    steps = {}
    for backend in ("numpy", "onnxruntime"):
        model, _ = bias_free_mlp(torch, "float32")
        steps[backend] = (kiln.compile_train_step(model, F.cross_entropy, Muon(model.parameters(), lr=0.02), backend=backend), model)
    for x, y in batches(5, "float32"):
        np.testing.assert_allclose(steps["onnxruntime"][0](x, y), steps["numpy"][0](x, y), rtol=1e-5)
    for name, value in steps["numpy"][1].state_dict().items():
        np.testing.assert_allclose(steps["onnxruntime"][1].state_dict()[name], value, rtol=1e-4, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("options, message", [
    (dict(adjust_lr_fn="rms"), "adjust_lr_fn 'rms'"),
    (dict(ns_steps=100), r"ns_steps must be an int in \[0, 100\)"),
    (dict(ns_coefficients=(1.0, 2.0)), "three"),
    (dict(momentum=-0.1), "momentum"),
])
def test_invalid_options_are_refused(options, message):
    model = nn.Sequential(nn.Linear(4, 3, bias=False))
    with pytest.raises(kiln.KilnError, match=message):
        Muon(model.parameters(), **options)


def test_a_bias_is_refused_with_what_to_do():
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(kiln.KilnError, match=r"only trains 2-D parameters, got one of shape \(3,\).*AdamW"):
        Muon(model.parameters())


def test_state_dict_round_trip_continues_identically(torch):
    model, _ = bias_free_mlp(torch, "float64")
    optimizer = Muon(model.parameters(), lr=0.02)
    step = kiln.compile_train_step(model, F.cross_entropy, optimizer)
    data = batches(6, "float64")
    for x, y in data[:3]:
        step(x, y)
    saved_model, saved_optimizer = {k: v.copy() for k, v in model.state_dict().items()}, optimizer.state_dict()
    saved_optimizer = {**saved_optimizer, "state": {k: {n: a.copy() for n, a in v.items()} for k, v in saved_optimizer["state"].items()}}
    expected = [step(x, y) for x, y in data[3:]]
    model.load_state_dict(saved_model)
    optimizer.load_state_dict(saved_optimizer)
    np.testing.assert_array_equal([step(x, y) for x, y in data[3:]], expected)


def test_constructor_has_torchs_arguments_and_defaults(torch):
    from test_more_optimizers import assert_constructor_matches_torch

    assert_constructor_matches_torch(torch, "Muon", same_kinds=True)
