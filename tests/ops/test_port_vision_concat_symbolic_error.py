"""``cat`` along the symbolic batch dim (the Forward-Forward loss's ``cat([-g_pos + t, g_neg - t])`` under
``compile_train_step``) is refused with what to do: static shapes, or a stack on a new axis."""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from kiln.compiler.errors import TraceError


def test_cat_along_a_symbolic_dim_names_the_line_and_the_ways_out():
    with pytest.raises(TraceError, match=r"test_port_vision_concat_symbolic_error\.py:\d+[\s\S]*\(N, N\)[\s\S]*batch_dim=None[\s\S]*kiln\.stack"):
        kiln.trace(lambda x: kiln.cat([x, -x]).mean(), kiln.TensorSpec(("N", 3)))


def test_the_ways_out_work():
    x = np.arange(6.0).reshape(2, 3)
    assert kiln.compile(lambda v: kiln.cat([v, -v]).abs().mean(), batch_dim=None)(x) == pytest.approx(np.abs(x).mean())
    assert kiln.compile(lambda v: kiln.stack([v, -v]).abs().mean())(x) == pytest.approx(np.abs(x).mean())
