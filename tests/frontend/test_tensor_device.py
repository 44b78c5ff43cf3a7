"""PyTorch's device idioms run unchanged: ``x.device``, ``x.to(device[, dtype])``, ``x.to(other)``, ``model.to(device)``,
``kiln.device``, ``kiln.cuda.is_available()``; a device changes nothing, a dtype casts."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
import kiln.nn as nn
from oracles import require

X = np.arange(6.0).reshape(2, 3)


def run(fn, x=X):
    return kiln.compile(fn)(x)


def test_nanogpt_positions_on_the_inputs_device():
    got = run(lambda idx: idx + kiln.arange(0, idx.shape[1], dtype=kiln.long, device=idx.device))
    np.testing.assert_array_equal(got, X + np.arange(3))


@pytest.mark.parametrize("call, dtype", [
    (lambda x: x.to("cpu"), np.float64),
    (lambda x: x.to(kiln.device("cuda", 0)), np.float64),
    (lambda x: x.to("cuda:0", kiln.float32, non_blocking=True), np.float32),
    (lambda x: x.to(dtype=kiln.float32), np.float32),
    (lambda x: x.to(kiln.int32), np.int32),
    (lambda x: x.to(x.long()), np.int64),
    (lambda x: x.cpu().cuda(), np.float64),
])
def test_to_casts_for_a_dtype_and_ignores_a_device(call, dtype):
    got = run(call)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, X.astype(dtype))


def test_to_refuses_two_dtypes_and_unknown_keywords():
    with pytest.raises(TypeError, match="dtype twice"):  # PyTorch's exception type
        run(lambda x: x.to(kiln.float32, dtype=kiln.float64))
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['devices'\]"):
        run(lambda x: x.to(devices="cpu"))


def test_tensor_introspection_as_torch():
    seen = {}

    def probe(x):
        seen.update(device=x.device, cuda=x.is_cuda, floating=x.is_floating_point(), integer=x.long().is_floating_point(),
                    complex=x.is_complex(), contiguous=x.is_contiguous(), size=x.element_size(), dims=x.ndimension())
        return x

    run(probe)
    assert seen == dict(device=kiln.device("cpu"), cuda=False, floating=True, integer=False, complex=False, contiguous=True, size=8, dims=2)


def test_cpu_tensor_placement_queries_as_torchs():
    torch = require("torch")
    for lib in (kiln, torch):
        x = lib.ones(2, 3)
        assert (x.is_cpu, x.get_device(), x.is_pinned()) == (True, -1, False)
    pinned = kiln.ones(2).pin_memory()  # torch raises without an accelerator; kiln leaves placement to the backend
    np.testing.assert_array_equal(pinned.numpy(), np.ones(2))


def test_device_objects_compare_and_print_as_torchs():
    assert kiln.device("cuda:1") == "cuda:1" and kiln.device("cuda:1").index == 1 and str(kiln.device("cpu")) == "cpu"
    assert kiln.device(kiln.device("cuda"), 2) == kiln.device("cuda:2") and kiln.device(0) == "cuda:0"
    assert repr(kiln.device("cuda:1")) == "device(type='cuda', index=1)"
    with pytest.raises(ValueError, match="unknown device type 'gpu'"):
        kiln.device("gpu")


def test_modules_move_to_a_device_and_cast_as_torch():
    model = nn.Linear(2, 3)
    assert model.to(kiln.device("cuda")) is model and model.weight.data.dtype == np.float32
    model.to("cpu", dtype=kiln.float64)
    assert model.weight.data.dtype == np.float64
    model.to(kiln.device("cpu"), "float32")
    assert model.bias.data.dtype == np.float32


def test_cuda_availability_follows_the_cupy_backend():
    from kiln.backends import why_unavailable

    assert kiln.cuda.is_available() == (why_unavailable("cupy") is None)
    assert (kiln.cuda.device_count() > 0) == kiln.cuda.is_available()
    kiln.cuda.synchronize()  # nothing to wait for without a GPU
    kiln.cuda.manual_seed(3)
    first = kiln.nn.Linear(2, 2).weight.data.copy()
    kiln.manual_seed(3)
    np.testing.assert_array_equal(kiln.nn.Linear(2, 2).weight.data, first)
