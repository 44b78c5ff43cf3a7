"""``Tensor.new_tensor(tensor)``: a detached copy in the caller's dtype (or ``dtype=``), as torch's, eagerly and in a
compiled function, where the copied tensor is traced (Conv-TasNet's ``overlap_and_add`` writes
``signal.new_tensor(torch.arange(n).unfold(0, size, step)).long()``; kiln read the traced values with ``np.array``
and raised)."""

from __future__ import annotations

import numpy as np

import kiln
from oracles import libraries, require_torch


def frame_indices(lib, signal):
    frame = lib.arange(0, 6).unfold(0, 2, 1)
    return signal.new_tensor(frame).long().contiguous().view(-1)


def test_new_tensor_of_a_tensor_copies_detached_in_the_callers_dtype_as_torch():
    require_torch()
    for name in ("kiln", "torch"):
        lib, _, _ = libraries(name)
        signal = lib.ones(2, dtype=lib.float64)
        data = lib.arange(3.0, requires_grad=True)
        copy = signal.new_tensor(data)
        assert (str(copy.dtype), copy.requires_grad) == ("torch.float64" if name == "torch" else "kiln.float64", False)
        assert str(signal.new_tensor(data, dtype=lib.int64).dtype).endswith("int64")
        np.testing.assert_array_equal(copy.detach().numpy(), [0.0, 1.0, 2.0])


def test_new_tensor_of_a_traced_tensor_in_a_compiled_function_as_torch():
    torch = require_torch()
    signal = np.arange(12.0).reshape(6, 2)
    compiled = kiln.compile(lambda x: x.view(-1)[frame_indices(kiln, x)], fullgraph=True)
    expected = torch.tensor(signal).view(-1)[frame_indices(torch, torch.tensor(signal))]
    np.testing.assert_array_equal(np.asarray(compiled(kiln.tensor(signal))), expected.numpy())
