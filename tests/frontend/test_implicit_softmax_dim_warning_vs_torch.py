"""``F.softmax``/``F.log_softmax``/``nn.Softmax()`` without ``dim`` warn torch 2.13's sentence ("Implicit dimension
choice for softmax has been deprecated. Change the call to include dim=X as an argument."), then which dim kiln took.
kiln's message changed the sentence ("... deprecated (as in PyTorch); it picked dim=1 ..."), so a warnings filter or
``pytest.warns(match=...)`` written against torch's text (vnet.pytorch's ``self.softmax = F.softmax`` output) missed
kiln's."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from oracles import libraries, require_torch

CALLS = {"F.softmax": lambda nn, F, x: F.softmax(x), "F.log_softmax": lambda nn, F, x: F.log_softmax(x),
         "nn.Softmax()": lambda nn, F, x: nn.Softmax()(x)}


def _messages(name, call):
    lib, nn, F = libraries(name)
    x = lib.tensor(np.arange(6.0).reshape(2, 3))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        CALLS[call](nn, F, x)
    return [str(w.message) for w in caught if w.category is UserWarning]


@pytest.mark.parametrize("call", list(CALLS))
def test_implicit_dim_warning_starts_with_torchs_sentence(call):
    require_torch()
    (theirs,) = _messages("torch", call)
    (ours,) = _messages("kiln", call)
    assert ours.startswith(theirs), (ours, theirs)
    assert "dim=1" in ours[len(theirs):]


def test_a_filter_written_for_torchs_warning_silences_kilns():
    require_torch()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", re.escape("Implicit dimension choice for softmax has been deprecated. Change "
                                                    "the call to include dim=X as an argument."), UserWarning)
        for name in ("kiln", "torch"):
            lib, nn, F = libraries(name)
            F.softmax(lib.zeros(2, 3))
