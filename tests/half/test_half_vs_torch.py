"""Every row of ``half_cases.py`` in float16 and bfloat16, kiln against PyTorch 2.13 on CPU in the same dtype:
the output and the gradients (inputs and parameters) of ``sum(output.float() * w)``, eagerly (``loss.backward()``) and
compiled (``kiln.compile`` for the output, ``kiln.func.grad`` over ``functional_call`` for the gradients).

Both sides start from the same half inputs and the same weights (kiln's initialisation, copied into torch in float32,
then both modules converted with ``.to(dtype)``). Tolerances: ``half_compare.py``.
"""

from __future__ import annotations

import zlib
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

import kiln
import kiln.func
from half_cases import CASES, HalfCase
from half_compare import HALF, assert_half_close, from_torch, to_half, torch_dtype
from oracles import libraries, require_torch


def draw(case: HalfCase, dtype: str) -> list[np.ndarray]:
    """The case's inputs: floats rounded to ``dtype``, integer labels as int64."""
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    return [to_half(spec.draw(rng), dtype) if spec.is_float else spec.draw(rng).astype(np.int64) for spec in case.inputs]


def modules(torch: Any, case: HalfCase, dtype: str) -> tuple[Any, Any]:
    """``(kiln module, torch twin)`` in ``dtype`` with kiln's initial weights, or ``(None, None)``."""
    if case.module is None:
        return None, None
    kiln.manual_seed(0)
    model, twin = case.module(kiln.nn), case.module(torch.nn)
    twin.load_state_dict({k: torch.tensor(np.array(v, dtype=np.float32) if np.asarray(v).dtype.kind in "fV" else np.array(v))
                          for k, v in model.state_dict().items()})
    for m in (model, twin):
        m.to(getattr(kiln if m is model else torch, {"f16": "float16", "bf16": "bfloat16"}[dtype]))  # torch_run may widen the twin
        m.train(case.train)
    return model, twin


def loss_weights(case: HalfCase, shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(case.id.encode()) + 1).uniform(0.5, 1.5, shape).astype(np.float32)


def torch_run(torch: Any, case: HalfCase, twin: Any, arrays: list[np.ndarray], dtype: str) -> tuple[np.ndarray, list[np.ndarray], dict[str, np.ndarray]]:
    """torch's output, input gradients and parameter gradients, all as float64 arrays; in float32 rounded to ``dtype``
    where torch has no half kernel (``case.torch_refuses``)."""
    lib, nn, F = libraries("torch")
    computed = torch.float32 if case.torch_refuses else torch_dtype(torch, dtype)
    if twin is not None and case.torch_refuses:
        twin.float()
    tensors = [torch.tensor(a.astype(np.float32)).to(computed).requires_grad_(case.grad and spec.grad)
               if spec.is_float else torch.tensor(a) for a, spec in zip(arrays, case.inputs)]
    output = case.call(lib, nn, F, twin, *tensors)
    grads, params = [], {}
    if case.grad:
        (output.float() * torch.tensor(loss_weights(case, tuple(output.shape)))).sum().backward()
        grads = [t.grad for t in tensors if t.requires_grad]
        params = {name: p.grad for name, p in twin.named_parameters()} if twin is not None else {}
    rounded = (lambda t: from_torch(t.to(torch_dtype(torch, dtype)))) if case.torch_refuses else from_torch
    return rounded(output), [rounded(g) for g in grads], {name: rounded(g) for name, g in params.items()}


def kiln_eager(case: HalfCase, model: Any, arrays: list[np.ndarray]) -> tuple[Any, list[Any], dict[str, Any]]:
    lib, nn, F = libraries("kiln")
    tensors = [kiln.tensor(a, requires_grad=case.grad and spec.differentiated) for a, spec in zip(arrays, case.inputs)]
    output = case.call(lib, nn, F, model, *tensors)
    grads, params = [], {}
    if case.grad:
        (output.float() * kiln.tensor(loss_weights(case, tuple(output.shape)))).sum().backward()
        grads = [t.grad for t, spec in zip(tensors, case.inputs) if spec.differentiated]
        params = {name: p.grad for name, p in model.named_parameters()} if model is not None else {}
    return output.numpy(), grads, params


def kiln_compiled(case: HalfCase, model: Any, arrays: list[np.ndarray]) -> tuple[Any, list[Any], dict[str, Any]]:
    """The output by ``kiln.compile``; the gradients by ``kiln.func.grad`` of a ``functional_call`` (one traced graph)."""
    lib, nn, F = libraries("kiln")
    output = kiln.compile(lambda *xs: case.call(lib, nn, F, model, *xs), batch_dim=None)(*arrays)
    if not case.grad:
        return output, [], {}
    weights = loss_weights(case, np.shape(output))

    def loss(params: dict[str, Any], *inputs: Any) -> Any:
        called = (lambda *xs, **kw: kiln.func.functional_call(model, params, xs, kw)) if model is not None else None
        return (case.call(lib, nn, F, called, *inputs).float() * weights).sum()

    params = {name: p.detach() for name, p in model.named_parameters()} if model is not None else {}
    differentiated = tuple(1 + i for i, spec in enumerate(case.inputs) if spec.differentiated)
    found = kiln.func.grad(loss, argnums=(0, *differentiated))(params, *arrays)
    param_grads, *grads = found  # a tuple for a tuple argnums, (0,) too, as torch.func
    return output, grads, param_grads


GRAD_ULPS = 2
"""Gradients' default tolerance: kiln's backward is a graph of half ops, each computed in float32 and rounded, where
torch's backward kernels round at other points (a fused ``*_backward`` rounds once, autograd rounds per node)."""


def assert_matches(case: HalfCase, dtype: str, kiln_result: tuple, torch_result: tuple, how: str) -> None:
    output, grads, params = kiln_result
    expected_output, expected_grads, expected_params = torch_result
    ulps = case.bf16_ulps if dtype == "bf16" and case.bf16_ulps is not None else case.ulps
    grad_ulps = case.grad_ulps if case.grad_ulps is not None else max(ulps or 0, GRAD_ULPS)
    assert_half_close(_numpy(output), expected_output, dtype, ulps, f"{case.id} {how} output")
    assert len(grads) == len(expected_grads)
    for i, (grad, expected) in enumerate(zip(grads, expected_grads)):
        assert_half_close(_numpy(grad), expected, dtype, grad_ulps, f"{case.id} {how} gradient of input {i}")
    assert set(params) == set(expected_params), f"{case.id}: parameter names differ from torch's"
    for name, expected in expected_params.items():
        assert_half_close(_numpy(params[name]), expected, dtype, grad_ulps, f"{case.id} {how} gradient of {name}")


def _numpy(value: Any) -> np.ndarray:
    return value.numpy() if hasattr(value, "numpy") and not isinstance(value, np.ndarray) else np.asarray(value)


PARAMS = [pytest.param(case, dtype, id=f"{case.id}-{dtype}") for case in CASES for dtype in HALF]


def oracle(torch: Any, case: HalfCase, twin: Any, arrays: list[np.ndarray], dtype: str) -> tuple:
    """torch's results; where its half backward overflows, the gradients of a float32 run rounded to ``dtype``."""
    output, grads, params = torch_run(torch, case, twin, arrays, dtype)
    if case.torch_grad_overflows:
        _, grads, params = torch_run(torch, replace(case, torch_refuses=True), twin, arrays, dtype)
    return output, grads, params


@pytest.mark.parametrize(("case", "dtype"), PARAMS)
def test_eager_matches_torch(case: HalfCase, dtype: str):
    torch = require_torch()
    model, twin = modules(torch, case, dtype)
    arrays = draw(case, dtype)
    assert_matches(case, dtype, kiln_eager(case, model, arrays), oracle(torch, case, twin, arrays, dtype), "eager")


@pytest.mark.parametrize(("case", "dtype"), PARAMS)
def test_compiled_matches_torch(case: HalfCase, dtype: str):
    torch = require_torch()
    model, twin = modules(torch, case, dtype)
    arrays = draw(case, dtype)
    assert_matches(case, dtype, kiln_compiled(case, model, arrays), oracle(torch, case, twin, arrays, dtype), "compiled")


@pytest.mark.parametrize("case", [case for case in CASES if case.torch_refuses], ids=lambda case: case.id)
def test_torch_still_refuses_half(case: HalfCase):
    """The float32 oracle of ``torch_refuses`` rows stands only while torch has no half kernel: when this fails,
    drop the row's flag and compare with torch in half precision."""
    torch = require_torch()
    model, twin = modules(torch, case, "f16")
    lib, nn, F = libraries("torch")
    tensors = [torch.tensor(a.astype(np.float32)).half() if spec.is_float else torch.tensor(a) for a, spec in zip(draw(case, "f16"), case.inputs)]
    with pytest.raises((NotImplementedError, RuntimeError), match="not implemented for 'Half'"):
        case.call(lib, nn, F, twin, *tensors)
