"""A parameter's ``.data``/``.grad`` (NumPy arrays in kiln, tensors in PyTorch) answer as PyTorch's tensors do: their
reductions called as PyTorch calls them, their arithmetic and comparisons promoted as tensors', and in a
``kiln.compile``'d function all of it reads the parameter's value at each call, never the value when the trace ran."""

import warnings

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError
from oracles import require_torch


def _linear(lib):
    module = lib.nn.Linear(3, 2).double()
    with lib.no_grad():
        module.weight.copy_(lib.arange(6.0, dtype=lib.float64).reshape(2, 3) / 10 - 0.25)
        module.bias.copy_(lib.tensor([0.5, -0.5], dtype=lib.float64))
    return module


def _reads(lib, module):
    """PyTorch calls of the shared NumPy/PyTorch names, on .data and .grad."""
    w, g = module.weight.data, module.weight.grad
    values, indices = w.max(0)
    return [w.sum(dim=1), g.sum(1, keepdim=True), w.std(), g.var(0), values, indices, w.min(), w.mean(0),
            (w > 0).sum(1) + module.bias, 2 - w, abs(module.bias), w.clip(-0.1, 0.1).sum() + module.bias]


def _numbers(tensors):
    return [np.asarray(t.detach().numpy() if hasattr(t, "detach") else t, dtype=np.float64) for t in tensors]


def test_data_and_grad_methods_answer_as_pytorchs_eagerly():
    torch = require_torch()
    results = []
    for lib in (torch, kiln):
        module = _linear(lib)
        module(lib.ones(4, 3, dtype=lib.float64)).pow(2).sum().backward()
        results.append(_numbers(_reads(lib, module)))
    for ours, theirs in zip(results[1], results[0]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def _manual_step(lib, module):
    def step(x):
        module.zero_grad()
        loss = module(x).pow(2).sum()
        loss.backward()
        for p in module.parameters():
            p.data -= 0.01 * p.grad.data  # the manual SGD of PyTorch's early examples
        w = module.weight.data
        w *= 0.99
        return [loss, *_reads(lib, module)]
    return step


def test_compiled_step_reads_and_writes_data_at_every_call_as_pytorch():
    torch = require_torch()
    trajectories = []
    for lib, compiled in ((torch, False), (kiln, False), (kiln, True)):
        module = _linear(lib)
        step = _manual_step(lib, module)
        step = kiln.compile(step, fullgraph=True) if compiled else step
        x = lib.ones(4, 3, dtype=lib.float64)
        trajectories.append([_numbers(step(x)) + _numbers([module.weight]) for _ in range(3)])
    for run in trajectories[1:]:
        for ours, theirs in zip(run, trajectories[0]):
            for a, b in zip(ours, theirs):
                np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_numpy_function_of_data_in_a_trace_names_the_line_and_runs_eagerly():
    module = _linear(kiln)

    def read(x):
        return module(x) * float(np.sum(module.weight.data))

    with pytest.raises(TraceError, match=r"(?s)test_torch_array_traced.py:\d+.*NumPy's sum\(\) of a parameter's .data"):
        kiln.compile(read, fullgraph=True)(kiln.ones(2, 3, dtype=kiln.float64))
    compiled = kiln.compile(read)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for scale in (1.0, 2.0):
            with kiln.no_grad():
                module.weight.mul_(scale)
            got = compiled(kiln.ones(2, 3, dtype=kiln.float64))
            np.testing.assert_allclose(got.numpy(), read(kiln.ones(2, 3, dtype=kiln.float64)).numpy(), rtol=1e-15)
    assert any("runs eagerly" in str(w.message) and "NumPy's sum()" in str(w.message) for w in caught)


def test_ufunc_without_a_tensor_counterpart_in_a_trace_is_refused():
    module = _linear(kiln)
    with pytest.raises(TraceError, match=r"NumPy's arctan2\(\)"):
        kiln.compile(lambda x: module(x) + np.arctan2(module.weight.data, 1.0).sum(), fullgraph=True)(
            kiln.ones(2, 3, dtype=kiln.float64))


def test_numpy_calls_stay_numpys():
    weight = _linear(kiln).weight
    data = weight.data
    assert float(np.sum(data)) == pytest.approx(float(np.asarray(data).sum()))
    assert np.std(data) == pytest.approx(np.asarray(data).std())  # population, as NumPy's
    assert data.sum(axis=0).shape == (3,) and data.max(axis=1).shape == (2,)
    assert type(data + 1) is type(data) and type(np.exp(data)) is type(data)  # ufuncs keep the array's type
    before = np.asarray(data).copy()
    data *= 2  # in place, the parameter's own array
    np.testing.assert_array_equal(np.asarray(weight.data), before * 2)


def test_grad_and_data_dtypes_compare_equal_to_kilns_as_pytorchs():
    torch = require_torch()
    for lib in (torch, kiln):
        layer = lib.nn.Linear(2, 2)
        layer(lib.ones(1, 2)).sum().backward()
        grad, data = layer.weight.grad, layer.weight.data
        assert grad.dtype == lib.float32 and lib.float32 == data.dtype and grad.dtype != lib.float64, lib.__name__
    assert np.dtype(kiln.bfloat16).name == "bfloat16" and np.zeros(2, kiln.float64).dtype == np.float64


def test_in_place_operators_with_a_tensor_write_the_parameter_as_pytorchs():
    """``state_dict()[name] += t`` (an EMA as timm writes it) writes the parameter; NumPy deferred to the tensor and
    rebound the name, leaving the parameter unchanged."""
    torch = require_torch()
    results = []
    for lib in (torch, kiln):
        layer = _linear(lib)
        values = layer.state_dict()["weight"]
        values += lib.ones(2, 3, dtype=lib.float64)
        values *= lib.full((2, 3), 3.0, dtype=lib.float64)
        values -= lib.ones(2, 3, dtype=lib.float64)
        values /= lib.full((2, 3), 2.0, dtype=lib.float64)
        results.append(layer.weight.detach().numpy().copy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-15)


def test_in_place_operators_with_a_tensor_on_data_in_a_trace_write_the_parameter():
    layer = _linear(kiln)

    def shrink(x):
        data = layer.weight.data
        data *= kiln.full((2, 3), 0.5, dtype=kiln.float64)
        return layer(x)[:, 0].sum()

    compiled = kiln.compile(shrink, fullgraph=True)
    x = kiln.ones(1, 3, dtype=kiln.float64)
    first, second = compiled(x).item(), compiled(x).item()
    np.testing.assert_allclose(layer.weight.detach().numpy(), (np.arange(6.0).reshape(2, 3) / 10 - 0.25) / 4, rtol=1e-15)
    assert first != second
