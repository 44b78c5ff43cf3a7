"""A mask that is not bool (Transformer-XL's original ``torch.triu(...).byte()`` attention mask) is refused by torch
2.x's ``masked_fill``/``masked_fill_``/``torch.masked_fill`` and ``masked_scatter``; kiln refused it too, but with
``tensor.where needs a bool condition`` (a TraceError, not a RuntimeError). Now the same RuntimeError and words as
torch's (the mask's C type / ScalarType name), eager and inside a compiled function; bool masks unchanged."""

from __future__ import annotations

import re

import numpy as np
import pytest

import kiln
from oracles import require_torch

MASK_DTYPES = ["uint8", "int8", "int64", "float32"]
CALLS = {
    "masked_fill": lambda lib, x, m: x.masked_fill(m, -float("inf")),
    "masked_fill_": lambda lib, x, m: x.clone().masked_fill_(m, 2.0),
    "torch.masked_fill": lambda lib, x, m: lib.masked_fill(x, m, 2.0),
    "masked_scatter": lambda lib, x, m: x.masked_scatter(m, lib.ones(6, dtype=x.dtype)),
}


def _torch_message(torch, call, dtype):
    x, mask = torch.zeros(2, 3), torch.ones(2, 3, dtype=getattr(torch, dtype))
    with pytest.raises(RuntimeError) as caught:
        CALLS[call](torch, x, mask)
    return str(caught.value)


@pytest.mark.parametrize("dtype", MASK_DTYPES)
@pytest.mark.parametrize("call", list(CALLS))
@pytest.mark.filterwarnings("ignore:masked_scatter_ received a mask with dtype torch.uint8")
def test_a_mask_that_is_not_bool_raises_as_torch(call, dtype):
    torch = require_torch()
    theirs = _torch_message(torch, call, dtype)
    x, mask = kiln.zeros(2, 3), kiln.ones(2, 3, dtype=getattr(kiln, dtype))
    with pytest.raises(RuntimeError, match=re.escape(theirs)):
        CALLS[call](kiln, x, mask)
    with pytest.raises(RuntimeError, match=re.escape(theirs)):
        kiln.compile(lambda x, m: CALLS[call](kiln, x, m), fullgraph=True)(x, mask)


@pytest.mark.parametrize("call", list(CALLS))
def test_a_bool_mask_still_works_as_torch(call):
    torch = require_torch()
    values = np.arange(6.0).reshape(2, 3)
    picks = np.array([[True, False, True], [False, False, True]])
    ours = CALLS[call](kiln, kiln.tensor(values), kiln.tensor(picks))
    theirs = CALLS[call](torch, torch.tensor(values), torch.tensor(picks))
    np.testing.assert_array_equal(np.array(ours.numpy()), theirs.numpy())
