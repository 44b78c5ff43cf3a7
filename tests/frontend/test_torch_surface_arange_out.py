"""``torch.arange(..., out=...)`` as PyTorch 2.13 (``frontend/out_argument.py``): NVIDIA Tacotron 2's
``get_mask_from_lengths`` writes ``torch.arange(0, max_len, out=torch.cuda.LongTensor(max_len))``, on CPU
``out=torch.LongTensor(max_len)``; kiln's ``arange`` took no ``out``. The result is in ``out``'s dtype, ``out`` is
resized (with torch's warning when its size differs) and returned; a different ``dtype=`` is torch's RuntimeError."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import libraries

LENGTHS = [3, 1, 2]


def get_mask_from_lengths(torch, lengths):
    max_len = torch.max(lengths).item()
    ids = torch.arange(0, max_len, out=torch.LongTensor(max_len))
    mask = (ids < lengths.unsqueeze(1)).bool()
    return mask


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_get_mask_from_lengths_with_out_as_torch(name):
    torch, _, _ = libraries(name)
    mask = get_mask_from_lengths(torch, torch.tensor(LENGTHS))
    assert mask.tolist() == [[True, True, True], [True, False, False], [True, True, False]]


def test_get_mask_from_lengths_with_out_in_a_compiled_function():
    compiled = kiln.compile(lambda: get_mask_from_lengths(kiln, kiln.tensor(LENGTHS)), fullgraph=True)
    np.testing.assert_array_equal(np.asarray(compiled()), np.array(LENGTHS)[:, None] > np.arange(3))


@pytest.mark.parametrize("name", ["kiln", "torch"])
def test_out_gives_the_dtype_is_resized_and_returned(name):
    torch, _, _ = libraries(name)
    out = torch.zeros(3)
    assert torch.arange(0, 3, out=out) is out and out.dtype == torch.float32 and out.tolist() == [0.0, 1.0, 2.0]
    out = torch.LongTensor(5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tuple(torch.arange(0, 3, out=out).shape) == (3,) and tuple(out.shape) == (3,)
    assert any("The out tensor will be resized to a tensor of shape" in str(w.message) for w in caught)
    with pytest.raises(RuntimeError, match="does not match dtype of out parameter"):
        torch.arange(0, 3, dtype=torch.float32, out=torch.LongTensor(3))
