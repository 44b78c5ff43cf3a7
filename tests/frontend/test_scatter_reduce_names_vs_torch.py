"""``scatter_reduce``'s ``reduce`` names as torch 2.13 takes them: ``"max"``/``"min"`` are quietly ``"amax"``/``"amin"``
in its forward (kiln refused them; values vs torch, eager and compiled), ``index_reduce`` refuses them, and an unknown
name is torch's RuntimeError with its words. (torch's backward then refuses ``"max"``/``"min"``; kiln gives amax's and
amin's gradient, not compared here.)"""

from __future__ import annotations

import numpy as np
import pytest

import kiln
from oracles import require_torch

SELF = np.array([[0.5, -1.0, 2.0], [3.0, 0.0, -2.0]])
SOURCE = np.array([[1.0, 4.0, -3.0], [2.5, -0.5, 1.5], [0.0, 2.0, 2.0]])
INDEX = np.array([[0, 1, 0], [1, 0, 1], [0, 0, 1]])


@pytest.mark.parametrize("include_self", [True, False])
@pytest.mark.parametrize("alias", ["max", "min"])
@pytest.mark.parametrize("form", ["eager", "compiled"])
def test_max_and_min_are_amax_and_amin_as_torchs(alias, include_self, form):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        reduce = lambda s: lib.tensor(SELF).scatter_reduce(0, lib.tensor(INDEX), s, alias, include_self=include_self)  # noqa: E731
        out = (kiln.compile(reduce) if form == "compiled" and lib is kiln else reduce)(lib.tensor(SOURCE))
        results.append(np.asarray(out.numpy() if lib is torch or form == "eager" else out))
    np.testing.assert_array_equal(results[0], results[1])
    amax = torch.tensor(SELF).scatter_reduce(0, torch.tensor(INDEX), torch.tensor(SOURCE), "a" + alias,
                                             include_self=include_self)
    np.testing.assert_array_equal(results[0], amax.numpy())


@pytest.mark.parametrize("method, reduce, words", [
    ("scatter_reduce", "add", "reduce argument must be either sum, prod, mean, amax or amin, got add"),
    ("index_reduce", "max", "index_reduce(): Expected reduce to be one of prod, mean, amax or amin but got max."),
    ("index_reduce", "sum", "index_reduce(): Expected reduce to be one of prod, mean, amax or amin but got sum."),
])
def test_unknown_names_are_torchs_runtime_error(method, reduce, words):
    torch = require_torch()
    for lib in (kiln, torch):
        x, source = lib.tensor(SELF), lib.tensor(SOURCE[:2])
        index = lib.tensor(INDEX[:2]) if method == "scatter_reduce" else lib.tensor(np.array([1, 0]))
        with pytest.raises(RuntimeError) as caught:
            getattr(x, method)(0, index, source, reduce)
        assert words in str(caught.value), (lib.__name__, str(caught.value))
