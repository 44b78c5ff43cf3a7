"""Channel and alpha dropout with ``p = 1``, which PyTorch allows (``[0, 1]``) and kiln's ``dropout1d/2d/3d`` and
``nn.Dropout1d/2d/3d`` refused: in training mode each gives ``input * 0`` (a NaN stays NaN, -1 becomes -0, the gradient
is 0), as ``F.dropout(p=1)`` does since bf44c99; ``alpha_dropout`` and ``feature_alpha_dropout`` (and their modules)
too. A ``p`` outside ``[0, 1]`` is torch's ValueError with its words."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import kiln
from oracles import require_torch

X = np.array([[[1.5, np.nan, -1.0], [2.0, np.inf, 0.5]], [[-3.0, 4.0, 1.0], [0.0, -2.0, 7.0]]])
"""(N, C, L) = (2, 2, 3); unsqueezed to the rank each form wants."""

FORMS = [("dropout1d", "Dropout1d", 3), ("dropout2d", "Dropout2d", 4), ("dropout3d", "Dropout3d", 5),
         ("alpha_dropout", "AlphaDropout", 3), ("feature_alpha_dropout", "FeatureAlphaDropout", 4)]


def _input(rank):
    return X.reshape(X.shape + (1,) * (rank - X.ndim))


def _dropped(lib, function, module, rank, form, x):
    if form == "module":
        return getattr(lib.nn, module)(1.0)(x)  # modules train by default
    drop = lambda t: getattr(lib.nn.functional, function)(t, 1.0, True)  # noqa: E731
    return (kiln.compile(drop) if form == "compiled" and lib is kiln else drop)(x)


@pytest.mark.parametrize("form", ["functional", "module", "compiled"])
@pytest.mark.parametrize("function, module, rank", FORMS)
def test_p_one_zeroes_as_torch(function, module, rank, form):
    torch = require_torch()
    results = []
    for lib in (kiln, torch):
        x = lib.tensor(_input(rank), requires_grad=True)
        out = _dropped(lib, function, module, rank, form, x)
        out.sum().backward() if form != "compiled" else None  # (a compiled call's backward: tested elsewhere)
        results.append((np.asarray(out.detach().numpy()), None if form == "compiled" else x.grad.numpy()))
    (ours, our_grad), (theirs, their_grad) = results
    np.testing.assert_array_equal(ours, theirs)
    assert np.array_equal(np.signbit(ours), np.signbit(theirs))  # -1 * 0 is -0 in both
    if their_grad is not None:
        np.testing.assert_array_equal(our_grad, their_grad)


@pytest.mark.parametrize("p", [-0.1, 1.5])
@pytest.mark.parametrize("function, module, rank", FORMS)
def test_p_outside_zero_one_is_torchs_value_error(function, module, rank, p):
    torch = require_torch()
    for lib in (kiln, torch):
        x = lib.tensor(_input(rank))
        with pytest.raises(ValueError, match=f"dropout probability has to be between 0 and 1, but got {p}"):
            getattr(lib.nn, module)(p)
        with pytest.raises(ValueError, match=f"dropout probability has to be between 0 and 1, but got {p}"), \
                warnings.catch_warnings():
            warnings.simplefilter("ignore")
            getattr(lib.nn.functional, function)(x, p, True)
