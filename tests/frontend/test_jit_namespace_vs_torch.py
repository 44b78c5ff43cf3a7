"""``kiln.jit``: model code written for PyTorch uses ``torch.jit``'s decorators and queries outside TorchScript
(Swin's ``@torch.jit.ignore def no_weight_decay_keywords``, timm's ``if torch.jit.is_scripting()``,
``torch.jit.Final`` annotations); ``kiln.jit`` did not exist, so such a class failed at its definition. They behave as
torch 2.13's in eager code (and in a ``kiln.compile``d function); ``script``/``trace``/``save``/``load`` say what to
use instead."""

from __future__ import annotations

from typing import List

import numpy as np
import pytest

import kiln
from oracles import require_torch


def program(torch):
    nn = torch.nn

    class Block(nn.Module):
        scale: torch.jit.Final[float]

        def __init__(self):
            super().__init__()
            self.scale = 2.0
            self.table = nn.Parameter(torch.ones(3))

        @torch.jit.ignore
        def no_weight_decay_keywords(self):
            return {"table"}

        @torch.jit.ignore(drop=True)
        def debug(self):
            return "dropped in TorchScript only"

        @torch.jit.unused
        def unused_path(self, x):
            return x * 100

        @torch.jit.export
        def exported(self, x):
            return x - 1

        def forward(self, x):
            if torch.jit.is_scripting() or torch.jit.is_tracing():
                return x
            shifts = torch.jit.annotate(List[int], [])
            return self.exported(x * self.table * self.scale) + len(shifts)

    return Block()


def test_decorators_and_queries_as_torch():
    torch = require_torch()
    with pytest.warns(FutureWarning, match="ignore.True. has been deprecated"):
        ours = program(kiln)
    with pytest.warns(FutureWarning, match="ignore.True. has been deprecated"):
        theirs = program(torch)
    x = np.arange(3.0)
    expected = theirs(torch.tensor(x)).detach().numpy()
    np.testing.assert_array_equal(ours(kiln.tensor(x)).numpy(), expected)
    np.testing.assert_array_equal(np.asarray(kiln.compile(ours)(kiln.tensor(x))), expected)
    for name in ("no_weight_decay_keywords", "debug"):
        assert getattr(ours, name)() == getattr(theirs, name)()
    assert ours.unused_path(1) == theirs.unused_path(1) == 100
    assert kiln.jit.is_scripting() is torch.jit.is_scripting() is False


@pytest.mark.parametrize("name, instead", [("script", "kiln.compile"), ("trace", "kiln.onnx.export"),
                                           ("save", "kiln.save"), ("load", "kiln.load")])
def test_torchscript_entry_points_say_what_to_use(name, instead):
    with pytest.raises(NotImplementedError, match=f"kiln.jit.{name}: kiln has no TorchScript; .*{instead}"):
        getattr(kiln.jit, name)(lambda x: x * 2)
