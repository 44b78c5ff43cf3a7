"""Warnings torch gives that kiln did not: ``torch.tensor(a_tensor)`` (use ``detach().clone()``), the std/var of one
value per reduction (degrees of freedom <= 0: NaN), ``dropout2d`` of a 3-D input (taken as ``(N, C, L)``); each at
the user's line, once per line under the default filters, as torch's."""

from __future__ import annotations

import warnings

import pytest

from oracles import require_torch

CASES = {
    "copy construct": lambda lib: lib.tensor(lib.ones(2)),
    "std of one": lambda lib: lib.ones(1).std(),
    "var over a unit dim": lambda lib: lib.ones(3, 1).var(dim=1),
    "dropout2d of 3-D": lambda lib: lib.nn.functional.dropout2d(lib.ones(2, 3, 4)),
    "no warning: std of two": lambda lib: lib.ones(2).std(),
    "no warning: tensor of a list": lambda lib: lib.tensor([1.0, 2.0]),
    "no warning: as_tensor of a tensor": lambda lib: lib.as_tensor(lib.ones(2)),
}


def _messages(lib, case):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CASES[case](lib)
    texts = [str(w.message).split(" (Triggered internally at")[0] for w in caught]  # torch's C++ source location
    return [text.replace("torch.", "").replace("kiln.", "") for text in texts], [w.filename for w in caught]


@pytest.mark.parametrize("case", sorted(CASES))
def test_warnings_as_torch(case):
    import kiln

    torch = require_torch()
    ours, files = _messages(kiln, case)
    theirs, _ = _messages(torch, case)
    assert ours == theirs
    assert all(name == __file__ for name in files)  # the user's line, not kiln's
