"""Class indices out of range raise what PyTorch raises. ``F.one_hot`` of a value ``>= num_classes`` or negative gave
an all-zero row, silently (torch: RuntimeError "Class values must be smaller than num_classes." / "... must be
non-negative."); ``nll_loss``/``cross_entropy`` of a label outside ``[0, C)`` raised kiln's InputError, a TypeError,
where torch raises IndexError "Target 3 is out of bounds." (now an InputError that is also an IndexError). Eagerly,
and compiled for the losses."""

from __future__ import annotations

import pytest

import kiln
from oracles import require_torch


@pytest.mark.parametrize("values, words", [([3, 1], "Class values must be smaller than num_classes"),
                                           ([0, -1], "Class values must be non-negative")])
def test_one_hot_of_a_class_out_of_range_is_torch_runtime_error(values, words):
    torch = require_torch()
    for lib in (torch, kiln):
        with pytest.raises(RuntimeError, match=words):
            lib.nn.functional.one_hot(lib.tensor(values), 3)


def test_one_hot_in_range_as_torch():
    torch = require_torch()
    ours, theirs = (lib.nn.functional.one_hot(lib.tensor([[2, 0], [1, 2]]), 3) for lib in (kiln, torch))
    assert ours.tolist() == theirs.tolist() and str(ours.dtype).split(".")[-1] == "int64"


@pytest.mark.parametrize("loss", ["nll_loss", "cross_entropy"])
@pytest.mark.parametrize("label", [3, -2])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_a_label_out_of_range_is_torch_index_error(loss, label, compiled):
    torch = require_torch()
    for lib in (torch, kiln):
        function = lambda logits, labels: getattr(lib.nn.functional, loss)(logits, labels)  # noqa: E731
        if compiled and lib is kiln:
            function = kiln.compile(function, fullgraph=True)
        with pytest.raises(IndexError, match=f"Target {label} is out of bounds"):
            function(lib.zeros(2, 3), lib.tensor([0, label]))
