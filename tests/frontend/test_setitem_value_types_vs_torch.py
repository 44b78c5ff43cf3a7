"""``t[index] = value`` for values that are not tensors, against torch 2.13: a NumPy array (0-d too), a list or tuple,
a NumPy float32/float16/bool scalar are refused with torch's ``TypeError`` ("can't assign a numpy.ndarray to a
torch.FloatTensor"), eagerly and traced (naming the user's line); Python numbers, NumPy float64/int scalars (Python
numbers to torch), tensors and a parameter's ``.data``/``.grad`` are assigned (``frontend/setitem_value_checks.py``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import kiln
from oracles import require_torch

REFUSED = {
    "ndarray": np.array([1.0, 2.0, 3.0]), "0-d ndarray": np.array(5.0), "float32 ndarray": np.ones(3, np.float32),
    "bool ndarray": np.array([True, False, True]), "list": [1.0, 2.0, 3.0], "tuple": (1.0, 2.0, 3.0),
    "numpy float32": np.float32(5.0), "numpy float16": np.float16(5.0), "numpy bool": np.bool_(True),
}
ASSIGNED = {"int": 5, "float": 2.5, "bool": True, "numpy float64": np.float64(2.5), "numpy int64": np.int64(3),
            "numpy int32": np.int32(3), "numpy uint8": np.uint8(3)}
INDEXES = {"row": 0, "element": (0, 1), "slice": slice(None), "bool mask": "mask", "index tensor": "rows"}
DTYPES = ["float32", "float64", "int64", "bool", "float16"]


def _index(lib: Any, name: str) -> Any:
    index = INDEXES[name]
    if index == "mask":
        return lib.tensor([True, False])
    return lib.tensor([1]) if index == "rows" else index


def _refusal(lib: Any, dtype: str, index: str, value: Any) -> str:
    t = lib.zeros(2, 3, dtype=getattr(lib, dtype))
    with pytest.raises(TypeError) as caught:
        t[_index(lib, index)] = value
    return str(caught.value)


@pytest.mark.parametrize("index", list(INDEXES))
@pytest.mark.parametrize("value", list(REFUSED))
def test_a_value_torch_refuses_is_refused_with_its_words(value, index):
    torch = require_torch()
    expected = _refusal(torch, "float32", index, REFUSED[value])
    ours = _refusal(kiln, "float32", index, REFUSED[value])
    assert expected in ours and __file__.split("/")[-1] in ours


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_message_names_the_destinations_legacy_type_as_torchs(dtype):
    torch = require_torch()
    assert _refusal(torch, dtype, "row", REFUSED["ndarray"]) in _refusal(kiln, dtype, "row", REFUSED["ndarray"])


@pytest.mark.parametrize("index", list(INDEXES))
@pytest.mark.parametrize("value", list(ASSIGNED))
def test_numbers_are_assigned_as_torch_assigns_them(value, index):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        t = lib.zeros(2, 3)
        t[_index(lib, index)] = ASSIGNED[value]
        results.append(np.asarray(t.numpy()))
    np.testing.assert_array_equal(results[0], results[1])


def test_tensors_and_a_parameters_data_and_grad_are_assigned():
    layer = kiln.nn.Linear(3, 2)
    layer(kiln.ones(1, 3)).sum().backward()
    t = kiln.zeros(2, 3)
    t[0] = layer.weight.data[1]
    t[1] = layer.weight.grad[0]
    t[0, :2] = kiln.tensor([7.0, 8.0])
    np.testing.assert_array_equal(t.numpy(), [[7.0, 8.0, layer.weight.data[1][2]], layer.weight.grad.numpy()[0]])


def test_a_traced_assignment_of_an_array_is_refused_naming_the_line():
    def write(x):
        x = x.clone()
        x[0] = np.ones(3)
        return x

    with pytest.raises(TypeError, match="can't assign a numpy.ndarray to a torch.FloatTensor") as caught:
        kiln.compile(write)(kiln.zeros(2, 3))
    assert "x[0] = np.ones(3)" in str(caught.value)
