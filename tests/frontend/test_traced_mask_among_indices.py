"""A bool mask among other index items in a trace (NGCF's node dropout, ``i[:, dropout_mask]`` with ``dropout_mask``
from ``torch.rand``): a mask known when tracing stands for its positions (``frontend/bool_mask_positions.py``); one
whose values come at run time picks a data-dependent number of elements, refused naming the user's line and what to
write. The refusal said "unsupported index Tensor(tensor<32xbool>): use ... one bool mask", which the code was."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

X = np.arange(12.0).reshape(2, 6)


def random_columns(x):
    return x[:, kiln.rand(6) > 0.5].sum()


def test_a_random_mask_among_indices_says_why_and_what_instead():
    with pytest.raises(kiln.TraceError) as raised:
        kiln.compile(random_columns, fullgraph=True)(kiln.tensor(X))
    message = str(raised.value)
    assert "test_traced_mask_among_indices.py" in message and "return x[:, kiln.rand(6) > 0.5].sum()" in message
    assert "x[..., mask] with the bool mask tensor<6xbool> among other indices" in message and "(x * mask)" in message


def test_a_constant_mask_among_indices_compiles_as_torch():
    torch = require_torch()
    keep = np.array([True, False, True, True, False, True])
    ours = kiln.compile(lambda x: x[:, kiln.tensor(keep)] * 2, fullgraph=True)(kiln.tensor(X))
    np.testing.assert_array_equal(np.array(ours), (torch.tensor(X)[:, torch.tensor(keep)] * 2).numpy())
