"""Optimizers on float16 and bfloat16 parameters against PyTorch 2.13's CPU optimizers in the same dtype.

PyTorch keeps a half parameter's state in half (``zeros_like(p)``; NAdam's ``mu_product`` and ASGD's ``eta``/``mu``
as float32 scalars) and runs its single-tensor update op by op, each op computing in float32 and rounding its result
to half once; its hyper-parameters are Python floats (doubles, read in float32 by its kernels, except ``add``'s alpha
and added scalar, which it rounds to half). kiln's update does the same (``compiler/ops/optim.py``), so given the same
gradients the parameters and states agree bit for bit, eagerly (``optimizer.step()``) and compiled (a step whose
gradient is exactly its input). Tensors here hold whole multiples of 64 elements: PyTorch computes the scalar tail of a
tensor (past a multiple of its vector width) in half arithmetic, rounding ``alpha * other`` before adding, so a tail
element may be one ulp off. PyTorch's vectorized ``addcmul`` and ``lerp`` fuse their multiply-add; kiln's half updates
do too (``multiply_add``): without it NAdam's second moment is one ulp off at step 5 here. One wider tolerance: Muon's
parameter (PyTorch's ``addmm`` rounds once where kiln's Newton-Schulz rounds its product and its sum: 4 ulps of the
largest element); its momentum is bit for bit.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np
import pytest

import kiln
import kiln.nn as nn
from exact_gradient import Scaled

DTYPES = {"float16": np.float16, "bfloat16": ml_dtypes.bfloat16}
CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, maximize=True)),
    ("Adam", dict(lr=1e-2, eps=1e-4)),
    ("Adam", dict(lr=1e-2, eps=1e-4, amsgrad=True, weight_decay=0.01)),
    ("AdamW", dict(lr=1e-2, eps=1e-4, weight_decay=0.1)),
    ("RMSprop", dict(lr=1e-2, eps=1e-4)),
    ("RMSprop", dict(lr=1e-2, eps=1e-4, centered=True, momentum=0.9, weight_decay=0.01)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
    ("Adadelta", dict(lr=1.0, weight_decay=0.01)),
    ("Adamax", dict(lr=1e-2, eps=1e-4)),
    ("NAdam", dict(lr=1e-2, eps=1e-4)),
    ("RAdam", dict(lr=1e-2, eps=1e-4)),
    ("RAdam", dict(lr=1e-2, eps=1e-4, weight_decay=0.1, decoupled_weight_decay=True)),
    ("ASGD", dict(lr=1e-2, t0=3)),
    ("Rprop", dict(lr=1e-2)),
    ("Adafactor", dict(lr=1e-2)),
    ("Adafactor", dict(lr=1e-2, weight_decay=0.1)),
]
ULPS = {"Muon": 4}
"""Tolerances in half ulps of the largest element, where not bit for bit (module docstring)."""
SHAPES = [(16, 8), (64,)]
"""A matrix and a vector (Adafactor factors the first, not the second), of whole multiples of 64 elements: PyTorch's
vector path covers them (module docstring)."""


def case_id(case: tuple[str, dict[str, Any]]) -> str:
    return case[0] + "(" + ",".join(f"{k}={v}" for k, v in case[1].items()) + ")"


def half_pair(torch: Any, dtype: str, rng: np.random.Generator) -> tuple[list[Any], list[Any]]:
    """The same half parameters for kiln and for PyTorch."""
    values = [rng.standard_normal(shape).astype(np.float32) for shape in SHAPES]
    ours = [nn.Parameter(value.astype(DTYPES[dtype])) for value in values]
    theirs = [torch.nn.Parameter(torch.tensor(value).to(getattr(torch, dtype))) for value in values]
    return ours, theirs


def gradients(torch: Any, dtype: str, rng: np.random.Generator) -> list[Any]:
    return [torch.tensor(rng.standard_normal(shape).astype(np.float32) * 0.1).to(getattr(torch, dtype)) for shape in SHAPES]


def assert_same(ours: np.ndarray, theirs: Any, dtype: str, what: str, name: str = "") -> None:
    """Bit for bit (NaN where PyTorch has NaN: Adagrad's eps 1e-10 is 0 in float16), or within ``ULPS`` ulps of the
    largest element for the case (module docstring)."""
    expected = theirs.detach().float().numpy()
    actual = np.asarray(ours).astype(np.float32)
    assert np.asarray(ours).dtype == DTYPES[dtype], f"{what} is {np.asarray(ours).dtype}, not {dtype}"
    eps = float(ml_dtypes.finfo(DTYPES[dtype]).eps)
    finite = np.abs(expected[np.isfinite(expected)])
    largest = float(np.max(finite)) if finite.size else 0.0
    tolerance = ULPS.get(name, 0) * eps * largest
    with np.errstate(invalid="ignore"):  # inf - inf where both overflowed
        close = np.isclose(actual, expected, rtol=0, atol=0, equal_nan=True) | (np.abs(actual - expected) <= tolerance)
    assert np.all(close), f"{what}: {int(np.sum(~close))} elements differ by more than the tolerance, e.g. {actual[~close][:3]} vs {expected[~close][:3]}"


def step_both_and_compare(torch: Any, optimizer: Any, reference: Any, ours: list[Any], theirs: list[Any], dtype: str,
                          rng: np.random.Generator, index: int, name: str) -> None:
    """One eager step of kiln's ``optimizer`` and torch's ``reference`` on the same half gradients; then every
    parameter and every per-parameter state torch keeps must be the same (``assert_same``)."""
    for p, q, g in zip(ours, theirs, gradients(torch, dtype, rng)):
        q.grad, p.grad = g, g.float().numpy().astype(DTYPES[dtype])
    optimizer.step()
    reference.step()
    for position, (p, q) in enumerate(zip(ours, theirs)):
        assert_same(p.data, q, dtype, f"parameter {position} after step {index}", name)
        for state, value in reference.state[q].items():
            if state in optimizer.state_of(p) and state not in optimizer.scalar_states:
                assert_same(optimizer.state_of(p)[state], value, dtype, f"{state} of {position} after step {index}", name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_eager_step_matches_torch_in_half(torch, case, dtype):
    name, options = case
    rng = np.random.default_rng(0)
    ours, theirs = half_pair(torch, dtype, rng)
    optimizer, reference = getattr(kiln.optim, name)(ours, **options), getattr(torch.optim, name)(theirs, foreach=False, **options)
    for index in range(8):
        step_both_and_compare(torch, optimizer, reference, ours, theirs, dtype, rng, index, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_compiled_step_matches_torch_in_half(torch, case, dtype):
    name, options = case
    rng = np.random.default_rng(1)
    (ours, _), (theirs, _) = half_pair(torch, dtype, rng)
    model = Scaled(np.asarray(ours.data))
    optimizer, reference = getattr(kiln.optim, name)(model.parameters(), **options), getattr(torch.optim, name)([theirs], foreach=False, **options)
    step = kiln.compile_train_step(model, lambda out, target: out.sum(), optimizer, batch_dim=None)
    for index in range(8):
        grad = gradients(torch, dtype, rng)[0]
        step(grad.float().numpy().astype(DTYPES[dtype]), np.zeros((), np.float32))
        theirs.grad = grad
        reference.step()
        assert_same(model.w.data, theirs, dtype, f"parameter after step {index}", name)
    assert step.compile_count == 1


def test_a_half_steps_learning_rate_is_a_float64_input(torch):
    """PyTorch's lr and loss scale are Python floats (doubles): an f16 step reads them as f64 inputs, never rounded to
    half (1e-4 in f16 would be 1.0002e-4) nor to float32 (NAdam's step factors would then be a float32 ulp off)."""
    model = Scaled(np.ones((4,), np.float16))
    step = kiln.compile_train_step(model, lambda out, target: out.sum(), kiln.optim.Adam(model.parameters(), lr=1e-4), batch_dim=None,
                                   loss_scale=1024.0)
    step(np.ones((4,), np.float16), np.zeros((), np.float32))
    assert _input_type(step.graph, "lr") == "tensor<f64>"
    assert _input_type(step.graph, "loss_scale") == "tensor<f64>"
    assert _input_type(step.graph, "w") == "tensor<4xf16>"


def _input_type(graph: Any, name: str) -> str:
    return next(str(value.type) for value in graph.inputs if value.name_hint == name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_muon_on_half_matrices_follows_torch(torch, dtype):
    """Newton-Schulz in bfloat16 as PyTorch's; 4 half ulps (module docstring)."""
    rng = np.random.default_rng(2)
    value = rng.standard_normal((16, 8)).astype(np.float32)
    ours, theirs = nn.Parameter(value.astype(DTYPES[dtype])), torch.nn.Parameter(torch.tensor(value).to(getattr(torch, dtype)))
    optimizer, reference = kiln.optim.Muon([ours], lr=0.02), torch.optim.Muon([theirs], lr=0.02)
    for index in range(5):
        grad = torch.tensor(rng.standard_normal((16, 8)).astype(np.float32) * 0.1).to(getattr(torch, dtype))
        theirs.grad, ours.grad = grad, grad.float().numpy().astype(DTYPES[dtype])
        optimizer.step()
        reference.step()
        assert_same(ours.data, theirs, dtype, f"parameter after step {index}", "Muon")
        assert_same(optimizer.state_of(ours)["momentum_buffer"], reference.state[theirs]["momentum_buffer"], dtype, "momentum buffer", "Muon")


TRANSFORMS = [dict(clip_grad_norm=0.5), dict(clip_grad_norm=100.0), dict(clip_grad_value=0.05), dict(accumulate=2), dict(loss_scale=1024.0)]


def torch_gradients(torch: Any, parameter: Any, x: Any, options: dict[str, Any]) -> None:
    """PyTorch's loop for a kiln step with these options (micro-batches, loss scaling, clipping) on ``sum(w * x)``."""
    micro_batches, scale = options.get("accumulate", 1), options.get("loss_scale")
    parameter.grad = None
    for part in torch.chunk(x, micro_batches):
        loss = (parameter * part).sum() / micro_batches
        (loss * scale if scale else loss).backward()
    if scale:
        parameter.grad.mul_(1 / scale)
    if "clip_grad_value" in options:
        torch.nn.utils.clip_grad_value_([parameter], options["clip_grad_value"])
    if "clip_grad_norm" in options:
        torch.nn.utils.clip_grad_norm_([parameter], options["clip_grad_norm"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("options", TRANSFORMS, ids=lambda options: ",".join(f"{k}={v}" for k, v in options.items()))
def test_gradient_transforms_in_half_match_torch(torch, options, dtype):
    """Clipping by norm (PyTorch's norms in the gradients' dtype, ``max_norm / (norm + 1e-6)`` as a reciprocal times
    ``max_norm``), by value, micro-batches and loss scaling, compiled, against PyTorch's loop: bit for bit."""
    rng = np.random.default_rng(3)
    value = rng.standard_normal(64).astype(np.float32)
    model = Scaled(value.astype(DTYPES[dtype]))
    theirs = torch.nn.Parameter(torch.tensor(value).to(getattr(torch, dtype)))
    optimizer, reference = kiln.optim.SGD(model.parameters(), lr=0.1), torch.optim.SGD([theirs], lr=0.1)
    step = kiln.compile_train_step(model, lambda out, target: out.sum(), optimizer, **options)
    for index in range(5):
        x = torch.tensor(rng.standard_normal((4, 64)).astype(np.float32) * 0.1).to(getattr(torch, dtype))
        step(x.float().numpy().astype(DTYPES[dtype]), np.zeros(4, np.float32))
        torch_gradients(torch, theirs, x, options)
        reference.step()
        assert_same(model.w.data, theirs, dtype, f"parameter after step {index}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_schedulers_learning_rates_reach_a_half_step_unrounded(torch, dtype):
    """A StepLR schedule changes lr between steps: a float64 input, so never recompiled, never rounded first."""
    rng = np.random.default_rng(4)
    value = rng.standard_normal(64).astype(np.float32)
    model = Scaled(value.astype(DTYPES[dtype]))
    theirs = torch.nn.Parameter(torch.tensor(value).to(getattr(torch, dtype)))
    optimizer, reference = kiln.optim.Adam(model.parameters(), lr=3e-3, eps=1e-4), torch.optim.Adam([theirs], lr=3e-3, eps=1e-4)
    schedules = [kiln.optim.lr_scheduler.StepLR(optimizer, 2, gamma=0.37), torch.optim.lr_scheduler.StepLR(reference, 2, gamma=0.37)]
    step = kiln.compile_train_step(model, lambda out, target: out.sum(), optimizer)
    for index in range(8):
        x = torch.tensor(rng.standard_normal((4, 64)).astype(np.float32)).to(getattr(torch, dtype))
        step(x.float().numpy().astype(DTYPES[dtype]), np.zeros(4, np.float32))
        theirs.grad = x.sum(0)
        reference.step()
        for schedule in schedules:
            schedule.step()
        assert_same(model.w.data, theirs, dtype, f"parameter after step {index}")
    assert step.compile_count == 1


@pytest.mark.parametrize("dtype", DTYPES)
def test_lbfgs_on_half_parameters_follows_torch(torch, dtype):
    """LBFGS (its history and line search on the host, in the parameter's dtype, sums accumulated in float32 as PyTorch's)
    on a least-squares problem: the float16 run is PyTorch's to 1 ulp a step; bfloat16's 0-d intermediates round
    differently from PyTorch's 0-d tensors, so 4 ulps a step (``4 eps t |x|``, as tests/trainer/test_half_training.py)."""
    rng = np.random.default_rng(5)
    matrix, target, start = (rng.standard_normal(shape).astype(np.float32) for shape in ((8, 8), (8,), (8,)))
    matrix *= 0.3
    ours, theirs = nn.Parameter(start.astype(DTYPES[dtype])), torch.nn.Parameter(torch.tensor(start).to(getattr(torch, dtype)))
    optimizer, reference = kiln.optim.LBFGS([ours], lr=0.5, max_iter=1), torch.optim.LBFGS([theirs], lr=0.5, max_iter=1)
    a, b = kiln.tensor(matrix.astype(DTYPES[dtype])), kiln.tensor(target.astype(DTYPES[dtype]))
    at, bt = torch.tensor(matrix).to(getattr(torch, dtype)), torch.tensor(target).to(getattr(torch, dtype))

    def ours_closure():
        optimizer.zero_grad()
        loss = ((a @ ours - b) ** 2).sum()
        loss.backward()
        return loss

    def theirs_closure():
        reference.zero_grad()
        loss = ((at @ theirs - bt) ** 2).sum()
        loss.backward()
        return loss

    eps = float(ml_dtypes.finfo(DTYPES[dtype]).eps)
    first = float(ours_closure())
    for t in range(1, 9):
        optimizer.step(ours_closure)
        reference.step(theirs_closure)
        expected = theirs.detach().float().numpy()
        distance = float(np.linalg.norm(np.asarray(ours.data, np.float32) - expected))
        assert ours.data.dtype == DTYPES[dtype]
        assert distance <= (1 if dtype == "float16" else 4) * eps * t * float(np.linalg.norm(expected)), f"step {t}: {distance}"
    assert float(ours_closure()) < first / 4


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_half_leaf_tensor_trains_as_torchs(torch, dtype):
    """A tensor marked by ``requires_grad_()`` (style transfer's input image) in half, with Adam: PyTorch's bit for bit."""
    rng = np.random.default_rng(6)
    start, weights = rng.standard_normal(64).astype(np.float32), rng.standard_normal(64).astype(np.float32)
    image = kiln.tensor(start.astype(DTYPES[dtype])).requires_grad_()
    twin = torch.tensor(start).to(getattr(torch, dtype)).requires_grad_()
    optimizer, reference = kiln.optim.Adam([image], lr=1e-2, eps=1e-3), torch.optim.Adam([twin], lr=1e-2, eps=1e-3)
    c, ct = kiln.tensor(weights.astype(DTYPES[dtype])), torch.tensor(weights).to(getattr(torch, dtype))
    for index in range(5):
        optimizer.zero_grad()
        (image * c).sum().backward()
        optimizer.step()
        reference.zero_grad()
        (twin * ct).sum().backward()
        reference.step()
        assert_same(image.detach().numpy(), twin, dtype, f"image after step {index}")


def test_lbfgs_first_step_sums_a_long_bfloat16_gradient_in_float32(torch):
    """LBFGS's first step is ``lr min(1, 1 / sum|g|)``: PyTorch sums a bfloat16 tensor in float32; NumPy's own sum of
    a bfloat16 array would accumulate in bfloat16 (4000 terms near 0.8: 256, not 3200) and step 12 times too far."""
    rng = np.random.default_rng(7)
    start, weights = np.zeros(4000, np.float32), rng.random(4000).astype(np.float32) + 0.3  # from 0: every move shows
    ours, theirs = nn.Parameter(start.astype(ml_dtypes.bfloat16)), torch.nn.Parameter(torch.tensor(start).bfloat16())
    optimizer, reference = kiln.optim.LBFGS([ours], lr=1.0, max_iter=1), torch.optim.LBFGS([theirs], lr=1.0, max_iter=1)
    c, ct = kiln.tensor(weights.astype(ml_dtypes.bfloat16)), torch.tensor(weights).bfloat16()

    def ours_closure():
        optimizer.zero_grad()
        loss = (ours * c).sum()
        loss.backward()
        return loss

    def theirs_closure():
        reference.zero_grad()
        loss = (theirs * ct).sum()
        loss.backward()
        return loss

    optimizer.step(ours_closure)
    reference.step(theirs_closure)
    np.testing.assert_allclose(np.asarray(ours.data, np.float32), theirs.detach().float().numpy(), rtol=2 ** -7, atol=0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["SGD", "Adam", "NAdam", "ASGD", "Adafactor"])
def test_onnxruntime_runs_the_same_half_updates(torch, name, dtype):
    """The written-out half update (casts, float64 lr, float32 scalar states) exported to ONNX and run by onnxruntime:
    NumPy's parameters bit for bit."""
    from oracles import require

    require("onnxruntime")
    rng = np.random.default_rng(8)
    value = rng.standard_normal(64).astype(np.float32)
    models = [Scaled(value.astype(DTYPES[dtype])) for _ in range(2)]
    options = dict(lr=1e-2, eps=1e-3) if name in ("Adam", "NAdam") else dict(lr=1e-2)
    steps = [kiln.compile_train_step(model, lambda out, target: out.sum(), getattr(kiln.optim, name)(model.parameters(), **options), backend=backend)
             for model, backend in zip(models, ("numpy", "onnxruntime"))]
    for _ in range(4):
        x = rng.standard_normal((4, 64)).astype(DTYPES[dtype])
        for step in steps:
            step(x, np.zeros(4, np.float32))
    steps[1].sync()
    np.testing.assert_array_equal(np.asarray(models[1].w.data, np.float32), np.asarray(models[0].w.data, np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_type", [2.0, float("inf")])
def test_eager_clip_grad_norm_of_half_gradients_is_torchs(torch, dtype, norm_type):
    """``kiln.nn.utils.clip_grad_norm_`` on half ``.grad``: PyTorch's total norm and clipped gradients bit for bit, over
    random sizes and max_norms (its coefficient is ``(1 / (total + 1e-6)) * max_norm``, rounded at each op)."""
    for trial in range(20):
        rng = np.random.default_rng(trial)
        values = [rng.standard_normal(shape).astype(np.float32) * rng.uniform(0.01, 3) for shape in ((33, 17), (17,), (5, 3))]
        ours = [nn.Parameter(np.zeros(v.shape, DTYPES[dtype])) for v in values]
        theirs = [torch.nn.Parameter(torch.zeros(v.shape, dtype=getattr(torch, dtype))) for v in values]
        for p, q, v in zip(ours, theirs, values):
            q.grad = torch.tensor(v).to(getattr(torch, dtype))
            p.grad = q.grad.float().numpy().astype(DTYPES[dtype])
        max_norm = float(rng.uniform(0.1, 5))
        total = kiln.nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
        expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
        assert float(total) == float(expected), f"trial {trial}: total norm {float(total)} vs {float(expected)}"
        for p, q in zip(ours, theirs):
            assert np.asarray(p.grad).dtype == DTYPES[dtype]
            np.testing.assert_array_equal(np.asarray(p.grad, np.float32), q.grad.float().numpy(), err_msg=f"trial {trial}")
