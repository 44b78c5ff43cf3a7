"""``kiln.asarray`` as ``torch.asarray`` (``frontend/torch_asarray.py``): a NumPy array of the asked dtype and a
tensor are shared (in-place writes of either are seen in the other), another dtype or ``copy=True`` copies,
``copy=False`` where a copy is needed is torch's ValueError, a sequence or number is a new tensor of torch's dtype."""

from __future__ import annotations

import numpy as np
import pytest

from oracles import libraries, require_torch

FORMS = {
    "array": lambda lib, a: lib.asarray(a),
    "array_same_dtype": lambda lib, a: lib.asarray(a, dtype=lib.float32),
    "array_copy": lambda lib, a: lib.asarray(a, copy=True),
    "array_float64": lambda lib, a: lib.asarray(a, dtype=lib.float64),
    "tensor": lambda lib, a: lib.asarray(lib.from_numpy(a)),
    "tensor_copy": lambda lib, a: lib.asarray(lib.from_numpy(a), copy=True),
    "tensor_float64": lambda lib, a: lib.asarray(lib.from_numpy(a), dtype=lib.float64),
    "requires_grad": lambda lib, a: lib.asarray(a, requires_grad=True),
}


@pytest.mark.parametrize("name", sorted(FORMS))
def test_asarray_shares_or_copies_as_torchs(name):
    require_torch()
    results = []
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        a = np.array([1.0, -2.0, 3.0], np.float32)
        t = FORMS[name](lib, a)
        with lib.no_grad():
            t.add_(1.0)
        results.append((a.tolist(), str(t.dtype).split(".")[-1], t.requires_grad, t.is_leaf))
    assert results[0] == results[1]


def test_asarray_of_a_tensor_is_the_tensor_as_torchs():
    require_torch()
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        t = lib.ones(2)
        assert lib.asarray(t) is t and lib.asarray(t, copy=True) is not t, library


@pytest.mark.parametrize("data", [[1, 2], [1.5, 2.0], 3.0, 7, True, np.float64(2.5), np.arange(3), [[1, 2], [3, 4]]],
                         ids=["ints", "floats", "float", "int", "bool", "np_float64", "np_int", "nested"])
def test_asarray_of_data_takes_torchs_dtype_and_values(data):
    require_torch()
    made = []
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        t = lib.asarray(data)
        made.append((np.asarray(t).tolist(), str(t.dtype).split(".")[-1], tuple(t.shape)))
    assert made[0] == made[1]


@pytest.mark.parametrize("call", [lambda lib: lib.asarray(np.ones(2, np.float32), dtype=lib.float64, copy=False),
                                  lambda lib: lib.asarray(lib.ones(2), dtype=lib.int64, copy=False),
                                  lambda lib: lib.asarray([1.0, 2.0], copy=False)],
                         ids=["array_cast", "tensor_cast", "sequence"])
def test_copy_false_where_a_copy_is_needed_is_torchs_value_error(call):
    require_torch()
    messages = []
    for library in ("kiln", "torch"):
        lib, _, _ = libraries(library)
        with pytest.raises(ValueError) as caught:
            call(lib)
        messages.append(str(caught.value).splitlines()[-1].strip())
    assert messages[0].startswith(messages[1])
