"""``kiln._assert`` against ``torch._assert`` (torch 2.13), which torchvision's detection code calls where a script
would write ``assert`` (``Matcher.__init__``, ``AnchorGenerator.grid_anchors``, ``det_utils._box_loss``): kiln had no
such name, so ``torchvision``-style code stopped at its first ``torch._assert``. Each condition passes or raises the
same error type with the same message; a traced condition under ``kiln.compile(fullgraph=True)`` is checked on every
call."""

from __future__ import annotations

import pytest

import kiln
from oracles import require_torch

CONDITIONS = {  # name: (condition made from a library, holds)
    "True": (lambda lib: True, True),
    "a 0-d true tensor": (lambda lib: lib.tensor(True), True),
    "a nonzero float tensor": (lambda lib: lib.tensor(0.5), True),
    "a non-empty list": (lambda lib: ["l1"], True),
    "False": (lambda lib: False, False),
    "a 0-d false tensor": (lambda lib: lib.tensor(False), False),
    "zero": (lambda lib: 0, False),
    "a comparison of tensors": (lambda lib: lib.tensor(2.0) <= lib.tensor(1.0), False),
}


def _outcome(lib, condition):
    try:
        lib._assert(condition, "low_threshold should be <= high_threshold")
    except AssertionError as error:
        return str(error)
    return "passed"


@pytest.mark.parametrize("name", CONDITIONS)
def test_assert_passes_or_raises_as_torch(name):
    torch = require_torch()
    make, holds = CONDITIONS[name]
    ours, theirs = _outcome(kiln, make(kiln)), _outcome(torch, make(torch))
    assert ours == theirs == ("passed" if holds else "low_threshold should be <= high_threshold")


def test_assert_of_a_tensor_of_two_values_is_ambiguous_as_in_torch():
    torch = require_torch()
    for lib in (kiln, torch):
        with pytest.raises(RuntimeError, match="ambiguous"):
            lib._assert(lib.tensor([1, 0]), "never read")


def test_assert_on_a_traced_condition_is_checked_on_every_compiled_call():
    def step(boxes):
        kiln._assert(boxes.dim() == 2, "boxes should be 2-D")
        kiln._assert((boxes[:, 2:] >= boxes[:, :2]).all(), "boxes should have x2 >= x1 and y2 >= y1")
        return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])

    compiled = kiln.compile(step, fullgraph=True)
    assert compiled(kiln.tensor([[0.0, 0.0, 2.0, 3.0]])).tolist() == [6.0]
    with pytest.raises(AssertionError, match="x2 >= x1"):
        compiled(kiln.tensor([[0.0, 0.0, -2.0, 3.0]]))
